"""Folder writes in data_prep.atomic: a folder is replaced whole, or not at all."""
import os

import pytest

from data_prep import atomic


def test_staged_directory_replaces_the_folder_whole_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "stale.json").write_text("old")
    with atomic.staged_directory(target) as staging:
        assert not (target / "new.json").exists()  # nothing shows before the swap
        (staging / "new.json").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_staged_directory_keeps_the_old_folder_when_writing_fails(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "kept.json").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.staged_directory(target) as staging:
            (staging / "half.json").write_text("{")
            raise RuntimeError("disk full")
    assert [p.name for p in target.iterdir()] == ["kept.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_replace_dir_creates_a_missing_target(tmp_path):
    new = tmp_path / "new"
    new.mkdir()
    (new / "a").write_text("a")
    atomic.replace_dir(new, tmp_path / "target")
    assert (tmp_path / "target" / "a").read_text() == "a" and not new.exists()


def test_replace_dir_swaps_in_one_step_where_the_file_system_can(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "name").write_text(folder.name)
    assert atomic.exchange(a, b)  # Linux's renameat2(RENAME_EXCHANGE), on tmp's file system
    assert (a / "name").read_text() == "b" and (b / "name").read_text() == "a"


def _dead_pid():
    import subprocess
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_process_killed_between_the_two_renames_is_undone_by_the_next_one(tmp_path,
                                                                            monkeypatch):
    """Where folders cannot be exchanged in one step (NFS), a process that died after moving
    the old folder aside and before moving the new one in leaves no folder at the target: the
    next writer puts the old one back before it starts."""
    target = tmp_path / "report"
    target.mkdir()
    (target / "summary.md").write_text("old")
    dead = f"{atomic.owner_tag().rpartition('-')[0]}-{_dead_pid()}"
    os.replace(target, tmp_path / f".old-report-{dead}")  # what the dead process had done
    staging = tmp_path / f".staging-report-{dead}-abc"
    staging.mkdir()
    (staging / "summary.md").write_text("half")
    monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    assert not target.exists()
    with atomic.staged_directory(target) as new:
        assert (target / "summary.md").read_text() == "old"  # put back before anything else
        (new / "summary.md").write_text("new")
    assert (target / "summary.md").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_remove_stale_leaves_the_folders_of_live_processes_and_other_hosts(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    host = atomic.owner_tag().rpartition("-")[0]
    left = {name: tmp_path / name for name in (
        f".staging-out-{host}-{_dead_pid()}-x1",        # a dead process of this host: removed
        f".staging-out-{host}-{os.getpid()}-x2",        # this live process: kept
        f".staging-out-elsewhere-{_dead_pid()}-x3",     # another host's: cannot tell, kept
        f".staging-outer-{host}-{_dead_pid()}-x4")}     # another target's: kept
    for folder in left.values():
        folder.mkdir()
    removed = atomic.remove_stale(target)
    assert [p.name for p in removed] == [next(iter(left))]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", *list(left)[1:]])


def test_a_staged_folder_gets_the_permissions_of_a_folder_made_in_place(tmp_path):
    """Readable by the group and others as the umask allows, as the folder it replaces was (a
    report on a shared cluster), not a temp folder's 0700."""
    (tmp_path / "plain").mkdir()
    with atomic.staged_directory(tmp_path / "out") as staging:
        (staging / "summary.md").write_text("new")
    assert (tmp_path / "out").stat().st_mode == (tmp_path / "plain").stat().st_mode
def test_swap_dir_puts_the_new_folder_in_place_and_returns_the_old(tmp_path):
    target, new = tmp_path / "target", tmp_path / ".new"
    for folder, text in ((target, "old"), (new, "new")):
        folder.mkdir()
        (folder / "f").write_text(text)
    old = atomic.swap_dir(new, target)
    assert (target / "f").read_text() == "new" and (old / "f").read_text() == "old"
    # On Linux's local file systems in one step: the old folder is where the new one was.
    assert old == new and atomic.exchange(target, old)
    assert (target / "f").read_text() == "old"
    with pytest.raises(FileNotFoundError):
        atomic.exchange(tmp_path / "missing", target)
