"""The grid on a real one-node SLURM cluster (slurmctld, slurmd and munged started here by
`keras_transfer.grid.slurm_cluster`): every net trains to the end through sbatch job arrays, no
dependant starts before its base has ended (by the cluster's job-completion log), a failed base
cancels only its own dependants, a requeued task resumes from its backup, and submitting the
same grid again submits only what is not finished."""
import concurrent.futures
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_prep_helpers import prepare_four_small_classes
from distributed_helpers import (SAME_AS_ONE_PROCESS, assert_same_training, main_command,
                                 train_one_process)
from keras_transfer.grid import slurm_cluster

REPO = Path(__file__).resolve().parents[1]
# Per split: baseA, baseB, B1B, B1B+, A1B, A1B+.
GRID = ["--backend=slurm", "--experiments=transfer", "--targets=B", "--layers=1",
        f"--flagfile={REPO / 'flags' / 'smoke.flags'}"]
MAIN = ["--", "--dataset=synthetic", "--data_dir=data", "--threads=1"]
NETS = ("baseA", "baseB", "B1B", "B1B+", "A1B", "A1B+")

pytestmark = [pytest.mark.cluster, pytest.mark.skipif(  # a real SLURM cluster on this machine
    bool(slurm_cluster.missing_commands()) or os.geteuid() != 0,
    reason=f"needs root and Debian's {slurm_cluster.PACKAGES} (`./bootstrap.sh --with-slurm` "
           "installs them, as root); missing: "
           + (", ".join(slurm_cluster.missing_commands()) or "root"))]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = tuple(s.getsockname()[1] for s in sockets)
    for s in sockets:
        s.close()
    return ports


def test_two_cluster_starts_at_once_share_one_munged():
    # Two starts racing for munged's socket: the loser must wait for the winner, not fail.
    subprocess.run(["munged", "--stop"], capture_output=True)
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            starts = [pool.submit(slurm_cluster.start_munge) for _ in range(2)]
            for start in starts:
                start.result()
    finally:
        slurm_cluster.start_munge()
    assert subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    directory = tmp_path_factory.mktemp("slurm")
    slurm_cluster.start(directory, ports=_free_ports(2))
    yield directory
    slurm_cluster.stop(directory)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm_data")
    prepare_four_small_classes(root / "data")
    return root / "data"


def _env(cluster):
    return {**slurm_cluster.env(cluster), "PYTHON": sys.executable, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _launch(cwd, cluster, *args):
    result = subprocess.run([str(REPO / "launch.sh"), *args], cwd=cwd, env=_env(cluster),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _slurm(cluster, *args):
    return subprocess.run(list(args), env=_env(cluster), capture_output=True, text=True,
                          check=True).stdout


def _wait_until_idle(cluster, timeout=600):
    deadline = time.monotonic() + timeout
    while _slurm(cluster, "squeue", "-h", "-o", "%i").strip():
        assert time.monotonic() < deadline, _slurm(cluster, "squeue")
        time.sleep(1)


def _completions(cluster):
    """The job-completion log: per array task (job, task) its last record's state and times;
    (job, None) for a record of a whole array (one cancelled before any task started)."""
    records = {}
    for line in (cluster / "jobcomp.log").read_text().splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "ArrayJobId" in fields:
            records[(fields["ArrayJobId"], int(fields["ArrayTaskId"]))] = fields
        else:
            records[(fields["JobId"], None)] = fields
    return records


def _submissions(stdout):
    """(array job id, tasks file) of each array the grid submitted."""
    return re.findall(r"as array job (\d+)\S* .*\(tasks: (\S+)\)", stdout)


def _tasks(cluster, stdout):
    """Per submitted task: its net's label (split_dir/name of the first net it trains) ->
    its completion record."""
    done = _completions(cluster)
    by_net = {}
    for job, tasks_file in _submissions(stdout):
        for task, line in enumerate(Path(tasks_file).read_text().splitlines()):
            flags = dict(a[2:].split("=", 1) for a in shlex.split(line) if a.startswith("--")
                         and "=" in a)
            name = _name(flags, "--finetune" in shlex.split(line))
            by_net[(flags["split"], name)] = done.get((job, task)) or done.get((job, None))
    return by_net


def _name(flags, finetune):
    if flags.get("nets"):
        return flags["nets"].split(",")[0]
    if flags["source"] == "none":
        return f"base{flags['target']}"
    return f"{flags['source']}{flags['n']}{flags['target']}{'+' if finetune else ''}"


def _run_dir(cwd, split_dir, name):
    return cwd / "runs" / "synthetic" / split_dir / "seed0" / name


def test_the_grid_runs_on_slurm_in_order_a_failed_base_cancels_only_its_dependants(
        tmp_path, cluster, data_dir):
    (tmp_path / "data").symlink_to(data_dir)
    # baseA cannot be written (a file where its run folder goes): it fails.
    blocker = _run_dir(tmp_path, "random_0", "baseA")
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way")
    out = _launch(tmp_path, cluster, *GRID, "--splits=0", *MAIN)
    assert len(_submissions(out)) == 3  # the bases, then one array per base net
    _wait_until_idle(cluster)
    tasks = _tasks(cluster, out)
    assert sorted(name for _, name in tasks) == sorted(NETS)
    for (split, name), record in tasks.items():
        if name.startswith("base"):
            continue
        base = tasks[(split, "base" + name[0])]
        if name[0] == "A":  # baseA failed: its dependants were cancelled, never started
            assert base["JobState"] == "FAILED" and record["JobState"] == "CANCELLED"
            assert record["NodeList"] == "(null)"
        else:  # started only after their own base ended (the log's times are whole seconds)
            assert base["JobState"] == record["JobState"] == "COMPLETED", (name, record)
            assert record["StartTime"] >= base["EndTime"], (name, record, base)
            assert (_run_dir(tmp_path, "random_0", name) / "result.json").is_file()
    # Logs where a cluster user looks for them, named after the array job and task.
    logs = list((tmp_path / "runs" / "logs" / "slurm").glob("kt-synthetic-*-*_*.log"))
    assert len(logs) == 4  # the two cancelled tasks never ran

    # The same grid again, the obstacle gone: only baseA and its dependants are submitted.
    blocker.unlink()
    again = _launch(tmp_path, cluster, *GRID, "--splits=0", *MAIN)
    submitted = [line for _, tasks_file in _submissions(again)
                 for line in Path(tasks_file).read_text().splitlines()]
    assert len(submitted) == 3 and all("--source=A" in t or "--target=A" in t for t in submitted)
    _wait_until_idle(cluster)
    tasks = _tasks(cluster, again)
    assert tasks[("random:0", "A1B")]["StartTime"] >= tasks[("random:0", "baseA")]["EndTime"]
    for name in NETS:
        assert (_run_dir(tmp_path, "random_0", name) / "result.json").is_file()
    third = _launch(tmp_path, cluster, *GRID, "--splits=0", *MAIN)
    assert "every net is done; nothing to submit" in third


def test_a_requeued_task_resumes_from_its_backup(tmp_path, cluster, data_dir):
    # One net with no base (the random-features control R1B on half B of the split, not the
    # default whole-dataset control with its own baseA), long enough to requeue mid-way.
    (tmp_path / "data").symlink_to(data_dir)
    out = _launch(tmp_path, cluster, "--backend=slurm", "--experiments=random",
                  "--random_control=half", "--layers=1",
                  f"--flagfile={REPO / 'flags' / 'smoke.flags'}", "--splits=0", *MAIN,
                  "--steps=1500", "--eval_every=100", "--histogram_every=1000")
    (job, _), = _submissions(out)
    run = _run_dir(tmp_path, "random_0", "R1B")
    deadline = time.monotonic() + 180
    while not ((run / "history.json").exists()
               and len(json.loads((run / "history.json").read_text())["history"]) >= 2):
        assert time.monotonic() < deadline, _slurm(cluster, "squeue")
        time.sleep(0.2)
    task = f"{job}_0"
    _slurm(cluster, "scontrol", "requeue", task)
    requeued = time.monotonic()
    # A requeued job waits about two minutes (BeginTime) before it may start again.
    deadline = time.monotonic() + 60
    while "JobState=PENDING" not in _slurm(cluster, "scontrol", "show", "job", "-o", task):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # Not in the second of the requeue: slurmd refuses a job whose new credential dates from
    # the second in which it revoked the old one ("Job credential revoked").
    time.sleep(max(0.0, requeued + 1.1 - time.monotonic()))
    _slurm(cluster, "scontrol", "update", f"jobid={task}", "StartTime=now")
    _wait_until_idle(cluster)
    result = json.loads((run / "result.json").read_text())
    steps = [entry["step"] for entry in result["history"]]
    assert steps == list(range(100, 1501, 100))  # every evaluation once, across the restart
    log = tmp_path / "runs" / "logs" / "slurm" / f"kt-synthetic-bases-{job}_0.log"
    assert re.search(r"resuming R1B from its backup at step [1-9]\d*00", log.read_text())


def test_srun_trains_one_net_on_two_workers_as_one_process_would(tmp_path, cluster, data_dir):
    """`srun -n 2`: two SLURM tasks become the two workers (SlurmClusterResolver)."""
    reference = train_one_process(data_dir, tmp_path / "one_process")
    command = main_command(data_dir, tmp_path / "runs", "--strategy=multi_worker",
                           *SAME_AS_ONE_PROCESS)
    port_base = _free_ports(1)[0]
    done = subprocess.run(["srun", "-n", "2", f"--chdir={REPO}", "--export=ALL", *command],
                          env={**_env(cluster), "KT_PORT_BASE": str(port_base)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "the chief writes the result" in done.stdout
    assert_same_training(tmp_path / "runs", reference, replicas=2)
