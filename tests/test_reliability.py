"""Failures made for real: killed processes, corrupted shards, a full disk, racing runs.

Each test drives `python -m keras_transfer.main` as a separate process, as a scheduler would.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Long enough to be caught mid-training, short enough for CI: evaluations every 10 steps.
LONG = ["--steps=300", "--eval_every=10", "--eval_steps=1", "--histogram_every=1000"]


def _args(data_dir, workdir, *extra):
    return [sys.executable, "-m", "keras_transfer.main",
            f"--flagfile={REPO / 'flags' / 'smoke.flags'}", f"--data_dir={data_dir}",
            "--dataset=synthetic", f"--workdir={workdir}", *extra]


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _run(data_dir, workdir, *extra):
    return subprocess.run(_args(data_dir, workdir, *extra), cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)


def _start(data_dir, workdir, *extra):
    return subprocess.Popen(_args(data_dir, workdir, *extra), cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run_dir(workdir, name="baseB"):
    return Path(workdir) / "synthetic" / "random_0" / "seed0" / name


def _wait_for_step(proc, run_dir, step, timeout=120):
    """Blocks until the run has evaluated at `step` or later; returns the last evaluated step."""
    history = run_dir / "history.json"
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"run ended early: {proc.communicate()[1][-2000:]}"
        if history.exists():
            entries = json.loads(history.read_text())["history"]
            if entries and entries[-1]["step"] >= step:
                return entries[-1]["step"]
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no evaluation at step {step} within {timeout}s")


def _steps_in_order(result):
    return [h["step"] for h in result["history"]]


@pytest.mark.slow
def test_sigkill_resumes_from_the_last_backup(synthetic_data, tmp_path):
    proc = _start(synthetic_data, tmp_path, *LONG)
    seen = _wait_for_step(proc, _run_dir(tmp_path), 50)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (_run_dir(tmp_path) / "result.json").exists()

    again = _run(synthetic_data, tmp_path, *LONG)
    assert again.returncode == 0, again.stderr[-2000:]
    resumed_at = int(again.stdout.split("from its backup at step ")[1].split()[0])
    # The backup follows each evaluation, so the kill may land just before the latest one.
    assert seen - 10 <= resumed_at < 300
    result = json.loads((_run_dir(tmp_path) / "result.json").read_text())
    assert result["steps"] == 300
    assert _steps_in_order(result) == list(range(10, 301, 10))  # every evaluation once
    assert not (_run_dir(tmp_path) / "backup").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["sigterm", "ctrl_c"])
def test_a_stop_signal_saves_a_backup_in_one_line_and_the_rerun_continues_from_that_step(
        synthetic_data, tmp_path, signum, code):
    """SIGTERM (a scheduler's preemption) and SIGINT (what a terminal's Ctrl-C sends) alike."""
    name = signal.Signals(signum).name
    proc = _start(synthetic_data, tmp_path, *LONG)
    _wait_for_step(proc, _run_dir(tmp_path), 30)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith(f"baseB: stopped by {name} at step ")
    stopped_at = int(stderr.split(f"stopped by {name} at step ")[1].split(";")[0])
    assert (_run_dir(tmp_path) / "backup" / f"ckpt-{stopped_at}.index").exists()
    assert not (_run_dir(tmp_path) / "result.json").exists()

    again = _run(synthetic_data, tmp_path, *LONG)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"from its backup at step {stopped_at}\n" in again.stdout
    result = json.loads((_run_dir(tmp_path) / "result.json").read_text())
    assert result["steps"] == 300
    assert _steps_in_order(result) == list(range(10, 301, 10))


@pytest.mark.slow
def test_ctrl_c_before_training_exits_130_in_one_line(synthetic_data, tmp_path):
    """Ctrl-C while the run starts (its directory claimed, its model being built): no traceback,
    one line naming the signal, exit 130, and the net can be trained at once."""
    short = ["--steps=40", "--eval_every=10", "--eval_steps=1", "--histogram_every=1000"]
    proc = _start(synthetic_data, tmp_path, *short)
    config = _run_dir(tmp_path) / "config.json"
    deadline = time.time() + 120
    while not config.exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("baseB: stopped by SIGINT") and "run the same command again" in last
    assert not (_run_dir(tmp_path) / "result.json").exists()
    again = _run(synthetic_data, tmp_path, *short)
    assert again.returncode == 0, again.stderr[-2000:]


@pytest.mark.slow
def test_two_processes_never_train_the_same_net(synthetic_data, tmp_path):
    first = _start(synthetic_data, tmp_path, *LONG)
    try:
        _wait_for_step(first, _run_dir(tmp_path), 10)
        second = _run(synthetic_data, tmp_path, *LONG)
        assert second.returncode == 2
        assert "another process is training baseB" in second.stderr
    finally:
        first.kill()
        first.wait()
    # The kernel drops a dead process's lock: the net can be trained again at once (from
    # scratch: a resumed run would have to keep the settings it started with).
    third = _run(synthetic_data, tmp_path, "--steps=20", "--eval_every=10", "--overwrite")
    assert third.returncode == 0, third.stderr[-2000:]


@pytest.mark.slow
def test_deterministic_runs_give_identical_results(synthetic_data, tmp_path):
    results = []
    for name in ("one", "two"):
        proc = _run(synthetic_data, tmp_path / name, "--deterministic", "--steps=6",
                    "--eval_every=2", "--eval_steps=0")
        assert proc.returncode == 0, proc.stderr[-2000:]
        results.append(json.loads((_run_dir(tmp_path / name) / "result.json").read_text()))
    a, b = results
    assert a["history"] == b["history"]
    assert [r["sha256_end"] for r in a["layers"]] == [r["sha256_end"] for r in b["layers"]]


@pytest.mark.slow
def test_shard_corrupted_after_preparation_stops_the_run_naming_it(synthetic_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    shard = sorted((data / "synthetic" / "random_0" / "B").glob("train-*.tfrecord"))[0]
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size: only reading the records can notice
    shard.write_bytes(bytes(raw))
    proc = _run(data, tmp_path / "runs", "--steps=40", "--eval_every=20")
    assert proc.returncode == 2
    assert shard.name in proc.stderr and "python -m data_prep verify" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "runs").rglob("result.json"))
    # With --verify_data the hash check refuses it before anything is written.
    proc = _run(data, tmp_path / "runs2", "--verify_data")
    assert proc.returncode == 2 and shard.name in proc.stderr
    assert not (tmp_path / "runs2").exists()


@pytest.mark.parametrize("flag,named", [
    ("--strategy=tpu", "--strategy"),
    ("--mixed_precision=fp8", "--mixed_precision"),
    ("--source=C", "--source"),
    ("--target=C", "--target"),
    ("--split=halves:3", "halves"),
    ("--n=-1", "--n=-1"),
])
@pytest.mark.slow
def test_unknown_flag_values_are_named(synthetic_data, tmp_path, flag, named):
    proc = _run(synthetic_data, tmp_path, flag)
    assert proc.returncode != 0
    assert named in proc.stderr and "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_unwritable_workdir_is_refused(synthetic_data, tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the workdir should be\n")
    proc = _run(synthetic_data, blocker / "runs")
    assert proc.returncode == 2
    assert "cannot write the run directory" in proc.stderr and "--workdir" in proc.stderr
    assert blocker.read_text() == "a file where the workdir should be\n"


@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}): needs root")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.slow
def test_disk_full_fails_cleanly_without_a_result(synthetic_data, tiny_disk):
    proc = _run(synthetic_data, tiny_disk, "--steps=20", "--eval_every=10")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "No space left on device" in proc.stderr or "space" in proc.stderr.lower()
    assert not list(tiny_disk.rglob("result.json"))
    assert not list(tiny_disk.rglob("*.tmp"))


def _image_folder(root, sizes):
    """ROOT/<class>/<i>.png with one image per entry of sizes[class]."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, shapes in sizes.items():
        (root / name).mkdir(parents=True)
        for i, (h, w) in enumerate(shapes):
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def _data_prep(*args):
    return subprocess.run([sys.executable, "-m", "data_prep", *args], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=120)


def test_folder_source_with_an_empty_class_is_refused(tmp_path):
    root = _image_folder(tmp_path / "root", {c: [(16, 16)] * 4 for c in "abc"})
    (root / "d").mkdir()
    proc = _data_prep(f"--source=folder:{root}", "--split=random:0", f"--out={tmp_path / 'out'}")
    assert proc.returncode != 0
    assert str(root / "d") in proc.stderr and "no images" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_folder_source_with_an_undecodable_image_names_it(tmp_path):
    root = _image_folder(tmp_path / "root", {c: [(16, 16)] * 4 for c in "abcd"})
    (root / "b" / "9.png").write_bytes(b"not a png")
    proc = _data_prep(f"--source=folder:{root}", "--split=random:0", f"--out={tmp_path / 'out'}")
    assert proc.returncode != 0
    assert str(root / "b" / "9.png") in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_folder_images_of_another_size_are_resized_to_the_common_shape(tmp_path):
    """A photo folder mixes sizes (ImageNet does); every record comes out at --image_size."""
    from data_prep import records

    sizes = {c: [(16, 16)] * 4 for c in "abcd"}
    sizes["a"] = [(16, 16), (40, 24), (16, 16), (9, 30)]
    root = _image_folder(tmp_path / "root", sizes)
    proc = _data_prep(f"--source=folder:{root}", "--split=random:0", f"--out={tmp_path / 'out'}",
                      "--image_size=20")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for shard in (tmp_path / "out").rglob("*.tfrecord"):
        for example in records.read_examples([shard]):
            assert example["image"].shape == (20, 20, 3)


@pytest.fixture(scope="module")
def stopped_run(synthetic_data, tmp_path_factory):
    """A run of baseB stopped by SIGTERM after a few evaluations: its backup, history.json and
    backup/layers_start.json are there to be damaged (each test damages its own copy)."""
    workdir = tmp_path_factory.mktemp("stopped")
    proc = _start(synthetic_data, workdir, *LONG)
    _wait_for_step(proc, _run_dir(workdir), 30)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    return workdir


@pytest.mark.parametrize("damage", ["truncated_history", "history_without_its_evaluations",
                                    "missing_layers_start", "garbled_layers_start"])
@pytest.mark.slow
def test_a_backup_whose_records_are_damaged_starts_afresh_with_a_warning(
        synthetic_data, stopped_run, tmp_path, damage):
    """The evaluations before a backup (history.json) and the layers' hashes when training began
    (backup/layers_start.json) go with it: a run that cannot read them cannot report what it
    resumes, so it says so and trains from scratch, to a whole result."""
    workdir = tmp_path / "runs"
    shutil.copytree(stopped_run, workdir)
    run_dir = _run_dir(workdir)
    if damage == "truncated_history":
        (run_dir / "history.json").write_text('{"history": [{"step": 1')
    elif damage == "history_without_its_evaluations":
        (run_dir / "history.json").write_text('{"history": []}')
    elif damage == "missing_layers_start":
        (run_dir / "backup" / "layers_start.json").unlink()
    else:
        (run_dir / "backup" / "layers_start.json").write_bytes(b"\xff\x00")
    again = _run(synthetic_data, workdir, *LONG)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "cannot be resumed" in again.stderr and "training starts afresh" in again.stderr
    assert "from its backup at step" not in again.stdout
    result = json.loads((run_dir / "result.json").read_text())
    assert _steps_in_order(result) == list(range(10, 301, 10))
    assert "Traceback" not in again.stderr
