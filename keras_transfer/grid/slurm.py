"""The SLURM backend: submits the plan's unfinished nets as sbatch job arrays.

Dependants wait (`afterok`) on their own base's array task only, so a failed base holds back
just the nets that copy from it; tasks are requeued on preemption and resume from backups.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from data_prep.atomic import write_bytes_atomic
from keras_transfer.grid.errors import GridError
from keras_transfer.grid.plan import Plan

SLURM_TASK_SCRIPT = """#!/usr/bin/env bash
# One task of a keras_transfer grid array: runs line SLURM_ARRAY_TASK_ID (0-based) of the tasks
# file given as $1. With --requeue a preempted task starts again and the run resumes from its backup.
set -euo pipefail
cmd=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" "$1")
echo "[grid task ${SLURM_ARRAY_JOB_ID:-}_${SLURM_ARRAY_TASK_ID} on $(hostname)] $cmd"
eval "exec $cmd"
"""


@dataclasses.dataclass(frozen=True)
class SlurmResources:
    partition: str = ""
    gpus: int = 0
    time: str = ""
    cpus: int = 0
    account: str = ""
    max_parallel: int = 0  # array throttle (%N); 0: no limit

    def sbatch_flags(self) -> list[str]:
        flags = []
        if self.partition:
            flags.append(f"--partition={self.partition}")
        if self.account:
            flags.append(f"--account={self.account}")
        if self.gpus:
            flags.append(f"--gres=gpu:{self.gpus}")
        if self.time:
            flags.append(f"--time={self.time}")
        if self.cpus:
            flags.append(f"--cpus-per-task={self.cpus}")
        return flags


def sbatch_commands(plan: Plan, resources: SlurmResources, submit_dir: Path, stamp: str):
    """Per job array to submit: (tag, nets, tasks file, its text, sbatch arguments, after).

    Array "bases" holds the nets without dependencies (base nets, random-features control).
    The nets that copy from a base follow in one array per set of unfinished bases they wait
    for, with `--dependency=afterok:{dependency}`; `after` lists those bases' task indices in
    the first array, and submit_slurm fills in `<bases job id>_<task>` for each. So a failed
    base holds back only its own dependants, and dependants of bases already finished start
    at once.
    """
    todo = [net for net in plan.nets if not plan.is_done(net)]
    first = [net for net in todo if not net.needs]
    # A task trains a pack (plan.pack_sizes; one net by default); base nets are always alone.
    first_packs = plan.packs(first)
    task_of = {net.key: task for task, pack in enumerate(first_packs) for net in pack}
    waiting_on = {}  # tuple of base task indices -> the nets that wait for exactly those
    for net in todo:
        if net.needs:
            after = tuple(sorted(task_of[key] for key in net.needs if key in task_of))
            waiting_on.setdefault(after, []).append(net)
    groups = [("bases", first, ())]
    for after, nets in sorted(waiting_on.items()):
        # Named after the bases waited for, e.g. "after-random_0-seed0-baseA".
        waited = "+".join(first_packs[task][0].label.replace("/", "-") for task in after)
        groups.append((f"after-{waited}" if after else "dependants", nets, after))
    script = submit_dir / "task.sh"
    log_dir = Path(plan.workdir).resolve() / "logs" / "slurm"
    arrays = []
    for tag, nets, after in groups:
        if not nets:
            continue
        tasks = submit_dir / f"{stamp}-{tag}.tasks"
        packs = plan.packs(nets)
        text = "".join(shlex.join(plan.command(pack)) + "\n" for pack in packs)
        array = f"0-{len(packs) - 1}" + (f"%{resources.max_parallel}" if resources.max_parallel else "")
        args = ["sbatch", "--parsable", f"--array={array}", f"--job-name=kt-{plan.dataset}-{tag}",
                "--requeue", f"--chdir={os.getcwd()}", f"--output={log_dir}/%x-%A_%a.log"]
        args += resources.sbatch_flags()
        if after:
            # kill-on-invalid-dep: if a base fails, its dependants are cancelled, not left pending.
            args += ["--dependency=afterok:{dependency}", "--kill-on-invalid-dep=yes"]
        args += [str(script), str(tasks)]
        arrays.append((tag, nets, tasks, text, args, after))
    return script, log_dir, arrays


def submit_slurm(plan: Plan, resources: SlurmResources, out=sys.stdout) -> int:
    if shutil.which("sbatch") is None:
        raise GridError("sbatch not found on PATH: --backend=slurm needs a SLURM login node "
                        "(use --backend=local to train here)")
    submit_dir = Path(plan.workdir).resolve() / "slurm"
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    script, log_dir, arrays = sbatch_commands(plan, resources, submit_dir, stamp)
    if not arrays:
        print("[grid] every net is done; nothing to submit", file=out)
        return 0
    log_dir.mkdir(parents=True, exist_ok=True)
    script.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(script, SLURM_TASK_SCRIPT.encode(), mode=0o755)
    bases_job = None
    for tag, nets, tasks, lines, args, after in arrays:
        write_bytes_atomic(tasks, lines.encode(), mode=0o644)
        dependency = ":".join(f"{bases_job}_{task}" for task in after)
        args = [a.replace("{dependency}", dependency) for a in args]
        result = subprocess.run(args, capture_output=True, text=True)
        if result.returncode != 0:
            raise GridError(f"sbatch failed (exit {result.returncode}): {result.stderr.strip()}")
        job_id = result.stdout.strip().split(";")[0]
        if tag == "bases":
            bases_job = job_id
        waits = f", after base tasks {dependency}" if after else ""
        print(f"[grid] submitted {len(nets)} {tag} as array job {job_id}{waits} (tasks: {tasks})",
              file=out)
    print(f"[grid] logs: {log_dir}; watch with `squeue -u $USER`", file=out)
    return 0
