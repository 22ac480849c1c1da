"""The project's commands as Python functions, for scripts and notebooks.

    import keras_transfer as kt

    kt.prepare_data(source="synthetic", split="random:0", out="data")
    summary = kt.run_grid(splits=[0], experiments=["transfer"], workdir="runs",
                          data_dir="data", dataset="synthetic", steps=40)
    results = kt.load_results("runs")   # one row per finished net, as results.csv
    report = kt.make_report("runs")     # runs/report/: summary.md, findings.csv, figures
    print(report.findings)

Each function takes its command's options as keyword arguments with the flags' names and
values, checks them as the command does and runs the command's own code:

    prepare_data   python -m data_prep                 (its flags: --help)
    train_net      python -m keras_transfer.main       (its flags: --help)
    run_grid       python -m keras_transfer.grid       (./launch.sh --help, and main's flags
                                                        for every net)
    load_results   results.csv of python -m keras_transfer.report WORKDIR
    make_report    python -m keras_transfer.report     (its flags: --help)

A list is a comma-separated value (`splits=[0, 1]` is `--splits=0,1`), True and False turn a
switch on and off, None leaves an option at its default. A name the command does not know
raises OptionError naming the closest ones; bad input raises Error with the command's one-line
message; Ctrl-C raises KeyboardInterrupt (training nets save a backup first, and the same call
resumes them). docs/examples/from_python.py runs the whole experiment on tiny synthetic data.

Nothing heavy is imported until a function is called: TensorFlow loads with train_net (which
trains in this process), the report's pandas with load_results and make_report.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import sys
from pathlib import Path


class Error(Exception):
    """Bad input, or a step that could not be done; the message is the one line that the
    command line prints for it, saying what was wrong and how to fix it."""


class OptionError(Error, TypeError):
    """A keyword argument that is not an option of the command."""


def prepare_data(**options) -> Path:
    """Prepares a class split of a dataset as `python -m data_prep` does; returns its folder,
    OUT/<dataset>/<split_dir>, which holds the halves A/ and B/ (A/ alone for split="whole").

    The options are data_prep's flags, with its defaults: source (fashion_mnist, synthetic,
    tfds:NAME[/CONFIG], folder:ROOT), split (random:S, natman, dissimilar, classes:FILE,
    whole), out (the data folder: train_net's and run_grid's data_dir), examples_per_class,
    image_size, overwrite, progress, ...; for source="synthetic" also synthetic_num_classes,
    synthetic_image_size, synthetic_train_per_class, ... Example:

        kt.prepare_data(source="synthetic", split="random:0", out="data",
                        synthetic_num_classes=10, synthetic_train_per_class=40)
    """
    from data_prep import sources
    from data_prep.errors import DataPrepError
    from data_prep.prepare import prepare

    signature = inspect.signature(prepare)
    synthetic = sources.synthetic_options()
    arguments = [name for name in signature.parameters if name != "synthetic"]
    _check_names("prepare_data", options, arguments + synthetic,
                 "the flags of python -m data_prep --help")
    given = _given(options)
    call = signature.bind(**{k: v for k, v in given.items() if k not in synthetic})
    call.apply_defaults()
    try:
        call.arguments["synthetic"] = sources.synthetic_spec(
            call.arguments["source"], {k: v for k, v in given.items() if k in synthetic})
        halves = prepare(*call.args, **call.kwargs)
    except (DataPrepError, OSError) as e:
        raise Error(str(e)) from None
    return next(iter(halves.values())).parent


def train_net(**flags) -> dict:
    """Trains one net in this process, as `python -m keras_transfer.main` does, and returns its
    result record (what its result.json holds: top-1, history, steps, ...).

    The options are main's flags, with its defaults (the Fashion-MNIST preset), checked as
    main checks them: source, target, n, finetune, model, data_dir, dataset, split, steps,
    lr, seed, workdir, ... and flagfile for a preset (flags/*.flags). A finished net is not
    trained again; a stopped one resumes from its backup. Example:

        kt.train_net(source="A", n=3, finetune=True, data_dir="data", workdir="runs")

    TensorFlow's process-wide settings (threads, op determinism) stay as the first net set
    them; run_grid trains each net in a process of its own.
    """
    from data_prep import quiet_tensorflow
    from keras_transfer import config as config_lib
    from keras_transfer import exit_status

    quiet_tensorflow.import_tensorflow()  # first, as in main: checking a flag may import it
    names = [field.name for field in dataclasses.fields(config_lib.Config)] + ["flagfile"]
    _check_names("train_net", flags, names,
                 "the flags of python -m keras_transfer.main --help")
    try:
        config = config_lib.resolve(None, _flag_argv(_given(flags)))
    except config_lib.ConfigError as e:
        raise Error(str(e)) from None
    # main's own code from here on (it defines main's absl flags, which nothing here reads).
    from keras_transfer import main as command_line

    outcomes, stopped = command_line.train_configs([config])
    if stopped is None:
        if not isinstance(outcomes[0], BaseException):
            return outcomes[0]
        stopped = command_line.failure(outcomes[0], [config])
        if stopped is None:  # not an error main expects: a bug, with its traceback
            raise outcomes[0]
    status, line = stopped
    if status == exit_status.INTERRUPTED:
        raise KeyboardInterrupt(line)
    raise Error(line.removeprefix("error: "))


@dataclasses.dataclass(frozen=True)
class GridSummary:
    """What run_grid did. `status`: the grid command's exit status (0: every net is done; 1:
    some failed; 143: some were stopped and the same call resumes them). Nets are named
    split_dir/seed<k>/name: `trained` by this call, `already_done` before it (skipped),
    `unfinished` with why ("not finished; see LOG", "diverged; see LOG", "planned" for
    dry_run=True, "submitted" for backend="slurm")."""
    status: int
    trained: list
    already_done: list
    unfinished: dict

    @property
    def ok(self) -> bool:
        return not self.unfinished

    def __str__(self) -> str:
        lines = [f"{len(self.trained)} trained, {len(self.already_done)} already done, "
                 f"{len(self.unfinished)} unfinished (exit status {self.status})"]
        lines += [f"  {net}: {why}" for net, why in self.unfinished.items()]
        return "\n".join(lines)


def run_grid(**options) -> GridSummary:
    """Trains the paper's grid of nets as `python -m keras_transfer.grid` (./launch.sh) does:
    each net, or pack of nets, in a process of its own, `jobs` at a time, base nets first;
    blocks until they end, printing the grid's progress; returns a GridSummary. Nets already
    done are skipped, so the same call resumes a stopped grid.

    The options are the grid's flags (splits, seeds, experiments, targets, layers, jobs,
    pack, workdir, flagfile, overwrite, dry_run, backend, ...) and main's flags, which go to
    every net (data_dir, dataset, model, steps, lr, ...: what `launch.sh -- --steps=100`
    passes after `--`). Example:

        kt.run_grid(splits=[0, 1], experiments=["transfer"], layers=[1, 4, 7],
                    workdir="runs", data_dir="data", steps=200)
    """
    from keras_transfer import config as config_lib
    from keras_transfer import exit_status
    from keras_transfer.grid import __main__ as command_line
    from keras_transfer.grid.errors import GridError
    from keras_transfer.grid.plan import GRID_OWNED_FLAGS

    parser = command_line.parser()
    grid_flags = _options_of(parser)
    main_flags = [field.name for field in dataclasses.fields(config_lib.Config)]
    _check_names("run_grid", options, [*grid_flags, *main_flags],
                 "the flags of python -m keras_transfer.grid --help and, for every net, of "
                 "python -m keras_transfer.main --help")
    given = _given(options)
    owned = [name for name in given if name in GRID_OWNED_FLAGS and name not in grid_flags]
    if owned:
        raise Error(f"{owned[0]}= is set by the grid for every net; use run_grid's own options "
                    "(splits, seeds, workdir, flagfile, experiments) instead")
    args = _parse(parser, _option_argv({k: v for k, v in given.items() if k in grid_flags},
                                       grid_flags))
    try:
        launched = command_line.launch(
            args, _flag_argv({k: v for k, v in given.items() if k not in grid_flags}),
            out=sys.stdout)
    except GridError as e:
        raise Error(str(e)) from None
    if launched.status == exit_status.INTERRUPTED:
        raise KeyboardInterrupt("the grid stopped on SIGINT; its nets saved a backup, and the "
                                "same call resumes them")
    return _summary(launched, args)


def _summary(launched, args) -> GridSummary:
    """Each net of the launched plan as trained, already done or unfinished (and why)."""
    trained, already_done, unfinished = [], [], {}
    plan = launched.plan
    for net in plan.nets:
        run = plan.run(net)
        if run.is_done():
            before = launched.results_before.get(net.key)
            (already_done if run.result_mtime() == before else trained).append(net.label)
        elif args.dry_run:
            unfinished[net.label] = "planned"
        elif args.backend == "slurm":
            unfinished[net.label] = f"submitted; see {plan.log_path(net)}"
        else:
            state = "diverged" if run.is_diverged() else "not finished"
            unfinished[net.label] = f"{state}; see {plan.log_path(net)}"
    return GridSummary(launched.status, trained, already_done, unfinished)


def load_results(workdir, **options):
    """The finished nets under WORKDIR as a pandas DataFrame, one row per net: what the
    report's results.csv holds (run, condition, split, seed, source, target, n, finetune,
    top1_final, ..., and each net's flags as flag_<name>). Options: the report's dataset and
    model, to choose when WORKDIR holds runs of several. `.attrs["notes"]` lists the files
    skipped, and why."""
    from keras_transfer.report.runs import ReportError, load_runs, results_table

    names = [name for name in inspect.signature(load_runs).parameters if name != "workdir"]
    _check_names("load_results", options, names,
                 "the --dataset and --model of python -m keras_transfer.report")
    try:
        runs, notes = load_runs(workdir, **_given(options))
    except ReportError as e:
        raise Error(str(e)) from None
    table = results_table(runs)
    table.attrs["notes"] = notes
    return table


@dataclasses.dataclass(frozen=True)
class Report:
    """A written report: its folder and files ({name: path}: summary.md, results.csv,
    findings.csv, figure2.png, ...), the notes it printed, how many runs it read, and the
    paper's findings with their intervals and verdicts as a pandas DataFrame (findings.csv;
    None when the runs have no random-split nets to test them on)."""
    folder: Path
    files: dict
    notes: list
    runs: int
    findings: object


def make_report(workdir=None, **options) -> Report:
    """Writes the report of the runs under WORKDIR as `python -m keras_transfer.report` does
    (into WORKDIR/report, or out=DIR) and returns it as a Report.

    The options are the report's flags: out, dataset, model, metric, reference, and
    paper=True (with out, no workdir) for the authors' own nets. Example:

        report = kt.make_report("runs", out="runs/report")
        print(report.findings)
    """
    from keras_transfer.report import __main__ as command_line
    from keras_transfer.report.runs import ReportError

    parser = command_line.parser()
    report_flags = _options_of(parser)
    _check_names("make_report", options, report_flags,
                 "WORKDIR and the flags of python -m keras_transfer.report --help")
    argv = _option_argv(_given(options), report_flags)
    args = _parse(parser, argv + ([] if workdir is None else ["--", str(workdir)]))
    try:
        made = command_line.make(args, parser)
    except ReportError as e:
        raise Error(str(e)) from None
    findings = made["files"].get("findings.csv")
    if findings is not None:
        import pandas as pd

        findings = pd.read_csv(findings)
    return Report(Path(made["folder"]), made["files"], made["notes"], made["runs"], findings)


# ------------------------------------------------------------ keyword arguments as flags

def _check_names(function: str, given: dict, known: list, where: str) -> None:
    """OptionError naming each keyword argument that is not a known option, with the closest
    known ones."""
    unknown = [name for name in given if name not in known]
    if not unknown:
        return
    named = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=3)
        named.append(repr(name) + (f" (did you mean {' or '.join(close)}?)" if close else ""))
    raise OptionError(f"{function}() got unknown option{'s' if len(unknown) > 1 else ''} "
                      f"{', '.join(named)}; its options are {where}")


def _given(options: dict) -> dict:
    """The options given a value: None stands for the command's default."""
    return {name: value for name, value in options.items() if value is not None}


def _text(value) -> str:
    """A value as the command line writes it: lists comma-separated, booleans true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return str(value)


def _flag_argv(flags: dict) -> list[str]:
    """absl flags (main's): --name=value for each."""
    return [f"--{name}={_text(value)}" for name, value in flags.items()]


def _options_of(parser: argparse.ArgumentParser) -> dict:
    """An argparse parser's options by name (--jobs: jobs), without --help and hidden ones
    (argparse lists its options only in `_actions`)."""
    return {max(action.option_strings, key=len).lstrip("-"): action
            for action in parser._actions
            if action.option_strings and action.help != argparse.SUPPRESS
            and "--help" not in action.option_strings}


def _option_argv(options: dict, actions: dict) -> list[str]:
    """argparse options: a switch (--dry_run) given when True, left out when False."""
    argv = []
    for name, value in options.items():
        if actions[name].nargs == 0:
            if not isinstance(value, bool):
                raise Error(f"--{name} is a switch: give {name}=True or {name}=False, "
                            f"not {value!r}")
            argv += [f"--{name}"] if value else []
        else:
            argv.append(f"--{name}={_text(value)}")
    return argv


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The parsed options, or Error with argparse's message instead of its exit."""
    def refuse(message):
        raise Error(message)

    parser.error = refuse
    return parser.parse_args(argv)
