"""Command line of the grid: `python -m keras_transfer.grid [options] [-- flags for main]`.

launch.sh wraps it. It uses argparse rather than absl: the grid's own `--flagfile` names main's
preset and must not be expanded into the grid's flags, and everything after `--` is passed
through to main verbatim.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import signal
import sys

from keras_transfer import config as config_lib
from keras_transfer import exit_status, external_base, naming
from keras_transfer.grid.cost import dry_run, net_costs
from keras_transfer.grid.errors import GridError
from keras_transfer.grid.local import run_local
from keras_transfer.grid.nets import (DATA_CHOICES, DEFAULT_EXPERIMENTS, EXPERIMENTS,
                                      WHOLE_SPLIT, check_choices, enumerate_nets)
from keras_transfer.grid.plan import (Plan, check_external_base, check_own_model, flag_name,
                                      make_plan, preset_architecture, resolve_preset, stale_nets)
from keras_transfer.grid.slurm import SlurmResources, submit_slurm


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _seed_list(text: str) -> list[int]:
    seeds = _int_list(text)
    allowed, rule = config_lib.SEED_RANGE  # main's --seed
    bad = [s for s in seeds if not allowed(s)]
    if bad:
        raise argparse.ArgumentTypeError(f"{rule}, not {','.join(map(str, bad))}")
    return seeds


def _split_list(text: str) -> list[str]:
    """`0,1` -> random:0, random:1; anything else (natman, classes:FILE) is a split spec as is,
    checked as data_prep checks it."""
    from data_prep.errors import DataPrepError
    from data_prep.splits import parse_spec

    specs = [f"random:{x}" if x.strip().isdigit() else x.strip()
             for x in text.split(",") if x.strip()]
    for spec in specs:
        try:
            parse_spec(spec)
        except DataPrepError as e:
            raise argparse.ArgumentTypeError(f"{e} (integers S mean random:S)") from None
    return specs


def _name_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _count(env_var: str):
    """A non-negative integer option whose default may come from `env_var` (argparse converts
    a string default with the option's type, so a bad variable is named like a bad flag)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = -1
        if value < 0:
            raise argparse.ArgumentTypeError(f"expected a whole number 0 or more (from the flag or "
                                             f"${env_var}), got {text!r}")
        return value
    return parse


def _shared_split_folders(splits: list[str]) -> str:
    """Splits that are different specs but would share a data and run folder (classes:a/s.json
    and classes:b/s.json are both classes_s), described; empty if none."""
    by_folder: dict = {}
    for spec in splits:
        by_folder.setdefault(naming.split_dir(spec), []).append(spec)
    return "; ".join(f"{' and '.join(specs)} are both {folder}"
                     for folder, specs in by_folder.items() if len(set(specs)) > 1)


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="launch.sh",
        description="Train the Yosinski et al. 2014 grid of nets, locally or on SLURM. "
                    "Re-running the same command resumes: finished nets are skipped, unless they "
                    "no longer answer for the grid (see --overwrite).",
        epilog="Flags after `--` go to every `python -m keras_transfer.main` command "
               "(e.g. -- --steps=200 --model=small). With -- --base_model=PATH a network "
               "trained elsewhere stands in for baseA: give --targets=B.")
    p.add_argument("--backend", choices=("local", "slurm"), default="local")
    p.add_argument("--jobs", type=int, default=None,
                   help="local: runs at a time (default: the number of cores); slurm: array "
                        "throttle, tasks running at once per array (default: no limit)")
    p.add_argument("--pack", type=int, default=None,
                   help="most nets trained together by one process (one input stream, one "
                        "compiled step; `python -m keras_transfer.main --nets=...`). Default: "
                        "local, for the small model, each pack key's nets spread over the "
                        "--jobs processes; otherwise 1 (one net per process or SLURM task)")
    p.add_argument("--overwrite", action="store_true",
                   help="train again the finished nets that no longer answer for the grid "
                        "(trained with other settings or data, or from a base net retrained "
                        "since) and the nets that diverged; without it, the grid refuses to "
                        "start and lists them")
    p.add_argument("--experiments", type=_name_list, default=list(DEFAULT_EXPERIMENTS),
                   help=f"comma-separated, from {','.join(EXPERIMENTS)} (default: transfer,random)")
    p.add_argument("--splits", type=_split_list, default=["random:0"],
                   help="class splits: integers S mean random:S; default 0")
    p.add_argument("--seeds", type=_seed_list, default=[0], help="run seeds, e.g. 0,1 (default 0)")
    p.add_argument("--targets", type=_name_list, default=list(naming.HALVES),
                   help="halves the transferred nets are trained on: A,B (default) or B for only "
                        "BnB, BnB+, AnB, AnB+")
    p.add_argument("--selffer_targets", type=_name_list, default=None,
                   help="halves that get the selffer nets (BnB, BnB+): default every --targets "
                        "half; B as in the paper, whose selffer nets were trained on one half "
                        "per split while the transfer nets ran in both directions")
    p.add_argument("--random_control", default="whole", metavar="{" + ",".join(DATA_CHOICES) + "}",
                   help="where the random-features control trains: whole (default, the "
                        "paper's): per seed baseA and R1A..R7A on the whole dataset, data_prep's "
                        "--split=whole; half: R1B..R7B on half B of each --random_splits split, "
                        "against baseB")
    p.add_argument("--random_splits", type=_split_list, default=None,
                   help="--random_control=half: the splits that get RnB (default: every "
                        "--splits split), e.g. 0")
    p.add_argument("--layers", type=_int_list, default=None,
                   help="values of n (cut points copied), default 1,...,k of the model "
                        "(main's --model, e.g. -- --model=resnet_small): 1,...,7 for the "
                        "paper's caffenet and small")
    p.add_argument("--reduced_examples", type=_int_list, default=[],
                   help="examples per class of the reduced-volume base nets, e.g. 10,100,1000")
    p.add_argument("--reduced_data", default="whole", metavar="{" + ",".join(DATA_CHOICES) + "}",
                   help="where the reduced-volume base nets train: whole (default, the "
                        "paper's): baseA on the whole dataset per seed (data_prep --split=whole "
                        "--examples_per_class=N); half: baseA and baseB on each split's halves")
    p.add_argument("--reduced_steps", type=int, default=0,
                   help="main's --steps for the reduced-volume nets alone (the paper gave them "
                        "a schedule of their own); 0 (default): the same as every net")
    p.add_argument("--reduced_lr_step", type=int, default=0,
                   help="main's --lr_step for the reduced-volume nets alone; 0 (default): the "
                        "same as every net")
    p.add_argument("--flagfile", default=None, help="main's preset, e.g. flags/fashion_mnist.flags")
    p.add_argument("--workdir", default=None, help="root of the run directories (default: the preset's)")
    p.add_argument("--dry_run", action="store_true",
                   help="print every command and the compute the grid needs; run nothing")
    p.add_argument("--images_per_sec", type=float, default=1000.0,
                   help="training throughput the --dry_run hours are stated at (default 1000)")
    slurm = p.add_argument_group("slurm resources (flag, else environment variable)")
    slurm.add_argument("--partition", default=env("KT_SLURM_PARTITION", ""), help="$KT_SLURM_PARTITION")
    slurm.add_argument("--account", default=env("KT_SLURM_ACCOUNT", ""), help="$KT_SLURM_ACCOUNT")
    slurm.add_argument("--gpus", type=_count("KT_SLURM_GPUS"), default=env("KT_SLURM_GPUS", "0"),
                       help="GPUs per net, $KT_SLURM_GPUS")
    slurm.add_argument("--time", default=env("KT_SLURM_TIME", ""),
                       help="time limit per net, e.g. 2-00:00:00, $KT_SLURM_TIME")
    slurm.add_argument("--cpus", type=_count("KT_SLURM_CPUS"), default=env("KT_SLURM_CPUS", "0"),
                       help="CPUs per net, $KT_SLURM_CPUS")
    # launch.sh demo checks its options with this before it prepares any data.
    p.add_argument("--check_args", action="store_true", help=argparse.SUPPRESS)
    return p


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class Launch:
    """What a grid command did: its exit status and the plan it ran, submitted or printed (None
    if it stopped before planning, --check_args), with each net's result.json time before it
    ran (RunDir.result_mtime: None if there was none)."""
    status: int
    plan: Plan | None = None
    results_before: dict = dataclasses.field(default_factory=dict)


def main(argv=None, out=sys.stdout) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    grid_parser = parser()
    args, unknown = grid_parser.parse_known_args(argv)
    misplaced = misplaced_argument(grid_parser, unknown, extra)
    if misplaced:
        raise GridError(misplaced)
    if unknown:
        grid_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return launch(args, extra, out).status


def misplaced_argument(grid_parser, unknown: list[str], extra: list[str]) -> str | None:
    """What is wrong with a flag of main given before `--` (among the grid's `unknown`
    arguments) or an option of the grid only given after it, or None."""
    main_flags = config_lib.flag_names()
    for arg in unknown:
        if arg.startswith("-") and flag_name(arg, main_flags) in main_flags:
            return (f"{arg} is a flag of keras_transfer.main: give main's flags after `--`, "
                    f"e.g. ./launch.sh [grid options] -- {arg}")
    grid_options = {option.lstrip("-") for action in grid_parser._actions
                    for option in action.option_strings}
    for arg in extra:
        if arg.startswith("-") and flag_name(arg, main_flags) in grid_options - main_flags:
            return (f"{arg} is an option of the grid, not a flag of keras_transfer.main: give "
                    f"it before `--`, e.g. ./launch.sh {arg} -- [main's flags]")
    return None


def launch(args: argparse.Namespace, extra: list[str], out=sys.stdout) -> Launch:
    """Checks the grid's parsed options and main's flags for every net (`extra`, what follows
    `--`), plans the grid and runs it here (blocking), submits it to SLURM or prints it
    (--dry_run). Raises GridError for options that cannot run."""
    bad_targets = [t for t in args.targets if t not in naming.HALVES]
    if bad_targets or not args.targets:
        raise GridError(f"--targets must be a list of A and B, not {','.join(args.targets) or 'empty'}")
    if not args.experiments:
        raise GridError(f"--experiments is empty; choose from {','.join(EXPERIMENTS)}, "
                        f"e.g. --experiments={','.join(DEFAULT_EXPERIMENTS)}")
    if args.selffer_targets is not None and (not args.selffer_targets
                                             or not set(args.selffer_targets) <= set(args.targets)):
        raise GridError(f"--selffer_targets must be among --targets ({','.join(args.targets)}), "
                        f"not {','.join(args.selffer_targets) or 'empty'}")
    check_choices(random_control=args.random_control, reduced_data=args.reduced_data,
                  reduced_steps=args.reduced_steps, reduced_lr_step=args.reduced_lr_step)
    if WHOLE_SPLIT in args.splits:
        raise GridError(f"--splits={WHOLE_SPLIT}: that split has no half B to transfer to; the "
                        "grid trains its whole-dataset nets itself (--random_control=whole, "
                        "--reduced_data=whole)")
    if args.random_splits is not None and (not args.random_splits
                                           or not set(args.random_splits) <= set(args.splits)):
        raise GridError(f"--random_splits must be among --splits ({','.join(args.splits)}), "
                        f"not {','.join(args.random_splits) or 'empty'}")
    if args.random_splits is not None and args.random_control != "half":
        raise GridError(f"--random_splits chooses the splits of --random_control=half; the "
                        f"--random_control={args.random_control} control trains on the whole "
                        "dataset, not on splits: add --random_control=half or drop "
                        "--random_splits")
    if not args.splits or not args.seeds:
        raise GridError("--splits and --seeds need at least one value each")
    shared = _shared_split_folders(args.splits)
    if shared:
        raise GridError(f"--splits {shared}: their data and nets would overwrite each other; "
                        "give the split files different names")
    if args.jobs is not None and args.jobs < 1:
        raise GridError(f"--jobs must be at least 1, not {args.jobs}")
    if any(n <= 0 for n in args.reduced_examples):
        raise GridError("--reduced_examples must be positive numbers of examples per class")
    if not (math.isfinite(args.images_per_sec) and args.images_per_sec > 0):
        raise GridError(f"--images_per_sec must be a positive number, not {args.images_per_sec}")
    preset = resolve_preset(args.flagfile, extra)
    arch = preset_architecture(preset)
    max_n = arch.max_n
    if args.layers is None:
        args.layers = list(range(1, max_n + 1))
    # A value of --layers is the n of the nets that copy cut points (AnB, BnB, ...).
    bad_layers = [n for n in args.layers if naming.net_problem(
        "A", n, False, model=arch.name, cut_names=arch.cut_names)]
    if bad_layers or not args.layers:
        raise GridError(f"--layers must be values of n in 1..{max_n} (the cut points of "
                        f"--model={preset.model}), not {bad_layers or 'empty'}")
    if preset.base_model and (problem := external_base.path_problem(preset.base_model,
                                                                      preset.model)):
        raise GridError(problem)
    check_external_base(preset, args.splits[0], args.layers)
    nets = enumerate_nets(dataset=preset.dataset, splits=args.splits, seeds=args.seeds,
                          experiments=args.experiments, targets=args.targets, n_values=args.layers,
                          reduced_examples=args.reduced_examples,
                          selffer_targets=args.selffer_targets, random_splits=args.random_splits,
                          random_control=args.random_control, reduced_data=args.reduced_data,
                          reduced_steps=args.reduced_steps, reduced_lr_step=args.reduced_lr_step,
                          external_base=bool(preset.base_model))
    jobs = args.jobs or (available_cores() if args.backend == "local" else 0)
    threads = max(1, available_cores() // jobs) if args.backend == "local" and jobs > 1 else 0
    if args.pack is not None and args.pack < 1:
        raise GridError(f"--pack must be at least 1 net per process, not {args.pack}")
    if args.check_args:
        return Launch(0)
    pack = args.pack or (0 if args.backend == "local" else 1)
    plan = make_plan(nets, preset, workdir=args.workdir, flagfile=args.flagfile,
                     extra_flags=extra, threads=threads, pack=pack, processes=jobs or 1)
    check_own_model(preset, plan)
    before = {net.key: plan.run(net).result_mtime() for net in plan.nets}
    stale = stale_nets(plan, preset)
    listing = "\n  ".join(f"{key[0]}/seed{key[1]}/{key[2]}: {'; '.join(reasons)}"
                          for key, reasons in stale.items())
    if stale and not args.overwrite:
        raise GridError(f"{len(stale)} nets would be trained again, or reused for settings they "
                        f"were not trained with:\n  {listing}\nRetrain them with --overwrite "
                        "(each old run is kept until its new one is done), or give the settings "
                        "they were trained with.")
    if stale:
        plan.retrain = {key: plan.run(key).result_mtime() for key in stale}
        print(f"[grid] --overwrite: training {len(stale)} nets again:\n  {listing}", file=out)
    if args.dry_run:
        dry_run(plan, preset, args.images_per_sec, out=out)
        return Launch(0, plan, before)
    if args.backend == "slurm":
        resources = SlurmResources(partition=args.partition, gpus=args.gpus, time=args.time,
                                   cpus=args.cpus, account=args.account, max_parallel=args.jobs or 0)
        return Launch(submit_slurm(plan, resources, out=out), plan, before)
    missing = plan.missing_data()
    if missing:
        raise GridError("the grid needs data that is not prepared in "
                        f"{plan.data_dir}/{plan.dataset}; run first:\n  " + "\n  ".join(missing))
    return Launch(run_local(plan, jobs, out=out, costs=net_costs(plan, preset)), plan, before)


def run() -> None:
    try:
        status = main()
    except GridError as e:
        print(f"launch.sh: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C outside run_local's loop, which stops its nets itself
        print("launch.sh: stopped by SIGINT", file=sys.stderr)
        sys.exit(exit_status.INTERRUPTED)
    # The grid is over, its status decided: a further Ctrl-C (the second of two, landing after
    # the stopped nets have ended) must not kill the exit itself (status -2 instead of 130).
    for stop_signal in exit_status.STOP_SIGNALS:
        signal.signal(stop_signal, signal.SIG_IGN)
    sys.exit(status)


if __name__ == "__main__":
    run()
