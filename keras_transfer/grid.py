"""The paper's experiment as a grid of `python -m keras_transfer.main` runs, and how to launch it.

`enumerate_nets` lists the nets of the requested experiments with the base nets each one needs;
`run_local` trains them here, N at a time, resumably (a net whose result.json exists is skipped);
`submit_slurm` submits them as sbatch job arrays (the nets without dependencies, then one array
per base net for the nets that copy from it, with `--dependency=afterok` on that base's task);
`--dry_run` prints the commands and the compute they need.

Command line: `python -m keras_transfer.grid [options] [-- flags for main]` (launch.sh wraps it).
It uses argparse rather than absl: the grid's own `--flagfile` names main's preset and must not
be expanded into the grid's flags, and everything after `--` is passed through to main verbatim.
The preset plus those flags are resolved with main's own absl definitions (`config.py`), so the
grid finds run directories exactly where main will write them.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from data_prep.manifest import write_bytes_atomic
from keras_transfer import naming
from keras_transfer.locking import RunLock

EXPERIMENTS = ("transfer", "random", "dissimilar", "reduced")
DEFAULT_EXPERIMENTS = ("transfer", "random")
# Flags of main the grid sets on every command; giving them after `--` would contradict the grid.
GRID_OWNED_FLAGS = ("source", "target", "n", "finetune", "split", "seed", "workdir",
                    "examples_per_class", "flagfile")
CAFFENET_MULTIPLY_ADDS = 0.724e9  # design.md section 1, forward pass of one 227x227 image.
TRAIN_FLOPS_PER_MULTIPLY_ADD = 3 * 2  # forward + backward (about 2x forward); 2 FLOP per MAC.
MODULE = "keras_transfer.main"


class GridError(Exception):
    """Bad grid arguments or an unusable preset; the message says what to change."""


# --------------------------------------------------------------------------------------------
# Enumeration
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Net:
    """One net of the grid: the flags that define it, and where it lives."""
    experiment: str
    split: str
    split_dir: str
    seed: int
    source: str
    target: str
    n: int
    finetune: bool
    examples_per_class: int = 0

    @property
    def name(self) -> str:
        return naming.run_name(self.source, self.target, self.n, self.finetune)

    @property
    def condition(self) -> str:
        return naming.condition(self.source, self.target, self.n, self.finetune)

    @property
    def key(self) -> tuple:
        return (self.split_dir, self.seed, self.name)

    @property
    def label(self) -> str:
        return f"{self.split_dir}/seed{self.seed}/{self.name}"

    @property
    def needs(self) -> tuple:
        """Keys of the base nets this net copies layers from (none for bases and random features)."""
        if self.source in naming.HALVES and self.n > 0:
            return ((self.split_dir, self.seed, f"base{self.source}"),)
        return ()

    def main_flags(self) -> list[str]:
        flags = [f"--split={self.split}", f"--seed={self.seed}", f"--source={self.source}",
                 f"--target={self.target}", f"--n={self.n}"]
        if self.finetune:
            flags.append("--finetune")
        if self.examples_per_class:
            flags.append(f"--examples_per_class={self.examples_per_class}")
        return flags


def split_dirname(split: str, examples_per_class: int = 0) -> str:
    from data_prep.splits import split_dirname as data_prep_split_dirname
    return data_prep_split_dirname(split, examples_per_class or None)


def dissimilar_split(dataset: str) -> str:
    """ImageNet's dissimilar split is the paper's natural/man-made one; small datasets name theirs."""
    return "natman" if dataset.startswith("imagenet") else "dissimilar"


def transfer_set(experiment, split, seed, targets, n_values, epc=0) -> list[Net]:
    """baseA, baseB, then per n the selffer and transfer nets (frozen and fine-tuned) per target."""
    sd = split_dirname(split, epc)
    nets = [Net(experiment, split, sd, seed, "none", h, 0, False, epc) for h in naming.HALVES]
    for n in n_values:
        for target in targets:
            other = naming.other_half(target)
            for source in (target, other):          # BnB, BnB+, AnB, AnB+ (target B)
                for finetune in (False, True):
                    nets.append(Net(experiment, split, sd, seed, source, target, n, finetune, epc))
    return nets


def enumerate_nets(*, dataset: str, splits, seeds, experiments=DEFAULT_EXPERIMENTS,
                   targets=naming.HALVES, n_values=range(1, naming.MAX_N + 1),
                   reduced_examples=()) -> list[Net]:
    """Every net of the requested experiments, bases first, each net listed once.

    transfer: per split and seed, baseA, baseB and for each n BnB, BnB+, AnB, AnB+ (and, for
    target A, AnA, AnA+, BnA, BnA+): 2 + 28 + 28 nets. random: the random-features control R nB
    (target B only, as in the paper): 7 nets. dissimilar: the transfer set on the dataset's
    dissimilar split, per seed. reduced: baseA and baseB per examples-per-class value.
    """
    unknown = sorted(set(experiments) - set(EXPERIMENTS))
    if unknown:
        raise GridError(f"unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(EXPERIMENTS)}")
    if "reduced" in experiments and not reduced_examples:
        raise GridError("--experiments=reduced needs --reduced_examples=N1,N2,... "
                        "(training examples per class of each reduced base net)")
    nets: list[Net] = []
    for split in splits:
        for seed in seeds:
            if "transfer" in experiments:
                nets += transfer_set("transfer", split, seed, targets, n_values)
            if "random" in experiments:
                sd = split_dirname(split)
                nets += [Net("random", split, sd, seed, "random", "B", n, False) for n in n_values]
            if "reduced" in experiments:
                for epc in reduced_examples:
                    sd = split_dirname(split, epc)
                    nets += [Net("reduced", split, sd, seed, "none", h, 0, False, epc)
                             for h in naming.HALVES]
    if "dissimilar" in experiments:
        for seed in seeds:
            nets += transfer_set("dissimilar", dissimilar_split(dataset), seed, targets, n_values)
    unique = {}
    for net in nets:                                # a run dir asked for twice is one net
        unique.setdefault(net.key, net)
    # Stable sort: base nets, then the random-features control, then nets that copy from a base.
    return sorted(unique.values(), key=lambda net: (bool(net.needs), net.n > 0))


# --------------------------------------------------------------------------------------------
# The plan: nets + the resolved preset -> commands and paths
# --------------------------------------------------------------------------------------------

def resolve_preset(flagfile: str | None, extra_flags: list[str]):
    """main's Config for the flagfile and pass-through flags, parsed with main's own flag definitions."""
    from absl import flags
    from keras_transfer import config
    for arg in extra_flags:
        name = arg.lstrip("-").split("=", 1)[0]
        name = name[2:] if name.startswith("no") and name[2:] in GRID_OWNED_FLAGS else name
        if not arg.startswith("-"):
            raise GridError(f"unexpected argument {arg!r} after `--`: only flags of "
                            f"keras_transfer.main go there (e.g. --steps=100)")
        if name in GRID_OWNED_FLAGS:
            raise GridError(f"--{name} is set by the grid for every net; use the grid's own option "
                            "(--splits, --seeds, --workdir, --flagfile, --experiments) instead of "
                            "passing it after `--`")
    if flagfile is not None and not Path(flagfile).is_file():
        raise GridError(f"flagfile {flagfile} does not exist; give a file of main's flags, "
                        "e.g. --flagfile=flags/fashion_mnist.flags")
    config.define_flags()
    argv = ["keras_transfer.main"] + ([f"--flagfile={flagfile}"] if flagfile else []) + extra_flags
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(argv)
        return config.from_flags(flags.FLAGS)
    except flags.Error as e:
        raise GridError(f"main's flags do not parse: {e}") from e
    finally:
        flags.FLAGS.unparse_flags()


@dataclasses.dataclass
class Plan:
    """The nets, and everything needed to turn one into a command and find its files."""
    nets: list
    workdir: str
    dataset: str
    data_dir: str
    flagfile: str | None
    extra_flags: list
    python: str = sys.executable
    threads: int = 0  # > 0: add --threads=N to every command (several local runs share the cores)

    def command(self, net: Net) -> list[str]:
        cmd = [self.python, "-m", MODULE]
        if self.flagfile:
            cmd.append(f"--flagfile={self.flagfile}")
        cmd += self.extra_flags
        cmd += [f"--workdir={self.workdir}"] + net.main_flags()
        if self.threads and not any(a.lstrip("-").startswith("threads") for a in self.extra_flags):
            cmd.append(f"--threads={self.threads}")
        return cmd

    def run_dir(self, net_or_key) -> Path:
        split_dir, seed, name = net_or_key.key if isinstance(net_or_key, Net) else net_or_key
        return naming.run_dir(self.workdir, self.dataset, split_dir, seed, name)

    def is_done(self, net_or_key) -> bool:
        return (self.run_dir(net_or_key) / "result.json").is_file()

    def log_path(self, net: Net) -> Path:
        return Path(self.workdir) / "logs" / self.dataset / net.split_dir / f"seed{net.seed}" / f"{net.name}.log"

    def lock_path(self, net: Net) -> Path:
        return self.log_path(net).with_suffix(".lock")

    def missing_data(self) -> list[str]:
        """The data_prep commands still needed: one per (split, examples per class) without manifests."""
        needed = {}
        for net in self.nets:
            halves = {net.target} | ({net.source} if net.source in naming.HALVES else set())
            for half in halves:
                manifest = Path(self.data_dir) / self.dataset / net.split_dir / half / "manifest.json"
                if not manifest.is_file():
                    cmd = (f"python -m data_prep --source={self.dataset} --split={net.split} "
                           f"--out={self.data_dir}")
                    if net.examples_per_class:
                        cmd += f" --examples_per_class={net.examples_per_class}"
                    needed[cmd] = None
        return list(needed)


# Flags of main that change what a finished net is; a finished net trained with other values is
# still skipped (result.json means done), but the launcher says so.
TRAINING_FLAGS = ("model", "fc8_outputs", "crop", "batch_size", "steps", "epochs", "lr", "lr_step",
                  "momentum", "weight_decay", "dropout", "dataset")


def settings_drift(plan: Plan, preset) -> list[str]:
    """Finished nets whose config.json disagrees with the preset on a training flag."""
    messages = []
    for net in plan.nets:
        config_path = plan.run_dir(net) / "config.json"
        if not plan.is_done(net) or not config_path.is_file():
            continue
        try:
            config = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        diffs = [f"{k}={config[k]} (now {getattr(preset, k)})" for k in TRAINING_FLAGS
                 if k in config and config[k] != getattr(preset, k)]
        if diffs:
            messages.append(f"{net.label} is done but was trained with {', '.join(diffs)}; "
                            f"it is kept: delete {plan.run_dir(net)} to retrain it")
    return messages


def make_plan(nets, preset, *, workdir=None, flagfile=None, extra_flags=(), threads=0) -> Plan:
    return Plan(nets=list(nets), workdir=workdir or preset.workdir, dataset=preset.dataset,
                data_dir=preset.data_dir, flagfile=flagfile, extra_flags=list(extra_flags),
                threads=threads)


# --------------------------------------------------------------------------------------------
# Dry run: commands and compute
# --------------------------------------------------------------------------------------------

def images_per_net(preset, plan: Plan, net: Net) -> float | None:
    """Training images one net sees: steps x batch, or epochs x the target half's training count."""
    if preset.steps > 0:
        return float(preset.steps * preset.batch_size)
    manifest = Path(plan.data_dir) / plan.dataset / net.split_dir / net.target / "manifest.json"
    if not manifest.is_file():
        return None
    return preset.epochs * json.loads(manifest.read_text())["counts"]["train"]


def multiply_adds(preset, plan: Plan) -> tuple[float, str]:
    """Forward multiply-adds per image of the preset's model, and where the number comes from."""
    shape, classes, note = None, preset.fc8_outputs or None, ""
    for net in plan.nets:
        manifest = Path(plan.data_dir) / plan.dataset / net.split_dir / net.target / "manifest.json"
        if manifest.is_file():
            m = json.loads(manifest.read_text())
            shape, classes = m["image_shape"], classes or m["num_classes"]
            break
    if shape is None:  # not prepared yet: the paper's 256 px photos, or the 28 px default dataset
        shape = [256, 256, 3] if preset.model == "caffenet" else [28, 28, 1]
        note = ", image size assumed (no manifest yet)"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from keras_transfer import data, models
        crop = preset.crop or data.default_crop(preset.model, min(shape[0], shape[1]))
        model = models.build(preset.model, classes or 500, (crop, crop, shape[2]))
        return float(models.multiply_adds(model)), f"{preset.model} at {crop}x{crop}x{shape[2]}{note}"
    except ImportError as e:
        if preset.model == "caffenet":
            return CAFFENET_MULTIPLY_ADDS, "caffenet, design.md's 0.724 G"
        return 0.0, f"unknown: {e}"


def dry_run(plan: Plan, preset, images_per_sec: float, out=sys.stdout) -> None:
    todo = [net for net in plan.nets if not plan.is_done(net)]
    print(f"# {len(plan.nets)} nets in {plan.workdir}/{plan.dataset}: {len(plan.nets) - len(todo)} "
          f"done, {len(todo)} to run", file=out)
    for stage, nets in stages(todo):
        print(f"# {stage}: {len(nets)} nets", file=out)
        for net in nets:
            print(shlex.join(plan.command(net)), file=out)
    missing = plan.missing_data()
    if missing:
        print("# data not prepared yet; run first:", file=out)
        for cmd in missing:
            print(f"#   {cmd}", file=out)
    counts = [images_per_net(preset, plan, net) for net in todo]
    images = sum(c for c in counts if c is not None)
    macs, macs_source = multiply_adds(preset, plan)
    gflop = TRAIN_FLOPS_PER_MULTIPLY_ADD * macs / 1e9
    unknown = sum(c is None for c in counts)
    print(f"# compute: {images:,.0f} images trained ({len(todo) - unknown} nets"
          + (f"; {unknown} nets use --epochs without a manifest to count, left out" if unknown else "")
          + ")", file=out)
    print(f"#   x {gflop:.4g} GFLOP per trained image (3 x 2 x {macs / 1e9:.4g} G forward "
          f"multiply-adds, {macs_source}) = {images * gflop / 1e6:.4g} PFLOP", file=out)
    print(f"#   = {images / images_per_sec / 3600:.4g} hours at {images_per_sec:g} images/s "
          "(set --images_per_sec to your measured rate; frozen nets train somewhat faster)", file=out)


def stages(nets):
    """Nets without dependencies (bases, random features), then the nets that copy from a base."""
    first = [net for net in nets if not net.needs]
    second = [net for net in nets if net.needs]
    return [(name, group) for name, group in
            (("stage 1, no dependencies", first), ("stage 2, after their base nets", second)) if group]


# --------------------------------------------------------------------------------------------
# Local backend
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Running:
    net: Net
    proc: subprocess.Popen
    lock: RunLock
    log: object
    started: float


class _Stop(Exception):
    """SIGTERM (or SIGINT) reached the launcher: stop the runs, let them save, exit."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def run_local(plan: Plan, jobs: int, out=sys.stdout, poll_seconds: float = 0.5) -> int:
    """Trains the nets that are not done, `jobs` at a time, base nets before their dependants.

    Returns 0 if every net ends with a result.json, 1 otherwise. A net whose base failed here is
    failed at once, naming the base. A net locked by another launcher is left to it and waited for.
    """
    total = len(plan.nets)
    done = {net.key for net in plan.nets if plan.is_done(net)}
    pending = [net for net in plan.nets if net.key not in done]
    failed: dict = {}  # key -> reason
    running: dict = {}  # key -> _Running
    skipped = len(done)

    def say(message):
        left = len(pending)
        print(f"[grid] {len(done)} done, {len(running)} running, {left} left, {len(failed)} failed "
              f"| {message}", file=out, flush=True)

    say(f"{total} nets, {skipped} already done, {jobs} at a time")

    def on_signal(signum, frame):
        raise _Stop(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while pending or running:
            for key, r in list(running.items()):
                code = r.proc.poll()
                if code is None:
                    continue
                r.lock.release()
                r.log.close()
                del running[key]
                secs = time.monotonic() - r.started
                if code == 0 and plan.is_done(r.net):
                    done.add(key)
                    say(f"finished {r.net.label} in {secs:.0f}s")
                else:
                    why = f"exit code {code}" if code else "exited 0 without result.json"
                    failed[key] = f"{why}; see {plan.log_path(r.net)}"
                    say(f"FAILED {r.net.label} ({failed[key]})")
            for net in list(pending):
                if plan.is_done(net):                     # finished by another launcher
                    pending.remove(net)
                    done.add(net.key)
                    say(f"{net.label} was finished by another launcher")
                    continue
                bad = [k for k in net.needs if k in failed]
                if bad:
                    pending.remove(net)
                    base = bad[0][2]
                    failed[net.key] = f"not run: its base net {base} failed ({failed[bad[0]]})"
                    say(f"FAILED {net.label}: {failed[net.key]}")
                    continue
                if len(running) >= jobs or not all(plan.is_done(k) for k in net.needs):
                    continue
                lock = RunLock(plan.lock_path(net))
                if not lock.acquire():                    # another launcher is training it
                    continue
                if plan.is_done(net):                     # it finished between our checks
                    lock.release()
                    continue
                pending.remove(net)
                running[net.key] = _start(plan, net, lock)
                say(f"started {net.label} -> {plan.log_path(net)}")
            if pending or running:
                time.sleep(poll_seconds)
    except _Stop as stop:
        say(f"{stop}: stopping {len(running)} running nets (they save a backup and resume next time)")
        _stop_all(running.values())
        return 128 + stop.signum
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    ran = len(done) - skipped
    say(f"grid finished: {ran} trained, {skipped} were already done, {len(failed)} failed")
    for key, why in failed.items():
        print(f"[grid]   failed {key[0]}/seed{key[1]}/{key[2]}: {why}", file=out)
    return 1 if failed else 0


def _start(plan: Plan, net: Net, lock: RunLock) -> _Running:
    cmd = plan.command(net)
    log = open(plan.log_path(net), "a")
    log.write(f"# {datetime.datetime.now().isoformat(timespec='seconds')} {socket.gethostname()} "
              f"launcher pid {os.getpid()}: {shlex.join(cmd)}\n")
    log.flush()
    # The run inherits the lock's file descriptor, so the lock outlives a killed launcher exactly
    # as long as the run itself does.
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            pass_fds=(lock.fd,))
    return _Running(net, proc, lock, log, time.monotonic())


def _stop_all(runs, grace_seconds: float = 60.0) -> None:
    runs = list(runs)
    for r in runs:
        if r.proc.poll() is None:
            r.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for r in runs:
        try:
            r.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait()
        r.lock.release()
        r.log.close()


# --------------------------------------------------------------------------------------------
# SLURM backend
# --------------------------------------------------------------------------------------------

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
    task_of = {net.key: task for task, net in enumerate(first)}
    waiting_on = {}  # tuple of base task indices -> the nets that wait for exactly those
    for net in todo:
        if net.needs:
            after = tuple(sorted(task_of[key] for key in net.needs if key in task_of))
            waiting_on.setdefault(after, []).append(net)
    groups = [("bases", first, ())]
    for after, nets in sorted(waiting_on.items()):
        # Named after the bases waited for, e.g. "after-random_0-seed0-baseA".
        waited = "+".join(first[task].label.replace("/", "-") for task in after)
        groups.append((f"after-{waited}" if after else "dependants", nets, after))
    script = submit_dir / "task.sh"
    log_dir = Path(plan.workdir).resolve() / "logs" / "slurm"
    arrays = []
    for tag, nets, after in groups:
        if not nets:
            continue
        tasks = submit_dir / f"{stamp}-{tag}.tasks"
        text = "".join(shlex.join(plan.command(net)) + "\n" for net in nets)
        array = f"0-{len(nets) - 1}" + (f"%{resources.max_parallel}" if resources.max_parallel else "")
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


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _split_list(text: str) -> list[str]:
    """`0,1` -> random:0, random:1; anything else (natman, classes:FILE) is a split spec as is."""
    return [f"random:{x}" if x.strip().isdigit() else x.strip() for x in text.split(",") if x.strip()]


def _name_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="launch.sh",
        description="Train the Yosinski et al. 2014 grid of nets, locally or on SLURM. "
                    "Re-running the same command resumes: nets with a result.json are skipped.",
        epilog="Flags after `--` go to every `python -m keras_transfer.main` command "
               "(e.g. -- --steps=200 --model=small).")
    p.add_argument("--backend", choices=("local", "slurm"), default="local")
    p.add_argument("--jobs", type=int, default=None,
                   help="local: runs at a time (default: the number of cores); slurm: array "
                        "throttle, tasks running at once per array (default: no limit)")
    p.add_argument("--experiments", type=_name_list, default=list(DEFAULT_EXPERIMENTS),
                   help=f"comma-separated, from {','.join(EXPERIMENTS)} (default: transfer,random)")
    p.add_argument("--splits", type=_split_list, default=["random:0"],
                   help="class splits: integers S mean random:S; default 0")
    p.add_argument("--seeds", type=_int_list, default=[0], help="run seeds, e.g. 0,1 (default 0)")
    p.add_argument("--targets", type=_name_list, default=list(naming.HALVES),
                   help="halves the transferred nets are trained on: A,B (default) or B for only "
                        "BnB, BnB+, AnB, AnB+")
    p.add_argument("--layers", type=_int_list, default=list(range(1, naming.MAX_N + 1)),
                   help="values of n (layers copied), default 1,...,7")
    p.add_argument("--reduced_examples", type=_int_list, default=[],
                   help="examples per class of the reduced-volume base nets, e.g. 10,100,1000")
    p.add_argument("--flagfile", default=None, help="main's preset, e.g. flags/fashion_mnist.flags")
    p.add_argument("--workdir", default=None, help="root of the run directories (default: the preset's)")
    p.add_argument("--dry_run", action="store_true",
                   help="print every command and the compute the grid needs; run nothing")
    p.add_argument("--images_per_sec", type=float, default=1000.0,
                   help="training throughput the --dry_run hours are stated at (default 1000)")
    slurm = p.add_argument_group("slurm resources (flag, else environment variable)")
    slurm.add_argument("--partition", default=env("KT_SLURM_PARTITION", ""), help="$KT_SLURM_PARTITION")
    slurm.add_argument("--account", default=env("KT_SLURM_ACCOUNT", ""), help="$KT_SLURM_ACCOUNT")
    slurm.add_argument("--gpus", type=int, default=int(env("KT_SLURM_GPUS", "0")),
                       help="GPUs per net, $KT_SLURM_GPUS")
    slurm.add_argument("--time", default=env("KT_SLURM_TIME", ""),
                       help="time limit per net, e.g. 2-00:00:00, $KT_SLURM_TIME")
    slurm.add_argument("--cpus", type=int, default=int(env("KT_SLURM_CPUS", "0")),
                       help="CPUs per net, $KT_SLURM_CPUS")
    return p


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def main(argv=None, out=sys.stdout) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    args = parser().parse_args(argv)
    bad_targets = [t for t in args.targets if t not in naming.HALVES]
    bad_layers = [n for n in args.layers if not 1 <= n <= naming.MAX_N]
    if bad_targets or not args.targets:
        raise GridError(f"--targets must be a list of A and B, not {','.join(args.targets) or 'empty'}")
    if bad_layers or not args.layers:
        raise GridError(f"--layers must be values of n in 1..{naming.MAX_N}, not {bad_layers or 'empty'}")
    if not args.splits or not args.seeds:
        raise GridError("--splits and --seeds need at least one value each")
    if args.jobs is not None and args.jobs < 1:
        raise GridError(f"--jobs must be at least 1, not {args.jobs}")
    if any(n <= 0 for n in args.reduced_examples):
        raise GridError("--reduced_examples must be positive numbers of examples per class")
    if args.images_per_sec <= 0:
        raise GridError("--images_per_sec must be positive")
    preset = resolve_preset(args.flagfile, extra)
    nets = enumerate_nets(dataset=preset.dataset, splits=args.splits, seeds=args.seeds,
                          experiments=args.experiments, targets=args.targets, n_values=args.layers,
                          reduced_examples=args.reduced_examples)
    jobs = args.jobs or (available_cores() if args.backend == "local" else 0)
    threads = max(1, available_cores() // jobs) if args.backend == "local" and jobs > 1 else 0
    plan = make_plan(nets, preset, workdir=args.workdir, flagfile=args.flagfile,
                     extra_flags=extra, threads=threads)
    for message in settings_drift(plan, preset):
        print(f"[grid] warning: {message}", file=out)
    if args.dry_run:
        dry_run(plan, preset, args.images_per_sec, out=out)
        return 0
    if args.backend == "slurm":
        resources = SlurmResources(partition=args.partition, gpus=args.gpus, time=args.time,
                                   cpus=args.cpus, account=args.account, max_parallel=args.jobs or 0)
        return submit_slurm(plan, resources, out=out)
    missing = plan.missing_data()
    if missing:
        raise GridError("the grid needs data that is not prepared in "
                        f"{plan.data_dir}/{plan.dataset}; run first:\n  " + "\n  ".join(missing))
    return run_local(plan, jobs, out=out)


def run() -> None:
    try:
        sys.exit(main())
    except GridError as e:
        print(f"launch.sh: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
