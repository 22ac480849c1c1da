"""The packages are layered as the data flows, data_prep -> training (keras_transfer's top-level
modules) -> grid -> report -> analyze, with the Python API over them all: a module imports only
from its own layer or the ones before it, so training never depends on the tools that read its
results (docs/architecture.md). Imports inside functions count too."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("data_prep", "keras_transfer", "keras_transfer.grid", "keras_transfer.report",
          "keras_transfer.analyze", "keras_transfer.api")
# The package's __init__ hands out the API's functions on first use (PEP 562), the one import
# of a later layer allowed; test_importing_the_package_loads_nothing_else checks it stays lazy.
LAZY_REEXPORTS = {("keras_transfer", "keras_transfer.api")}


def layer_of(module: str) -> int:
    """Index in LAYERS of the most specific layer the module belongs to."""
    return max(i for i, layer in enumerate(LAYERS)
               if module == layer or module.startswith(layer + "."))


def first_party_modules():
    for package in ("data_prep", "keras_transfer"):
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imports_of(path: Path):
    """Every first-party module a file imports, with the line it does it on."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in ("data_prep", "keras_transfer"):
                yield name, node.lineno


MODULES = dict(first_party_modules())


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_from_its_own_layer_or_earlier_ones(module):
    own = layer_of(module)
    later = [f"{MODULES[module].relative_to(REPO)}:{line} imports {name} "
             f"({LAYERS[layer_of(name)]} comes after {LAYERS[own]})"
             for name, line in imports_of(MODULES[module])
             if layer_of(name) > own and (module, name) not in LAZY_REEXPORTS]
    assert not later, "\n".join(later)


def test_every_layer_is_found():
    assert {LAYERS[layer_of(m)] for m in MODULES} == set(LAYERS)


def test_the_report_needs_no_model_code_nor_tensorflow_even_indirectly():
    """What the report's modules import, all the way down: not the model registry (nor the flag
    table that lists its models), not TensorFlow, so it reads runs of any network cheaply."""
    report = sorted(m for m in MODULES if layer_of(m) == LAYERS.index("keras_transfer.report"))
    probe = (f"import importlib, sys\nfor m in {report!r}: importlib.import_module(m)\n"
             "print('\\n'.join(sorted(m for m in sys.modules if m == 'tensorflow' or m == 'keras'"
             " or m.startswith(('keras_transfer.models', 'keras_transfer.config')))))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


def test_importing_the_package_loads_nothing_else():
    """`import keras_transfer` (which every module of it runs first) loads no other module of
    the project, nor TensorFlow or pandas; the API loads when first used, and alone."""
    probe = ("import sys\n"
             "heavy = {'keras_transfer', 'data_prep', 'tensorflow', 'keras', 'pandas'}\n"
             "def loaded():\n"
             "    print(' '.join(sorted(m for m in sys.modules\n"
             "                          if m.split('.')[0] in heavy and m != 'keras_transfer')))\n"
             "import keras_transfer as kt\n"
             "loaded()\n"
             "run_grid = kt.run_grid\n"
             "loaded()\n"
             "print(run_grid is sys.modules['keras_transfer.api'].run_grid)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["", "keras_transfer.api", "True"]
