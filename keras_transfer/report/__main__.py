"""The command line of `python -m keras_transfer.report` (see the package's docstring).

argparse, not absl: main's absl flags (config.py) are the package's one absl namespace, and
tools that run beside it in one process (tests, the grid) must not collide with it.
"""
from __future__ import annotations

import argparse
import sys

from keras_transfer import stopping

# The report is published whole or not at all (report/make.py), so a Ctrl-C leaves the old one.
INTERRUPTED = "report: stopped by SIGINT; the report folder is as it was; run the same command again"

# Run as `python -m`, not imported (the API, the tests): a Ctrl-C while the modules below load
# (scipy, pandas and matplotlib: most of start-up) is one line too.
AS_COMMAND = __name__ == "__main__"
if AS_COMMAND:
    stopping.catch_interrupts()
try:
    from keras_transfer import metrics
    from keras_transfer.metrics import TOP1
    from keras_transfer.report.findings import PAPER_METRIC, REFERENCES
    from keras_transfer.report.make import make_paper_report, make_report
    from keras_transfer.report.runs import ReportError
except BaseException as error:
    if AS_COMMAND:
        stopping.exit_if_interrupted(error, INTERRUPTED)
    raise


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m keras_transfer.report",
                                description="Table and figures of the transfer grid in WORKDIR.")
    p.add_argument("workdir", nargs="?", default=None,
                   help="root of the run directories (the grid's --workdir); none with --paper")
    p.add_argument("--paper", action="store_true",
                   help="report the authors' own nets (github.com/yosinski/convnet_transfer, "
                        "shipped in keras_transfer/report/data; no network access) instead of "
                        "a WORKDIR; needs --out")
    p.add_argument("--out", default=None, help="where to write the report (default WORKDIR/report)")
    p.add_argument("--reference", choices=sorted(REFERENCES), default=None,
                   help="overlay a published result on figure 2 (with --paper: yosinski2014)")
    p.add_argument("--dataset", default=None, help="which dataset, when WORKDIR holds several")
    p.add_argument("--model", default=None,
                   help="which network (main's --model), when WORKDIR holds runs of several (n "
                        "counts each network's own cut points, so one report is on one network)")
    p.add_argument("--metric", choices=list(TOP1), default=None,
                   help="top-1 used by the findings, figures and decomposition: top1_final (the "
                        f"default; with --paper {PAPER_METRIC}, the paper's), top1_best_fraction "
                        "(the mean of the best 10/450 of a net's evaluations, the paper's rule "
                        "in its proportion) or top1_best10_mean (refused for runs with fewer "
                        "than "
                        f"{metrics.MIN_EVALUATIONS_FOR_BEST10} evaluations)")
    p.add_argument("--no_hparams", dest="hparams", action="store_false",
                   help="with --paper: skip writing the authors' nets as TensorBoard HParams runs "
                        "(no TensorFlow import). A WORKDIR's nets need none: training writes "
                        "each net's hparams into its own TensorBoard events")
    return p


def runs_counted(read: int, reported: int) -> str:
    """The runs the report is made of (summary.md's count) and, when more were read, why the
    others are not among them."""
    if reported == read:
        return f"{reported} runs"
    return (f"{reported} runs ({read} read; base nets of a half no net targets and the "
            "convergence control's longer twins are not among them)")


def main(argv=None) -> int:
    p = parser()
    report = make(p.parse_args(argv), p)
    stopping.ignore_interrupts_once_done()  # published: INTERRUPTED would no longer be true
    print(f"[report] {runs_counted(report['runs'], report['reported'])}")
    for note in report["notes"]:
        print(f"[report] note: {note}")
    for name, path in report["files"].items():
        print(f"[report] wrote {path}")
    return 0


def make(args: argparse.Namespace, p: argparse.ArgumentParser) -> dict:
    """Writes the report the parsed options ask for and returns what make_report returns;
    `p.error` for options that do not go together, ReportError for runs it cannot report."""
    if args.paper:
        if args.workdir or args.dataset or args.model:
            p.error("--paper reports the authors' nets: give no WORKDIR, --dataset or --model")
        if not args.out:
            p.error("--paper needs --out=DIR (there is no WORKDIR to write into)")
        return make_paper_report(args.out, reference=args.reference or "yosinski2014",
                                 metric=args.metric or PAPER_METRIC, hparams=args.hparams)
    if args.workdir is None:
        p.error("give the WORKDIR of a grid, or --paper for the authors' nets")
    return make_report(args.workdir, args.out, reference=args.reference, dataset=args.dataset,
                       model=args.model, metric=args.metric or metrics.HEADLINE)


def run() -> None:
    stopping.catch_interrupts()  # as main does: a Ctrl-C a library swallows is still seen
    try:
        sys.exit(main())
    except ReportError as e:
        print(f"report: error: {e}", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, Exception) as error:
        stopping.exit_if_interrupted(error, INTERRUPTED)
        raise


if __name__ == "__main__":
    run()
