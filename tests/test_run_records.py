"""keras_transfer.run_records.RunDir owns a run directory: nothing else in the packages spells a
run file's name (checked here on the source, as test_architecture checks imports), and its
records, state, set-aside and final write behave as train, the grid, the report and the
analysis rely on."""
import ast
import json
import os
from pathlib import Path

import pytest

from keras_transfer.run_records import RecordError, RunDir, load_record, read_record

REPO = Path(__file__).resolve().parents[1]
OWNER = Path("keras_transfer/run_records.py")
# Names no other file has a use for: an error wherever they are spelled (docstrings aside).
FILE_NAMES = (RunDir.CONFIG, RunDir.RESULT, RunDir.WEIGHTS, RunDir.DIVERGED, RunDir.HISTORY,
              RunDir.START_DIGESTS, RunDir.REPLACED_PREFIX)
# Names that are also ordinary words or suffixes ("backup" is a training phase, ".lock" the
# grid's log locks' suffix): an error only where a path is built from them.
PATH_PARTS = (RunDir.BACKUP, RunDir.SUMMARIES, RunDir.LOCK)
PATH_METHODS = ("glob", "rglob", "joinpath", "with_name")
# The analysis writes TensorBoard events of its own into WORKDIR/analysis/..., not into a run.
ALLOWED = {(Path("keras_transfer/analyze/filters.py"), RunDir.SUMMARIES),
           (Path("keras_transfer/analyze/similarity.py"), RunDir.SUMMARIES)}


def docstrings(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                yield body[0].value


def path_operands(tree):
    """String constants a path is built from: `x / "name"`, `x.glob("name")` and the like."""
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            yield node.right
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in PATH_METHODS):
            yield from node.args


def run_file_names_spelled(path: Path):
    """(line, name) of every run file name the file spells outside docstrings."""
    tree = ast.parse(path.read_text(), str(path))
    skip = {id(node) for node in docstrings(tree)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            for name in FILE_NAMES:
                # f"{x}/result.json" holds the constant "/result.json"
                if node.value in (name, "/" + name) or node.value.endswith("/" + name):
                    yield node.lineno, name
    for node in path_operands(tree):
        if isinstance(node, ast.Constant) and node.value in PATH_PARTS:
            yield node.lineno, node.value


def sources():
    for package in ("data_prep", "keras_transfer"):
        for path in sorted((REPO / package).rglob("*.py")):
            yield path.relative_to(REPO)


@pytest.mark.parametrize("source", [s for s in sources() if s != OWNER], ids=str)
def test_only_the_run_dir_spells_a_run_files_name(source):
    found = [f"{source}:{line} spells {name!r}: ask RunDir (keras_transfer/run_records.py) "
             "for the path or the record instead"
             for line, name in run_file_names_spelled(REPO / source)
             if (source, name) not in ALLOWED]
    assert not found, "\n".join(found)


def test_the_owner_is_found_and_spells_every_name():
    spelled = {name for _, name in run_file_names_spelled(REPO / OWNER)}
    assert set(FILE_NAMES) <= spelled


def test_a_record_is_read_or_says_why_not(tmp_path):
    path = tmp_path / "result.json"
    with pytest.raises(RecordError) as missing:
        load_record(path)
    assert missing.value.kind == "unreadable" and missing.value.path == path
    path.write_text("{not json")
    with pytest.raises(RecordError, match="Expecting property name") as broken:
        load_record(path)
    assert broken.value.kind == "unreadable"
    path.write_text("[1]")
    with pytest.raises(RecordError, match="^not a JSON object$") as wrong:
        load_record(path)
    assert wrong.value.kind == "malformed"
    assert read_record(path) is None
    path.write_text('{"run": "baseB"}')
    assert load_record(path) == read_record(path) == {"run": "baseB"}


def test_a_run_is_done_by_its_result_and_diverged_only_while_unfinished(tmp_path):
    run = RunDir(tmp_path / "A3B")
    run.path.mkdir()
    assert not run.is_done() and run.result_mtime() is None and not run.is_diverged()
    run.diverged_path.write_text("unreadable")  # an unreadable record still counts, as in main
    assert run.is_diverged() and run.diverged() is None
    run.result_path.write_text("{}")
    assert run.is_done() and not run.is_diverged()
    assert run.result_mtime() == os.stat(run.result_path).st_mtime_ns


def test_find_leaves_out_runs_set_aside_and_sorts(tmp_path):
    for name in ("baseB", "A3B", "A3B/.replaced-1/x", ".staging/baseA"):
        (tmp_path / "d" / name).mkdir(parents=True)
        (tmp_path / "d" / name / RunDir.RESULT).write_text("{}")
    (tmp_path / "d" / "B3B").mkdir()
    (tmp_path / "d" / "B3B" / RunDir.DIVERGED).write_text("{}")
    assert [r.path.name for r in RunDir.find(tmp_path)] == ["A3B", "baseB"]
    assert [r.path.name for r in RunDir.find(tmp_path, RunDir.DIVERGED)] == ["B3B"]


def test_set_aside_keeps_the_lock_and_finish_removes_what_was_set_aside(tmp_path):
    run = RunDir(tmp_path / "A3B")
    run.path.mkdir()
    assert run.set_aside() is None  # nothing to set aside
    lock = run.lock()
    assert lock.acquire()
    try:
        run.write_config({"run": "A3B"})
        run.write_start_digests({"conv1": "abc"})
        aside = run.set_aside()
        assert aside.name.startswith(RunDir.REPLACED_PREFIX)
        assert sorted(p.name for p in run.path.iterdir()) == sorted([RunDir.LOCK, aside.name])
        assert json.loads((aside / RunDir.CONFIG).read_text()) == {"run": "A3B"}
        run.write_config({"run": "A3B", "lr": 0.1})  # the new run starts, as main does
        run.write_start_digests({"conv1": "def"})
        assert run.read_start_digests() == {"conv1": "def"}

        class Model:  # what finish needs of a Keras model
            def save_weights(self, path):
                assert path.endswith(".weights.h5")
                Path(path).write_bytes(b"weights")
        run.finish(Model(), {"run": "A3B", "top1_final": 0.5})
    finally:
        lock.release()
    assert run.weights_path.read_bytes() == b"weights"
    assert run.result() == {"run": "A3B", "top1_final": 0.5}
    assert sorted(p.name for p in run.path.iterdir()) == sorted(
        [RunDir.LOCK, RunDir.CONFIG, RunDir.RESULT, RunDir.WEIGHTS])
    assert run.missing() == []
