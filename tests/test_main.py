"""`python -m keras_transfer.main` as a user runs it: a real process, real files, exit codes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _main(*args, cwd=REPO, env=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, "-m", "keras_transfer.main", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def _smoke(data_dir, workdir, *extra, env=None):
    return _main(f"--flagfile={REPO / 'flags' / 'smoke.flags'}", f"--data_dir={data_dir}",
                 "--dataset=synthetic", f"--workdir={workdir}", "--steps=1", "--eval_every=1",
                 *extra, env=env)


@pytest.mark.slow
def test_one_step_end_to_end(synthetic_data, tmp_path):
    proc = _smoke(synthetic_data, tmp_path, "--target=A")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "synthetic" / "random_0" / "seed0" / "baseA"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["steps"] == 1 and config["model"] == "small" and config["run"] == "baseA"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["steps"] == 1 and len(result["history"]) == 1
    assert result["paper_layers"] is True  # small: n counts the paper's layers (the report reads it)
    assert (run_dir / "model.weights.h5").stat().st_size > 0
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert "baseA done" in proc.stdout and "jit_compile=False" in proc.stdout


@pytest.mark.parametrize("args,message", [
    (["--source=A", "--n=8"], "--n=8 is out of range"),
    (["--source=A", "--n=3"], "python -m keras_transfer.main --source=none --target=A"),
    (["--source=none", "--finetune"], "--finetune needs copied layers"),
    (["--source=C"], "source"),
    (["--flagfile=/nonexistent/x.flags"], "x.flags"),
    (["--lr=nan"], "--lr=nan is out of range"),
    (["--threads=-1"], "--threads=-1 is out of range"),
    (["--crop=40"], "--crop=40 is larger than the 28x28 images of half B"),
    (["--batch_size=5000"], "--batch_size=5000 is larger than the 120 training images"),
    (["--model=alexnet"], "--model=alexnet is no network: choose one of caffenet"),
    (["--model=no_such_user_module:tiny"], "no module 'no_such_user_module' on the path"),
])
@pytest.mark.slow
def test_bad_input_exits_non_zero_and_writes_nothing(synthetic_data, tmp_path, args, message):
    proc = _smoke(synthetic_data, tmp_path, *args)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("*.json"))


@pytest.mark.parametrize("args, message", [
    (["--source=a"], "error: flag --source=a: value should be one of <none|A|B|random>"),
    (["--n=2.5"], "error: flag --n=2.5: invalid literal for int()"),
    (["--flagfile=/nonexistent/x.flags"], "error: Unable to open flagfile"),
])
def test_a_flag_absl_cannot_parse_is_one_line_and_exit_2_as_other_bad_input(args, message):
    proc = _main(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.strip()], proc.stderr
    assert proc.stderr.startswith(message) and "(--help lists the flags)" in proc.stderr


def test_flag_defaults_are_the_fashion_mnist_preset():
    """The bare command uses flags/fashion_mnist.flags' values: the two must not drift apart."""
    from absl import flags

    from keras_transfer import config as config_lib

    config_lib.define_flags()
    preset = {}
    for line in (REPO / "flags" / "fashion_mnist.flags").read_text().splitlines():
        if line.startswith("--"):
            name, _, value = line[2:].partition("=")
            preset[name] = value
    for name, value in preset.items():
        default = flags.FLAGS[name].default
        assert str(default) == value or (isinstance(default, float) and float(value) == default), name


def _listed(help_text):
    """The flag names a --help text lists (`--name:` or `--[no]name:` at a line's start)."""
    return {line.split(":")[0].strip().replace("--[no]", "--")
            for line in help_text.splitlines() if line.startswith("  --")}


@pytest.mark.parametrize("command", [
    ["-m", "keras_transfer.main"],
    # The console script `keras-transfer` (setup.py): main imported, not run as __main__.
    ["-c", "import sys; sys.argv[0] = 'keras-transfer'; from keras_transfer.main import run; run()"],
])
def test_help_lists_every_flag_of_main_and_none_of_absls(command):
    from absl import flags

    from keras_transfer import config as config_lib

    defined = flags.FlagValues()
    config_lib.define_flags(defined)
    done = subprocess.run([sys.executable, *command, "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert "Traceback" not in done.stderr  # absl's --help exits with status 1
    listed = _listed(done.stdout)
    assert listed == {f"--{name}" for name in defined}
    assert {"--source", "--n", "--finetune", "--steps", "--nets"} <= listed
    assert "Training crop size" in done.stdout  # with its help text


@pytest.mark.slow
def test_corrupt_base_weights_are_named_not_a_traceback(synthetic_data, tmp_path):
    assert _smoke(synthetic_data, tmp_path, "--target=A").returncode == 0
    weights = tmp_path / "synthetic" / "random_0" / "seed0" / "baseA" / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:1000])
    proc = _smoke(synthetic_data, tmp_path, "--source=A", "--n=2")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "model.weights.h5" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "synthetic" / "random_0" / "seed0" / "A2B").exists()  # nothing written


TWO_WORKERS = {"worker": ["localhost:12345", "localhost:12346"]}


@pytest.mark.parametrize("tf_config, problem", [
    ("{bad", "is not JSON"),
    ("[1, 2]", "is not a JSON object"),
    (json.dumps({"cluster": {"worker": "localhost:1"}, "task": {"type": "worker", "index": 0}}),
     '"cluster" that is not'),
    (json.dumps({"cluster": TWO_WORKERS}), 'no "task"'),
    (json.dumps({"cluster": TWO_WORKERS, "task": {"type": "chief", "index": 0}}),
     "task type 'chief', which its \"cluster\" does not list (worker)"),
    (json.dumps({"cluster": TWO_WORKERS, "task": {"type": "worker", "index": 2}}),
     "lists 2 worker address(es): the index is 0 to 1"),
    (json.dumps({"cluster": TWO_WORKERS, "task": {"type": "worker", "index": "1"}}),
     "names worker '1'"),
    (json.dumps({"cluster": TWO_WORKERS, "task": {"type": "worker", "index": 1}}), None),
    (json.dumps({"cluster": {"chief": ["h:1"], "worker": ["h:2"]},
                 "task": {"type": "worker", "index": 0}}), None),
    ("{}", None),
])
def test_a_tf_config_that_cannot_work_is_named(tf_config, problem):
    from keras_transfer.main import tf_config_problem
    found = tf_config_problem(tf_config)
    assert found == problem if problem is None else problem in found


@pytest.mark.parametrize("strategy, tf_config", [
    ("mirrored", "{bad"),
    ("multi_worker", json.dumps({"cluster": TWO_WORKERS, "task": {"type": "worker", "index": 3}})),
])
@pytest.mark.slow
def test_a_bad_tf_config_is_one_line_before_anything_is_written(synthetic_data, tmp_path,
                                                                strategy, tf_config):
    proc = _smoke(synthetic_data, tmp_path, "--target=A", f"--strategy={strategy}",
                  env={"TF_CONFIG": tf_config})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "error: TF_CONFIG " in proc.stderr and "unset TF_CONFIG" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())
