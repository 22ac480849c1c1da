"""Several nets trained as one pack (`python -m keras_transfer.main --nets=...`): the same
results as trained one by one, finished nets left alone, and a failing net leaves its packmates
training. Real processes, real files, tiny synthetic data."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Evaluations every 2 steps on the whole (tiny) validation set; bit-identical reruns.
SCHEDULE = {"steps": 6, "eval_every": 2, "eval_steps": 0, "deterministic": True}
FLAGS = [f"--{name}={value}" for name, value in SCHEDULE.items()]


def _main(data_dir, workdir, *extra):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "keras_transfer.main",
                           f"--flagfile={REPO / 'flags' / 'smoke.flags'}",
                           f"--data_dir={data_dir}", "--dataset=synthetic",
                           f"--workdir={workdir}", *FLAGS, *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _run_dir(workdir, name):
    return Path(workdir) / "synthetic" / "random_0" / "seed0" / name


def _result(workdir, name):
    return json.loads((_run_dir(workdir, name) / "result.json").read_text())


@pytest.fixture(scope="module")
def bases(synthetic_data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pack_bases")
    proc = _main(synthetic_data, workdir, "--nets=baseA")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _main(synthetic_data, workdir, "--target=B")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def _copy_bases(bases, workdir):
    for name in ("baseA", "baseB"):
        shutil.copytree(_run_dir(bases, name), _run_dir(workdir, name))
    return workdir


# A3B, A5B and A7B share the frozen conv1..conv3 of baseA, A5B and A7B also conv4..conv5, A7B
# alone fc6 (its fc7 is frozen too, but takes fc6's output through dropout).
NETS = ("B2B", "A2B+", "A3B", "A5B", "A7B", "R3B")


def _train_one_by_one(data_dir, workdir, names):
    """Trains each net alone (a pack of one), one after the other in one process, as
    keras_transfer.api.train_net does: the same nets as a process each, without the start-ups."""
    script = ("import sys\nimport keras_transfer as kt\nfrom keras_transfer import naming\n"
              "data_dir, workdir, *names = sys.argv[1:]\n"
              "for name in names:\n"
              "    kt.train_net(flagfile='flags/smoke.flags', data_dir=data_dir,\n"
              f"                 dataset='synthetic', workdir=workdir, **{SCHEDULE!r},\n"
              "                 **naming.parse_run_name(name))\n")
    return subprocess.run([sys.executable, "-c", script, str(data_dir), str(workdir), *names],
                          cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_packed_training_gives_the_results_of_separate_training(synthetic_data, bases, tmp_path):
    separate = _copy_bases(bases, tmp_path / "separate")
    proc = _train_one_by_one(synthetic_data, separate, NETS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    packed = _copy_bases(bases, tmp_path / "packed")
    proc = _main(synthetic_data, packed, f"--nets={','.join(NETS)}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pack of 6" in proc.stdout
    assert [line for line in proc.stdout.splitlines() if "computed once" in line] == [
        "frozen layers up to conv3 computed once for A3B, A5B, A7B",
        "frozen layers up to conv5 computed once for A5B, A7B"]
    for name in NETS:
        alone, together = _result(separate, name), _result(packed, name)
        assert together["pack"] == list(NETS) and alone["pack"] == [name]
        assert together["history"] == alone["history"], name
        assert ([row["sha256_end"] for row in together["layers"]]
                == [row["sha256_end"] for row in alone["layers"]]), name
        # The nets really differ from each other: a pack is not one net trained four times.
    assert len({_result(packed, name)["layers"][-1]["sha256_end"] for name in NETS}) == len(NETS)


@pytest.mark.slow
def test_a_finished_net_in_a_pack_is_left_alone(synthetic_data, bases, tmp_path):
    workdir = _copy_bases(bases, tmp_path)
    assert _main(synthetic_data, workdir, "--nets=B2B").returncode == 0
    before = (_run_dir(workdir, "B2B") / "result.json").stat().st_mtime_ns
    proc = _main(synthetic_data, workdir, "--nets=B2B,A2B")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (_run_dir(workdir, "B2B") / "result.json").stat().st_mtime_ns == before
    assert _result(workdir, "A2B")["pack"] == ["A2B"]  # trained alone: its packmate was done


@pytest.mark.slow
def test_a_failing_net_does_not_take_its_packmates_down(synthetic_data, bases, tmp_path):
    workdir = _copy_bases(bases, tmp_path)
    weights = _run_dir(workdir, "baseA") / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:1000])  # A nB cannot read its base
    # B3B cannot write its history: a file of its run directory is in the way.
    (_run_dir(workdir, "B3B") / "history.json").mkdir(parents=True)
    proc = _main(synthetic_data, workdir, "--nets=A2B,B2B,B3B,R2B")
    assert proc.returncode != 0
    assert "A2B" in proc.stderr and "model.weights.h5" in proc.stderr
    assert "B3B" in proc.stderr and "history.json" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (_run_dir(workdir, "A2B") / "result.json").exists()
    assert not (_run_dir(workdir, "B3B") / "result.json").exists()
    for name in ("B2B", "R2B"):
        assert _result(workdir, name)["steps"] == 6


@pytest.mark.parametrize("args,message", [
    (["--nets=A2B,B2A"], "same target half"),
    (["--nets=A2B,A2B"], "listed twice"),
    (["--nets=A2X"], "not a run name"),
    (["--nets=A2B", "--n=3"], "--nets"),
])
@pytest.mark.slow
def test_bad_packs_are_refused_before_anything_is_written(synthetic_data, bases, tmp_path,
                                                          args, message):
    workdir = _copy_bases(bases, tmp_path)
    proc = _main(synthetic_data, workdir, *args)
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in _run_dir(workdir, "x").parent.iterdir()) == ["baseA", "baseB"]
