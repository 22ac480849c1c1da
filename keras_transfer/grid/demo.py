"""The one-command demo: the paper's experiment on Fashion-MNIST, from data to findings.

`./launch.sh demo [grid options] [-- flags for main]` sets up .venv and runs
`python -m keras_transfer.grid.demo` with the same arguments, in the repository (where flags/,
data/ and runs/ are). In order: every option is checked (a typo stops the demo before any
data is prepared), the random splits' halves are prepared where missing, the grid trains its
nets, the two base nets are compared layer by layer with CKA, the report is written and its
findings and convergence sections are printed.

The demo is the grid with other defaults: random splits 0-3, every net on half B (as each of
the paper's fine-tuned nets was trained on one half), so that each comparison is made within
one half, and the convergence control (baseA and baseB again on a schedule twice as long).
Any grid option given overrides its default; `--model=NAME` (main's flag, before or after
`--`) trains another network the same way into runs_NAME/ (for a network of one's own,
`--model=path/to/file.py:function`, runs_file_function/; naming.model_dirname).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from data_prep import layout
from keras_transfer import exit_status, naming
from keras_transfer.grid import __main__ as grid_cli
from keras_transfer.grid.errors import GridError
from keras_transfer.grid.plan import resolve_preset

# The demo runs in the repository: its preset, data/ and runs/ are there (relative --workdir
# and data paths are the repository's, as before the demo moved out of launch.sh).
REPO = Path(__file__).resolve().parents[2]
FLAGFILE = "flags/fashion_mnist.flags"
DEFAULT_SPLITS = "0,1,2,3"  # the paper's count of splits, and enough for intervals that decide
DEFAULT_RUNS = "runs"
# The grid options the demo sets unless the caller gives them (argparse keeps the last value).
DEFAULTS = ("--seeds=0", "--experiments=transfer,convergence", "--targets=B")
SECTIONS = ("## Findings", "## Convergence")  # printed from summary.md at the end


def _split_args(argv: list[str]) -> tuple[list[str], list[str], str | None]:
    """(grid options, main's flags, --model's value): --model is main's flag, accepted on
    either side of `--` and passed to main."""
    own, main, model = [], [], None
    target = own
    for arg in argv:
        if arg == "--" and target is own:
            target = main
        elif arg.startswith("--model="):
            model = arg.split("=", 1)[1]
        else:
            target.append(arg)
    if model:
        main.append(f"--model={model}")
    return own, main, model


def _value(options: list[str], name: str) -> str | None:
    """The last --name=VALUE among the options (argparse's rule), or None."""
    values = [a.split("=", 1)[1] for a in options if a.startswith(f"--{name}=")]
    return values[-1] if values else None


def grid_argv(argv: list[str]) -> list[str]:
    """The grid's command line for the demo's arguments: its defaults, then the caller's."""
    own, main, model = _split_args(argv)
    splits = _value(own, "splits") or DEFAULT_SPLITS
    if not re.fullmatch(r"[0-9]+(,[0-9]+)*", splits):
        raise GridError(f"--splits={splits}: the demo trains on random splits; give their "
                        "numbers, e.g. --splits=0,1 (the grid, ./launch.sh without demo, takes "
                        "other splits)")
    runs = (DEFAULT_RUNS if model in (None, "small")
            else f"{DEFAULT_RUNS}_{naming.model_dirname(model)}")
    defaults = [f"--flagfile={FLAGFILE}", f"--workdir={runs}", f"--splits={splits}", *DEFAULTS]
    # The random-features control on half B of the first split, unless the caller chooses
    # where it trains (the demo prepares random splits only, so not the whole dataset).
    if _value(own, "random_control") is None:
        defaults += ["--random_control=half", f"--random_splits={splits.split(',')[0]}"]
    return defaults + own + (["--", *main] if main else [])


def _python(*args: str) -> int:
    """Runs `python -m ...` with this interpreter; its exit status. A Ctrl-C is the child's to
    handle (the grid stops its nets with a backup, data_prep cleans up): passed on, and waited
    for, rather than killing the child mid-way as subprocess.run would."""
    proc = subprocess.Popen([sys.executable, "-m", *args])
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # a terminal's Ctrl-C reached the child too; kill -INT did not
            proc.send_signal(signal.SIGINT)


def run(argv: list[str]) -> int:
    if not (REPO / FLAGFILE).is_file():
        raise GridError(f"{REPO / FLAGFILE} is missing: the demo runs from a clone of the "
                        "repository (./launch.sh demo)")
    os.chdir(REPO)
    check_only = "--check_args" in argv
    argv = [a for a in argv if a != "--check_args"]
    command = grid_argv(argv)
    split_at = command.index("--") if "--" in command else len(command)
    options, main_flags = command[:split_at], command[split_at:]
    grid_cli.main(options + ["--check_args"] + main_flags)
    if check_only:
        return 0
    args = grid_cli.parser().parse_args(options)
    if args.dry_run:  # the grid's plan and compute; no data is prepared, nothing trains
        return grid_cli.main(command)
    preset = resolve_preset(args.flagfile, main_flags[1:])
    workdir = Path(args.workdir)
    for split in args.splits:
        split_dir = naming.split_dir(split)
        if all(layout.manifest_path(preset.data_dir, preset.dataset, split_dir, half).exists()
               for half in naming.HALVES):
            print(f"[demo] {layout.split_root(preset.data_dir, preset.dataset, split_dir)} is "
                  "prepared", flush=True)
        elif code := _python("data_prep", f"--source={preset.dataset}", f"--split={split}",
                             f"--out={preset.data_dir}"):
            if exit_status.stopped(code):
                return _stopped(code)
            print(f"[demo] preparing {split} failed; see above", file=sys.stderr)
            return 1
    status = _python("keras_transfer.grid", *command)
    if exit_status.stopped(status):  # stopped, not failed: no report of half a grid
        return _stopped(status)
    # Beyond the paper: per-layer CKA of the two bases against the measured transfer drop, and
    # their conv1 filters. Optional extras: a failure here does not fail the demo.
    first = naming.seed_dir(workdir, preset.dataset, naming.split_dir(args.splits[0]),
                            args.seeds[0])
    if _python("keras_transfer.analyze", "predict", str(workdir)):
        print("[demo] analyze predict failed; see above", flush=True)
    if _python("keras_transfer.analyze", "filters", str(first / "baseA"), str(first / "baseB")):
        print("[demo] analyze filters failed; see above", flush=True)
    # The report is written even when some nets failed: it leaves missing ones out with a note.
    # It comes last so that its summary.md includes the CKA prediction.
    if _python("keras_transfer.report", str(workdir)):
        return status or 1
    report = workdir / "report"
    print()
    print(summary_sections(report / "summary.md"))
    here = Path.cwd()
    print(f"[demo] figure:  {here / report / 'figure2.png'}")
    print(f"[demo] table:   {here / report / 'summary.md'}")
    print(f"[demo] CKA vs transfer drop: {here / report / 'predict.png'}")
    print(f"[demo] training curves: {Path(sys.executable).parent / 'tensorboard'} --logdir "
          f"{here / workdir}")
    return status


def _stopped(code: int) -> int:
    print("[demo] stopped; nothing is lost: run the same command again to resume", flush=True)
    return code


def summary_sections(path: Path) -> str:
    """The findings and the bases' convergence from summary.md: each heading down to the next."""
    text = path.read_text(encoding="utf-8")
    parts = []
    for heading in SECTIONS:
        if f"\n{heading}\n" in f"\n{text}":
            section = text.split(f"{heading}\n", 1)[1].split("\n## ", 1)[0]
            parts.append(f"{heading}\n{section.rstrip()}\n")
    return "\n".join(parts)


def main() -> None:
    try:
        sys.exit(run(sys.argv[1:]))
    except GridError as e:
        print(f"launch.sh: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # between the steps, or while checking the options
        sys.exit(_stopped(128 + signal.SIGINT))


if __name__ == "__main__":
    main()
