"""Folder writes in data_prep.atomic: a folder is replaced whole, or not at all."""
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
