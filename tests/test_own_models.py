"""A researcher's own network, named `--model=module:function` or `--model=file.py:function`
(keras_transfer/models/importing.py), runs like a built-in one: main, the grid, its dry run and
the report take it, and each way it can be wrong is refused on one line before anything is
written. docs/examples/my_model.py is the example the docs point to."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from data_prep_helpers import prepare_four_small_classes
from keras_transfer import models, naming
from keras_transfer.grid import plan as grid_plan
from keras_transfer.grid.errors import GridError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "my_model.py"
SMOKE = [f"--flagfile={REPO / 'flags' / 'smoke.flags'}", "--dataset=synthetic", "--data_dir=data"]

# A net whose cut points and head are declared by the user's code, with a hole to fill.
NET = """
from keras_transfer.models import Architecture, CutPoint

def build(num_classes, input_shape, *, dropout=0.5, seed=None):
    import keras
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(4, 3, name="conv_a")(inputs)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(8, name="{dense}")(x)
    x = keras.layers.Dense(num_classes, name="classifier")(x)
    outputs = keras.layers.Activation("softmax", name="prob")(x)
    return keras.Model(inputs, outputs)

def tiny():
    return Architecture(name="tiny", build=build, cut_points=(
        CutPoint("conv_a", ("conv_a",), "conv_a"), CutPoint({second!r}, ("fc_b",), "fc_b")),
        head=("classifier",), input_scale=1 / 255, crop_of_256=None, paper_layers=False,
        packed=True, about="a test net")
"""


def write_net(folder: Path, name="nets.py", *, dense="fc_b", second="fc_b", extra=""):
    path = folder / name
    path.write_text(NET.format(dense=dense, second=second) + textwrap.dedent(extra))
    return path


def test_a_file_and_a_module_name_the_function_that_declares_the_network(tmp_path,
                                                                       monkeypatch):
    """The Architecture is the function's, named by the spelling, which config.json, result.json
    and the report record; a module is found on the path as Python finds it."""
    arch = models.get(f"{EXAMPLE}:tiny_convnet")
    assert arch.name == f"{EXAMPLE}:tiny_convnet"
    assert arch.cut_names == ("conv_a", "conv_b", "fc_c") and arch.head == ("classifier",)
    assert models.get(f"{EXAMPLE}:tiny_convnet") is arch  # loaded once per process
    write_net(tmp_path, "user_nets_on_path.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert models.get("user_nets_on_path:tiny").cut_names == ("conv_a", "fc_b")
    models.check_build(f"{EXAMPLE}:tiny_convnet", 4, (14, 14, 1))
    assert not models.is_builtin(arch.name) and models.is_builtin("small")


def test_a_file_imports_its_neighbours_as_a_script_does(tmp_path):
    """A file's folder is on the path when it runs, so it can import the modules beside it,
    also from its build function, which runs later."""
    (tmp_path / "own_layers_beside_it.py").write_text("WIDTH = 8\n")
    path = write_net(tmp_path, extra="""
        def tiny_beside():
            import dataclasses
            def built(num_classes, input_shape, **kw):
                import own_layers_beside_it
                assert own_layers_beside_it.WIDTH == 8
                return build(num_classes, input_shape)
            return dataclasses.replace(tiny(), build=built)
        """)
    models.check_build(f"{path}:tiny_beside", 3, (8, 8, 1))


@pytest.mark.parametrize("spelling,extra,message", [
    ("nets.py:tiny", "import no_such_package_here\n",
     r"importing .*nets.py raised ModuleNotFoundError: No module named 'no_such_package_here'"),
    ("nets.py:tiny", "def broken(:\n", r"importing .*nets.py raised SyntaxError"),
    ("no_such_user_module:tiny", "", r"no module 'no_such_user_module' on the path; run from "
                                     r"the folder that holds it .* or add that folder to PYTHONPATH"),
    ("missing.py:tiny", "", r"there is no file .*missing.py \(a path is relative to the current "
                            r"directory"),
    ("nets.py:small", "", r"nets.py defines no 'small'; name a function there that returns an "
                          r"Architecture"),
    ("nets.py:returns_a_model", "def returns_a_model():\n    return build(3, (8, 8, 1))\n",
     r"returns_a_model\(\) returned a Functional, not a keras_transfer.models.Architecture"),
    ("nets.py:returns_none", "def returns_none():\n    pass\n",
     r"returns_none\(\) returned a NoneType, not a keras_transfer.models.Architecture"),
    ("nets.py:TINY", "TINY = tiny()\n", r"TINY is an object of type Architecture, not a "
                                        r"function; define `def TINY\(\): return "
                                        r"Architecture\(...\)`"),
    ("nets.py:needs_args", "def needs_args(size):\n    return tiny()\n",
     r"needs_args\(\) raised TypeError: .*; it must take no arguments"),
    ("nets.py:twice", "def twice():\n    import dataclasses\n"
                      "    return dataclasses.replace(tiny(), cut_points=tiny().cut_points * 2)\n",
     r"the cut point names \['conv_a', 'fc_b'\] are given more than once"),
    ("nets.py:letters", "def letters():\n    import dataclasses\n"
                        "    return dataclasses.replace(tiny(), head='classifier')\n",
     r"head has prefixes 'classifier'; give a tuple of layer name beginnings"),
    ("alexnet", "", r"--model=alexnet is no network: choose one of caffenet, .*, or give your "
                    r"own as module:function or path/to/file.py:function"),
])
def test_each_way_to_name_a_network_wrongly_is_one_line_with_its_fix(tmp_path, monkeypatch,
                                                                       spelling, extra, message):
    write_net(tmp_path, extra=extra)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(models.ModelError, match=message) as refused:
        models.get(spelling)
    assert "\n" not in str(refused.value)


WIDE = """
def tiny_wide():
    import dataclasses
    return dataclasses.replace(tiny(), build=lambda c, s, **kw: build(c + 1, s))
"""
TOO_SMALL = """
def tiny_small():
    import dataclasses
    return dataclasses.replace(tiny(), build=lambda c, s, **kw: build(c, (2, 2, 1)))
"""


def test_a_module_that_imports_a_missing_package_is_named_apart_from_a_missing_module(
        tmp_path, monkeypatch):
    write_net(tmp_path, "nets_needing_a_package.py", extra="import no_such_package_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(models.ModelError, match=r"importing nets_needing_a_package raised "
                                                r"ModuleNotFoundError: No module named "
                                                r"'no_such_package_here'; fix it"):
        models.get("nets_needing_a_package:tiny")


@pytest.mark.parametrize("net,function,message", [
    (dict(dense="dense_b"), "tiny", r"layer 'dense_b' holds variables but belongs to no cut "
                                    r"point and not to the head; add its name to one"),
    (dict(dense="classifier_b"), "tiny", r"the blocks \['fc_b'\] have no layer with variables"),
    (dict(extra=WIDE), "tiny_wide",
     r"built for 3 classes, its outputs are \[\(None, 4\)\], not one \(batch, 3\)"),
    (dict(extra=TOO_SMALL), "tiny_small",
     r"does not build for \(8, 8, 1\) images and 3 classes: ValueError"),
])
def test_a_network_that_breaks_what_transfer_needs_is_refused_when_built(tmp_path, net,
                                                                          function, message):
    """Every variable in exactly one cut point or the head, an output per class, a build at the
    data's shape: what resolve (main) and the grid check before anything is written."""
    path = write_net(tmp_path, **net)
    with pytest.raises(models.ModelError, match=message) as refused:
        models.check_build(f"{path}:{function}", 3, (8, 8, 1))
    assert "\n" not in str(refused.value)


def test_a_variable_held_by_two_blocks_is_refused():
    """A layer of the head that reuses a cut point's kernel would be copied with one block and
    trained with the other: no variable may belong to two."""
    import keras

    class Tied(keras.layers.Layer):
        def __init__(self, other, **kw):
            super().__init__(**kw)
            self.other = other

        def call(self, x):
            return keras.ops.matmul(x, self.other.kernel)

    inputs = keras.Input(shape=(4,))
    fc = keras.layers.Dense(4, name="fc_a")
    x = fc(inputs)
    outputs = keras.layers.Softmax(name="prob")(Tied(fc, name="classifier")(x))
    arch = models.Architecture(name="tied", build=None, cut_points=(
        models.CutPoint("fc_a", ("fc_a",), "fc_a"),), head=("classifier",), input_scale=1.0,
        crop_of_256=None, paper_layers=False, packed=False, about="")
    with pytest.raises(models.ModelError, match=r"fc_a/kernel belongs to the blocks "
                                                r"\['fc_a', 'head'\]"):
        models.check_network(arch, keras.Model(inputs, outputs), 4)


def test_a_registered_network_is_for_this_process_and_the_grid_refuses_it(monkeypatch):
    """register makes a name a --model of this process; the grid's nets are processes of their
    own, so the grid refuses it and names the spelling they can load."""
    monkeypatch.setattr(models, "_REGISTERED", {})  # the registration ends with the test
    import importlib.util
    spec = importlib.util.spec_from_file_location("example_for_register", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    arch = models.register(example.tiny_convnet())
    assert models.get("tiny_convnet") is arch and models.is_registered("tiny_convnet")
    models.check_build("tiny_convnet", 4, (14, 14, 1))
    preset = grid_plan.resolve_preset(None, ["--model=tiny_convnet"])
    with pytest.raises(GridError, match=r"registered in this process only .* give it as "
                                        r"module:function or path/to/file.py:function"):
        grid_plan.preset_architecture(preset)
    with pytest.raises(models.ModelError, match=r"cannot register 'small'"):
        models.register(models.get("small"))


@pytest.mark.parametrize("model,folder", [
    ("small", "small"), ("resnet_small", "resnet_small"), ("my_nets:tiny", "my_nets_tiny"),
    ("pkg.nets:tiny", "pkg_nets_tiny"), ("docs/examples/my_model.py:tiny_convnet",
                                         "my_model_tiny_convnet"),
    ("../x y/nets.py:f", "nets_f")])
def test_a_network_of_ones_own_gets_a_sane_folder_name(model, folder):
    assert naming.model_dirname(model) == folder


def _run(module, *args, cwd):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory):
    """A folder holding tiny synthetic data in data/ (4 classes of 16 px) and the example."""
    root = tmp_path_factory.mktemp("own_model")
    prepare_four_small_classes(root / "data")
    (root / "nets").mkdir()
    shutil.copy(EXAMPLE, root / "nets" / "my_model.py")
    return root


@pytest.mark.slow
def test_a_local_grid_of_ones_own_network_trains_and_reports(grid_dir):
    """The example by a path relative to the grid's directory: the dry run prices it, the nets'
    processes load it, the records name it and the report counts its cut points."""
    model = "nets/my_model.py:tiny_convnet"
    grid = ["--experiments=transfer", "--targets=B", "--layers=1,3", "--jobs=2",
            "--workdir=runs", f"--flagfile={REPO / 'flags' / 'smoke.flags'}", "--",
            "--dataset=synthetic", "--data_dir=data", f"--model={model}"]
    dry = _run("keras_transfer.grid", "--dry_run", *grid, cwd=grid_dir)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert f"G forward multiply-adds, {model} at 14x14x1)" in dry.stdout
    done = _run("keras_transfer.grid", *grid, cwd=grid_dir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "grid finished: 10 trained" in done.stdout
    seed = grid_dir / "runs" / "synthetic" / "random_0" / "seed0"
    result = json.loads((seed / "A3B+" / "result.json").read_text())
    assert result["model"] == model and result["paper_layers"] is False
    assert [row["name"] for row in result["layers"]] == ["conv_a", "conv_b", "fc_c",
                                                          "classifier"]
    assert [row["origin"] for row in result["layers"]] == ["baseA"] * 3 + ["new"]
    assert json.loads((seed / "baseB" / "config.json").read_text())["model"] == model
    report = _run("keras_transfer.report", "runs", "--no_hparams", cwd=grid_dir)
    assert report.returncode == 0, report.stderr[-3000:]
    summary = (grid_dir / "runs" / "report" / "summary.md").read_text()
    assert f"Cut points of {model}, n = 1-3: conv_a, conv_b, fc_c" in summary


@pytest.mark.slow
def test_main_trains_a_module_from_the_current_directory(grid_dir, tmp_path):
    """`python -m` puts the current directory on the path: --model=my_model:tiny_convnet."""
    shutil.copy(EXAMPLE, tmp_path / "my_model.py")
    done = _run("keras_transfer.main", *SMOKE, f"--data_dir={grid_dir / 'data'}",
                f"--workdir={tmp_path / 'runs'}", "--model=my_model:tiny_convnet", "--target=A",
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "synthetic" / "random_0" / "seed0" / "baseA"
    assert json.loads((run / "result.json").read_text())["model"] == "my_model:tiny_convnet"


@pytest.mark.slow
@pytest.mark.parametrize("module", ["keras_transfer.main", "keras_transfer.grid"])
def test_a_network_with_a_variable_outside_its_cut_points_is_refused_before_anything_runs(
        grid_dir, tmp_path, module):
    """main refuses it in resolve, the grid before it starts any net: one line, no traceback,
    no file written."""
    write_net(tmp_path, dense="dense_b")
    flagfile, *main_flags = SMOKE[:-1] + [f"--data_dir={grid_dir / 'data'}",
                                          "--model=nets.py:tiny"]
    if module == "keras_transfer.grid":
        args = [flagfile, "--workdir=runs", "--", *main_flags]
    else:
        args = [flagfile, "--workdir=runs", "--target=A", *main_flags]
    done = _run(module, *args, cwd=tmp_path)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and "layer 'dense_b' holds variables but belongs to no cut point" in \
        lines[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()
