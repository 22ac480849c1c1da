"""A network from the researcher's own code, named as `--model=module:function` or
`--model=path/to/file.py:function`: `function` takes no arguments and returns an Architecture.

A module is imported as Python imports it (under `python -m`, from the current directory, else
from PYTHONPATH); a file is loaded by its path, relative to the current directory, and its
folder is appended to sys.path so that it can import its neighbours, as a script can. The grid's
nets run in the grid's directory with its environment, so they find the same code.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from data_prep import quiet_tensorflow
from keras_transfer.models.architecture import Architecture, ModelError, check_declaration

FORMS = "module:function or path/to/file.py:function"


def is_spelling(name: str) -> bool:
    """Whether `name` names a function in the user's code rather than a registered network."""
    return ":" in name


def load(spelling: str) -> Architecture:
    """The Architecture `spelling`'s function returns, named `spelling` (how config.json,
    result.json and the report name it); ModelError naming what failed and the fix."""
    source, _, function = spelling.rpartition(":")
    if not source or not function.isidentifier():
        raise ModelError(f"--model={spelling} is not {FORMS}: give a module or a .py file, a "
                         "colon and the name of a function in it")
    # The module may import Keras: through here first, TensorFlow starts without its notices.
    quiet_tensorflow.import_tensorflow()
    module = _load_file(spelling, source) if _is_file(source) else _import(spelling, source)
    if not hasattr(module, function):
        raise ModelError(f"--model={spelling}: {source} defines no {function!r}; name a function "
                         "there that returns an Architecture")
    made = getattr(module, function)
    if not callable(made) or isinstance(made, type):
        raise ModelError(f"--model={spelling}: {function} is an object of type "
                         f"{type(made).__name__}, not a function; define "
                         f"`def {function}(): return Architecture(...)`")
    try:
        arch = made()
    except Exception as e:  # the user's code may raise anything: name it on one line
        raise ModelError(f"--model={spelling}: {function}() raised {_one_line(e)}; it must take "
                         "no arguments and return an Architecture") from None
    if not isinstance(arch, Architecture):
        raise ModelError(f"--model={spelling}: {function}() returned a {type(arch).__name__}, "
                         "not a keras_transfer.models.Architecture; return "
                         "Architecture(name=..., build=..., cut_points=..., head=..., ...) as "
                         "docs/examples/my_model.py does")
    arch = dataclasses.replace(arch, name=spelling)
    check_declaration(arch)
    return arch


def _is_file(source: str) -> bool:
    return source.endswith(".py") or "/" in source


def _import(spelling: str, module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and (module == e.name or module.startswith(e.name + ".")):
            raise ModelError(f"--model={spelling}: no module {e.name!r} on the path; run from "
                             "the folder that holds it (python -m puts it on the path) or add "
                             f"that folder to PYTHONPATH, or give a file: {FORMS}") from None
        raise _import_error(spelling, module, e) from None
    except Exception as e:
        raise _import_error(spelling, module, e) from None


def _load_file(spelling: str, source: str):
    path = Path(source).expanduser().resolve()
    if not path.is_file():
        raise ModelError(f"--model={spelling}: there is no file {path} (a path is relative to "
                         f"the current directory, {Path.cwd()}); give an existing .py file")
    # One module per file, whatever the spelling of its path: load it once per process.
    name = f"_keras_transfer_model_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise _import_error(spelling, str(path), e) from None
    return module


def _import_error(spelling: str, source: str, error: Exception) -> ModelError:
    return ModelError(f"--model={spelling}: importing {source} raised {_one_line(error)}; fix "
                      "it (importing it alone shows the traceback)")


def _one_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return type(error).__name__ + (f": {lines[0]}" if lines else "")
