"""launch.sh trains a smoke grid with the real `keras_transfer.main` on tiny synthetic data: it
survives SIGTERM, Ctrl-C and SIGKILL of its process group, stops its nets when it is killed
alone, counts a net signalled before main catches the signal as preempted, resumes without
retraining finished nets while two launchers share the workdir, and fails the dependants of a
failed base at once, naming it. Tests signal only processes they started: the launcher's own
session, or `keras_transfer.main` processes whose working directory is the test's tmp_path."""
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_prep_helpers import ctrl_c_as_in_a_terminal, prepare_four_small_classes
from keras_transfer import report

REPO = Path(__file__).resolve().parents[1]
# 6 nets: baseA, baseB, B1B, B1B+, A1B, A1B+.
GRID = ["--experiments=transfer", "--targets=B", "--layers=1", "--jobs=2",
        f"--flagfile={REPO / 'flags' / 'smoke.flags'}", "--", "--dataset=synthetic", "--data_dir=data"]
NETS = ("baseA", "baseB", "B1B", "B1B+", "A1B", "A1B+")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid_data")
    prepare_four_small_classes(root / "data")
    return root / "data"


def launch(cwd, *args, **popen):
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.Popen([str(REPO / "launch.sh"), *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=ctrl_c_as_in_a_terminal, **popen)


def run_dirs(cwd):
    return {name: cwd / "runs" / "synthetic" / "random_0" / "seed0" / name for name in NETS}


def log_of(cwd, name):
    return cwd / "runs" / "logs" / "synthetic" / "random_0" / "seed0" / f"{name}.log"


def wait_for(condition, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"launcher exited early:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def lock_is_free(path):
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


@pytest.mark.slow
def test_sigterm_then_sigkill_then_two_launchers_resume(tmp_path, data_dir):
    (tmp_path / "data").symlink_to(data_dir)
    dirs = run_dirs(tmp_path)

    # 1. SIGTERM to the launcher while the two base nets train: it stops them and exits 128+15.
    first = launch(tmp_path, *GRID)
    wait_for(lambda: log_of(tmp_path, "baseA").exists() and log_of(tmp_path, "baseB").exists(), first)
    first.send_signal(signal.SIGTERM)
    out = first.communicate(timeout=90)[0]
    assert first.returncode == 128 + signal.SIGTERM, out
    assert "SIGTERM: stopping 2 running nets" in out
    locks = [log_of(tmp_path, name).with_suffix(".lock") for name in ("baseA", "baseB")]
    assert all(lock_is_free(lock) for lock in locks)  # the runs are gone, so are their locks

    # 2. SIGKILL of the whole process group once both bases are done and a dependant has started.
    second = launch(tmp_path, *GRID)
    wait_for(lambda: all((dirs[b] / "result.json").exists() for b in ("baseA", "baseB"))
             and any(log_of(tmp_path, n).exists() for n in ("B1B", "B1B+", "A1B", "A1B+")), second)
    os.killpg(second.pid, signal.SIGKILL)
    second.wait(timeout=30)
    # The runs are their own process groups: the launcher's death stops them (they save a
    # backup); a run in its last steps may still finish.
    assert _wait_until_gone(tmp_path, timeout=60) == []
    finished = {n: (d / "result.json").stat().st_mtime_ns for n, d in dirs.items()
                if (d / "result.json").exists()}
    assert {"baseA", "baseB"} <= set(finished)
    assert len(finished) < len(NETS)

    # 3. Two launchers on the same workdir finish the grid; no net is trained twice.
    resumers = [launch(tmp_path, *GRID) for _ in range(2)]
    outputs = [p.communicate(timeout=240)[0] for p in resumers]
    assert [p.returncode for p in resumers] == [0, 0], outputs
    assert all(f"{len(NETS)} nets, {len(finished)} already done" in o for o in outputs)
    for name, d in dirs.items():
        result = json.loads((d / "result.json").read_text())
        assert result["run"] == name and result["steps"] == 4
        starts = re.findall(r"launcher pid (\d+):", log_of(tmp_path, name).read_text())
        by_resumers = [pid for pid in starts if int(pid) in {p.pid for p in resumers}]
        if name in finished:
            assert (d / "result.json").stat().st_mtime_ns == finished[name]
            assert by_resumers == []
        else:
            assert len(by_resumers) == 1, (name, starts)

    # 4. The report reads the real runs.
    made = report.make_report(tmp_path / "runs")
    assert made["runs"] == len(NETS)
    assert made["files"]["figure2.png"].stat().st_size > 10_000


@pytest.mark.slow
def test_failed_base_fails_its_dependants_at_once(tmp_path, data_dir):
    for half in "AB":
        src = data_dir / "synthetic" / "random_0" / half
        dst = tmp_path / "data" / "synthetic" / "random_0" / half
        dst.mkdir(parents=True)
        for f in src.iterdir():
            (dst / f.name).write_bytes(f.read_bytes())
        shard = sorted(dst.glob("train-*.tfrecord"))[0]
        shard.write_bytes(shard.read_bytes()[:-10])  # truncated: main's size check refuses the half
    proc = launch(tmp_path, *GRID)
    out = proc.communicate(timeout=180)[0]
    assert proc.returncode == 1, out
    for base in ("baseA", "baseB"):
        assert f"FAILED random_0/seed0/{base} (exit code" in out
        assert not (run_dirs(tmp_path)[base] / "result.json").exists()
    for name in ("B1B", "B1B+", "A1B", "A1B+"):
        base = f"base{name[0]}"
        assert re.search(rf"failed random_0/seed0/{re.escape(name)}: not run: its base net {base} "
                         rf"failed \(exit code \d+; see .*{base}\.log\)", out), out
        assert not log_of(tmp_path, name).exists()  # never started
    assert "grid finished: 0 trained, 0 were already done, 6 failed" in out



@pytest.mark.slow
def test_a_diverged_base_fails_its_dependants_and_is_no_result(tmp_path, data_dir):
    (tmp_path / "data").symlink_to(data_dir)
    proc = launch(tmp_path, *GRID, "--lr=1e30")
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 1, out
    for base in ("baseA", "baseB"):
        assert f"FAILED random_0/seed0/{base} (exit code 3" in out
        assert (run_dirs(tmp_path)[base] / "diverged.json").is_file()
        assert not (run_dirs(tmp_path)[base] / "result.json").exists()
    assert re.search(r"failed random_0/seed0/A1B\+: not run: its base net baseA failed "
                     r"\(exit code 3", out), out
    assert "grid finished: 0 trained, 0 were already done, 6 failed" in out
    # Launched again, the grid does not retrain them blindly; --overwrite with sane flags does.
    again = launch(tmp_path, *GRID, "--lr=1e30")
    out = again.communicate(timeout=120)[0]
    assert again.returncode == 2 and "random_0/seed0/baseA: it diverged by step" in out, out
    split = GRID.index("--")
    fixed = launch(tmp_path, *GRID[:split], "--overwrite", *GRID[split:])
    out = fixed.communicate(timeout=240)[0]
    assert fixed.returncode == 0, out
    assert all((d / "result.json").exists() for d in run_dirs(tmp_path).values())
    assert not (run_dirs(tmp_path)["baseA"] / "diverged.json").exists()


def _main_processes_in(cwd):
    """(pid, argv) of every running `keras_transfer.main` process started in `cwd`: this
    test's grid only, never another run on the machine (a demo or a second test session)."""
    for proc in Path("/proc").iterdir():
        try:
            if Path(os.readlink(proc / "cwd")) != Path(cwd).resolve():
                continue
            args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, ValueError):
            continue
        if "keras_transfer.main" in args:
            yield int(proc.name), args


def _pack_workers(cwd):
    """pid -> the --nets list of every `keras_transfer.main --nets=...` process of this test."""
    workers = {}
    for pid, args in _main_processes_in(cwd):
        nets = [a.split("=", 1)[1] for a in args if a.startswith("--nets=")]
        if nets:
            workers[pid] = nets[0].split(",")
    return workers


def _main_processes(cwd, target):
    """pids of this test's `keras_transfer.main` processes training a net of half `target`
    alone."""
    return [pid for pid, args in _main_processes_in(cwd) if f"--target={target}" in args]


@pytest.mark.slow
def test_a_preempted_base_is_resumable_not_failed(tmp_path, data_dir):
    (tmp_path / "data").symlink_to(data_dir)
    long = GRID + ["--steps=200", "--eval_every=10", "--eval_steps=1", "--histogram_every=1000"]
    first = launch(tmp_path, *long)
    base_a = run_dirs(tmp_path)["baseA"]
    wait_for(lambda: list((base_a / "backup").glob("ckpt-*.index")), first)
    for pid in _main_processes(tmp_path, "A"):  # SIGTERM to baseA's process alone, as a scheduler does
        os.kill(pid, signal.SIGTERM)
    out = first.communicate(timeout=300)[0]
    assert first.returncode == 128 + signal.SIGTERM, out
    assert "preempted random_0/seed0/baseA: stopped by SIGTERM with a backup saved" in out
    assert "not starting random_0/seed0/A1B: its base net baseA was preempted" in out
    assert "FAILED" not in out and "0 failed, 3 preempted or waiting on a preempted base" in out
    assert (run_dirs(tmp_path)["B1B"] / "result.json").exists()  # baseB's side went on
    again = launch(tmp_path, *long)
    out = again.communicate(timeout=300)[0]
    assert again.returncode == 0, out
    assert all((d / "result.json").exists() for d in run_dirs(tmp_path).values())
    assert "resuming baseA from its backup" in log_of(tmp_path, "baseA").read_text()

@pytest.mark.slow
def test_a_killed_pack_resumes_only_its_unfinished_nets(tmp_path, data_dir):
    (tmp_path / "data").symlink_to(data_dir)
    dirs = run_dirs(tmp_path)
    long = GRID + ["--steps=200", "--eval_every=10", "--eval_steps=1", "--histogram_every=1000"]
    first = launch(tmp_path, *long)
    # Kill -9 one pack's process once its nets have a backup (they evaluate every 10 steps).
    victims = {}

    def pack_has_a_backup():
        for pid, nets in _pack_workers(tmp_path).items():
            if all((dirs[n] / "backup" / "checkpoint").exists() for n in nets):
                victims.update(pid=pid, nets=nets)
                return True
        return False

    wait_for(pack_has_a_backup, first)
    os.kill(victims["pid"], signal.SIGKILL)
    out = first.communicate(timeout=240)[0]
    assert first.returncode == 1, out
    for name in victims["nets"]:
        assert f"FAILED random_0/seed0/{name} (exit code -9" in out
        assert not (dirs[name] / "result.json").exists()
    finished = {n: (d / "result.json").stat().st_mtime_ns for n, d in dirs.items()
                if (d / "result.json").exists()}
    assert set(finished) == set(NETS) - set(victims["nets"])  # the other pack finished

    again = launch(tmp_path, *long)
    out = again.communicate(timeout=240)[0]
    assert again.returncode == 0, out
    assert f"{len(NETS)} nets, {len(finished)} already done" in out
    pack_log = next(log_of(tmp_path, "x").parent.glob(f"pack-{victims['nets'][0]}+*.log"))
    for name in NETS:
        result = json.loads((dirs[name] / "result.json").read_text())
        if name in finished:
            assert (dirs[name] / "result.json").stat().st_mtime_ns == finished[name]
        else:
            assert re.search(rf"resuming {re.escape(name)} from its backup at step [1-9]",
                             pack_log.read_text())
            assert [h["step"] for h in result["history"]] == list(range(10, 201, 10))
        assert result["steps"] == 200


def _kill_leftovers(cwd):
    """SIGKILLs this test's own `keras_transfer.main` processes (those started in `cwd`), so a
    failed check leaves nothing training."""
    for pid, _ in _main_processes_in(cwd):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_until_gone(cwd, timeout):
    """Waits up to `timeout` s for every `keras_transfer.main` process of this test to end;
    returns the pids still running."""
    deadline = time.monotonic() + timeout
    while (left := [pid for pid, _ in _main_processes_in(cwd)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.slow
def test_ctrl_c_of_the_grid_stops_every_net_with_a_backup_and_the_rerun_resumes(tmp_path, data_dir):
    (tmp_path / "data").symlink_to(data_dir)
    # The convergence control: two base nets (baseA-x2, baseB-x2) training side by side, 1000
    # steps each, long enough for Ctrl-C to find both training.
    twins = ["--experiments=convergence", "--jobs=2", f"--flagfile={REPO / 'flags' / 'smoke.flags'}",
             "--", "--dataset=synthetic", "--data_dir=data", "--steps=500", "--eval_every=10",
             "--eval_steps=1", "--histogram_every=1000"]
    names = ("baseA-x2", "baseB-x2")
    dirs = {name: tmp_path / "runs" / "synthetic" / "random_0" / "seed0" / name for name in names}
    first = launch(tmp_path, *twins)
    try:
        wait_for(lambda: all(list((dirs[n] / "backup").glob("ckpt-*.index")) for n in names),
                 first)
        # A terminal's Ctrl-C signals its whole foreground process group: here the launcher's
        # session, started for this test alone. Pressed twice, as people do: the second one,
        # while the nets save their backups, changes nothing.
        os.killpg(first.pid, signal.SIGINT)
        time.sleep(0.2)
        os.killpg(first.pid, signal.SIGINT)
        out = first.communicate(timeout=90)[0]
    finally:
        _kill_leftovers(tmp_path)
    assert first.returncode == 128 + signal.SIGINT, out
    assert out.count("SIGINT: stopping") == 1 and "SIGINT: stopping 2 running nets" in out, out
    assert "Traceback" not in out and "FAILED" not in out, out
    stopped = {}
    for name in names:
        log = log_of(tmp_path, name).read_text()
        assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-3000:]
        found = re.search(rf"{name}: stopped by SIG(?:INT|TERM) at step (\d+); a backup was saved",
                          log)
        assert found, log[-3000:]
        stopped[name] = int(found.group(1))
        assert not (dirs[name] / "result.json").exists()

    again = launch(tmp_path, *twins)
    out = again.communicate(timeout=300)[0]
    assert again.returncode == 0, out
    for name, step in stopped.items():
        assert json.loads((dirs[name] / "result.json").read_text())["steps"] == 1000
        assert f"resuming {name} from its backup at step {step}\n" in log_of(tmp_path, name).read_text()


def _loading_tensorflow(pid):
    """Whether process `pid` has begun to load TensorFlow's libraries."""
    try:
        return "tensorflow" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_net_signalled_before_its_handler_is_preempted_not_failed(tmp_path, data_dir, signum):
    """The signal reaches baseA's process while it starts (TensorFlow is still loading), before
    main catches it: the net is preempted, its dependants wait for the next launch."""
    (tmp_path / "data").symlink_to(data_dir)
    first = launch(tmp_path, *GRID)
    signalled = []

    def signal_base_a():
        for pid in _main_processes(tmp_path, "A"):
            if _loading_tensorflow(pid):  # past Python's own start-up (see docs/reliability.md)
                os.kill(pid, signum)
                signalled.append(pid)
        return bool(signalled)

    try:
        wait_for(signal_base_a, first)
        out = first.communicate(timeout=240)[0]
    finally:
        _kill_leftovers(tmp_path)
    assert first.returncode == 128 + signal.SIGTERM, out
    assert "preempted random_0/seed0/baseA" in out, out
    assert "not starting random_0/seed0/A1B: its base net baseA was preempted" in out, out
    assert "FAILED" not in out and "0 failed, 3 preempted or waiting on a preempted base" in out
    assert (run_dirs(tmp_path)["B1B+"] / "result.json").exists()  # baseB's side went on


@pytest.mark.slow
def test_the_nets_stop_when_the_launcher_is_killed(tmp_path, data_dir):
    """SIGKILL of the launcher alone (not its process group): no net trains on untracked; each
    stops as on SIGTERM, with a backup at its current step."""
    (tmp_path / "data").symlink_to(data_dir)
    dirs = run_dirs(tmp_path)
    long = GRID + ["--steps=100000", "--eval_every=10", "--eval_steps=1", "--histogram_every=1000"]
    first = launch(tmp_path, *long)
    try:
        wait_for(lambda: all((dirs[b] / "history.json").exists() for b in ("baseA", "baseB")),
                 first)
        first.kill()
        first.wait(timeout=30)
        left = _wait_until_gone(tmp_path, timeout=20)
    finally:
        _kill_leftovers(tmp_path)
    assert left == [], f"still training after the launcher died: {left}"
    for base in ("baseA", "baseB"):
        log = log_of(tmp_path, base).read_text()
        found = re.search(rf"{base}: stopped by SIGTERM at step (\d+); a backup was saved", log)
        assert found, log[-3000:]
        assert (dirs[base] / "backup" / f"ckpt-{found.group(1)}.index").exists()


@pytest.mark.slow
def test_a_base_whose_result_vanishes_while_its_dependants_wait_is_trained_again(tmp_path,
                                                                                 data_dir):
    """One process at a time: baseA finishes, baseB starts, and baseA's result is deleted then.
    Its dependants must not wait forever for a base that can no longer finish on its own."""
    (tmp_path / "data").symlink_to(data_dir)
    args = [a for a in GRID if not a.startswith("--jobs")]
    proc = launch(tmp_path, "--jobs=1", *args)
    lines, deadline = [], time.monotonic() + 300
    try:
        while not any("started random_0/seed0/baseB" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            lines.append(proc.stdout.readline())
        result = run_dirs(tmp_path)["baseA"] / "result.json"
        assert result.exists(), "".join(lines)
        result.unlink()
        out = "".join(lines) + proc.communicate(timeout=300)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    assert "random_0/seed0/baseA is no longer finished (its result is gone): training it again" in out
    assert all((run / "result.json").exists() for run in run_dirs(tmp_path).values())


def test_a_log_folder_that_cannot_be_made_is_one_line_and_nothing_trains(tmp_path, data_dir):
    (tmp_path / "data").symlink_to(data_dir)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "logs").write_text("a file where the grid keeps its logs")
    proc = launch(tmp_path, *GRID)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 1, out
    assert "error: cannot start a run:" in out and "Traceback" not in out
    assert not (tmp_path / "runs" / "synthetic").exists()
