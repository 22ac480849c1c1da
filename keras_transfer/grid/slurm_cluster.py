"""A real one-node SLURM cluster on this machine, for trying the SLURM backend and testing it.

    python -m keras_transfer.grid.slurm_cluster start [--dir=DIR]   # munged, slurmctld, slurmd
    eval "$(python -m keras_transfer.grid.slurm_cluster env [--dir=DIR])"   # SLURM_CONF for sbatch
    python -m keras_transfer.grid.slurm_cluster stop [--dir=DIR]

Needs root and Debian's `slurm-wlm` and `munge` packages (`./bootstrap.sh --with-slurm`
installs them, as root). The controller and node daemon run on localhost with the machine's cores and memory, no
cgroups (process tracking by /proc), and every file of theirs in DIR: slurm.conf, state, spool,
pid and log files, and the job-completion log (`jobcomp.log`: each finished job's state, start
and end time, which is what tests check an order of jobs against; `sacct` needs slurmdbd and a
database, which this cluster does not run).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DIR = Path("/tmp/keras_transfer-slurm")
PACKAGES = "slurm-wlm munge"
COMMANDS = ("munged", "munge", "unmunge", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue",
            "scontrol", "srun")
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_RUN = Path("/run/munge")
PARTITION = "debug"


class ClusterError(Exception):
    """The cluster cannot be started or used here; the message says why and what to do."""


def missing_commands() -> list[str]:
    return [name for name in COMMANDS if shutil.which(name) is None]


def node_line() -> tuple[str, int, int]:
    """This machine as a SLURM node (`slurmd -C`), declaring a little less memory than it has so
    the node is not drained for having less than configured. Also its CPUs and that memory."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"(\w+)=(\S+)", out.splitlines()[0]))
    memory = int(int(fields["RealMemory"]) * 0.95)
    return (f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={fields['CPUs']} "
            f"Boards={fields.get('Boards', 1)} SocketsPerBoard={fields['SocketsPerBoard']} "
            f"CoresPerSocket={fields['CoresPerSocket']} ThreadsPerCore={fields['ThreadsPerCore']} "
            f"RealMemory={memory} State=UNKNOWN"), int(fields["CPUs"]), memory


def slurm_conf(directory: Path, ports: tuple[int, int]) -> str:
    """slurm.conf of a one-node cluster whose files all live in `directory`."""
    d = directory.resolve()
    host = socket.gethostname().split(".")[0]
    node, cpus, memory = node_line()
    return "\n".join([
        "ClusterName=keras-transfer",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={ports[0]}",
        f"SlurmdPort={ports[1]}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        "MpiDefault=none",
        # No systemd or cgroups here: track processes through /proc, no task binding.
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "SchedulerType=sched/backfill",
        "ReturnToService=2",
        f"StateSaveLocation={d}/state",
        f"SlurmdSpoolDir={d}/spool",
        f"SlurmctldPidFile={d}/slurmctld.pid",
        f"SlurmdPidFile={d}/slurmd.pid",
        f"SlurmctldLogFile={d}/slurmctld.log",
        f"SlurmdLogFile={d}/slurmd.log",
        "AccountingStorageType=accounting_storage/none",
        # Every finished job (each array task too) with its state, StartTime and EndTime.
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={d}/jobcomp.log",
        "MinJobAge=86400",  # finished jobs stay visible to `scontrol show job`
        "KillWait=10",
        # A job that asks for no memory gets its CPUs' share, not the whole node's.
        f"DefMemPerCPU={memory // cpus}",
        node,
        f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def env(directory: Path = DEFAULT_DIR) -> dict:
    """The environment that points SLURM's commands at this cluster."""
    return {**os.environ, "SLURM_CONF": str(Path(directory).resolve() / "slurm.conf")}


def _munge_works() -> bool:
    check = subprocess.run("munge -n | unmunge", shell=True, capture_output=True)
    return check.returncode == 0


def start_munge() -> None:
    """munged as the munge user, with a key, unless one already answers."""
    if _munge_works():
        return
    if not MUNGE_KEY.exists():
        MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
        MUNGE_KEY.write_bytes(os.urandom(1024))
        shutil.chown(MUNGE_KEY, "munge", "munge")
        MUNGE_KEY.chmod(0o400)
    MUNGE_RUN.mkdir(parents=True, exist_ok=True)
    shutil.chown(MUNGE_RUN, "munge", "munge")
    started = subprocess.run(["runuser", "-u", "munge", "--", "munged"], capture_output=True,
                             text=True)
    # munged fails when another start won the race for its socket: that one answers soon.
    _wait(_munge_works, 10, "munged did not answer `munge -n | unmunge`"
          + (f" (munged: {started.stderr.strip()}; see /var/log/munge/munged.log)"
             if started.returncode else ""))


def _wait(ready, seconds: float, failure: str) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise ClusterError(failure)
        time.sleep(0.5)


def node_state(directory: Path = DEFAULT_DIR) -> str:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True,
                         env=env(directory))
    return out.stdout.strip() if out.returncode == 0 else ""


def running(directory: Path = DEFAULT_DIR) -> bool:
    return all(_pid(Path(directory) / name) for name in ("slurmctld.pid", "slurmd.pid"))


def _pid(path: Path) -> int | None:
    """The pid in a daemon's pid file, if that process is alive."""
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def start(directory: Path = DEFAULT_DIR, ports: tuple[int, int] = (6817, 6818)) -> Path:
    """Starts munged (if needed), slurmctld and slurmd with their files in `directory`; returns
    slurm.conf's path once the node is idle. A cluster already running there is left as it is."""
    if os.geteuid() != 0:
        raise ClusterError("the local SLURM cluster runs its daemons as root; run this as root")
    missing = missing_commands()
    if missing:
        raise ClusterError(f"{', '.join(missing)} not found: install them with "
                           f"`apt-get install -y {PACKAGES}` (as root)")
    directory = Path(directory).resolve()
    conf = directory / "slurm.conf"
    if running(directory):
        return conf
    for sub in ("state", "spool"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    conf.write_text(slurm_conf(directory, ports))
    start_munge()
    # -i: ignore state left by an earlier cluster in this folder (clear start, job ids from 1).
    for daemon in (["slurmctld", "-i"], ["slurmd"]):
        proc = subprocess.run([*daemon, "-f", str(conf)], capture_output=True, text=True,
                              env=env(directory))
        if proc.returncode != 0:
            raise ClusterError(f"{daemon[0]} did not start ({proc.stderr.strip()}); see "
                               f"{directory / (daemon[0] + '.log')}")
    try:
        _wait(lambda: node_state(directory) in ("idle", "mixed", "allocated"), 30,
              f"the node did not become idle (sinfo: {node_state(directory)!r}); see "
              f"{directory}/slurmctld.log and slurmd.log")
    except ClusterError:
        stop(directory)
        raise
    return conf


def stop(directory: Path = DEFAULT_DIR) -> None:
    """Stops the cluster's slurmd and slurmctld (their jobs are killed with them); munged,
    which other programs may use, keeps running."""
    directory = Path(directory).resolve()
    for name in ("slurmd.pid", "slurmctld.pid"):
        pid = _pid(directory / name)
        if pid is None:
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _pid(directory / name) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _pid(directory / name):
            os.kill(pid, signal.SIGKILL)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keras_transfer.grid.slurm_cluster",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("start", "stop", "env", "status"))
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help="folder of the cluster's config, state and logs "
                             f"(default {DEFAULT_DIR})")
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            conf = start(args.dir)
            print(f"SLURM is up: node {node_state(args.dir)}, config {conf}; "
                  f"run `export SLURM_CONF={conf}` before sbatch, squeue and launch.sh")
        elif args.action == "stop":
            stop(args.dir)
            print(f"SLURM in {args.dir} stopped")
        elif args.action == "env":
            print(f"export SLURM_CONF={Path(args.dir).resolve() / 'slurm.conf'}")
        else:
            state = node_state(args.dir) if running(args.dir) else "not running"
            print(f"SLURM in {args.dir}: {state}")
            return 0 if state != "not running" else 1
    except ClusterError as e:
        print(f"slurm_cluster: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
