"""The packages are layered as the data flows, data_prep -> training (keras_transfer's top-level
modules) -> grid -> report -> analyze: a module imports only from its own layer or the ones
before it, so training never depends on the tools that read its results (docs/architecture.md).
Imports inside functions count too."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("data_prep", "keras_transfer", "keras_transfer.grid", "keras_transfer.report",
          "keras_transfer.analyze")


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
             for name, line in imports_of(MODULES[module]) if layer_of(name) > own]
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
