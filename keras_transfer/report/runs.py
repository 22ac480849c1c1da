"""Finished runs as one table: a row per result.json (with its config.json's flags), the
experiment series it belongs to, and whether it converged.

The report reads only these files, so runs from any launcher or machine can be reported on;
the top-1 metrics are recomputed from each run's history with the code that wrote them. What n
counts (the network's cut points) comes from the records too, not from the model registry.
"""
from __future__ import annotations

import dataclasses
import math
from collections import Counter
from pathlib import Path

import pandas as pd

from data_prep.splits import WHOLE
from keras_transfer import metrics, naming
from keras_transfer.metrics import TOP1
from keras_transfer.report import convergence
from keras_transfer.run_records import RESULT_FLAGS, RecordError, RunDir

DISSIMILAR_SPLITS = ("dissimilar", "natman")
RESULT_COLUMNS = ["run", "condition", "dataset", "split", "split_dir", "seed", "examples_per_class",
                  "source", "target", "n", "finetune", "model", "top1_final", "top1_best_fraction",
                  "top1_best10_mean", "evaluations", "top5_final", "loss_final", "steps",
                  "images_per_sec", "wall_time_sec"]
# The columns of the runs table that describe the network (`Network`), not a net: left out of
# results.csv, which lists the nets.
NETWORK_COLUMNS = ["cut_points", "paper_layers"]
# The column of the runs table holding each run's values of run_records.RESULT_FLAGS, as its
# config.json records them (`settings_differences`); not in results.csv, which has flag_<name>.
SETTINGS = "settings"
# A net has converged when its last CONVERGED_EVALUATIONS evaluations are within this top-1 span.
CONVERGED_EVALUATIONS, CONVERGED_SPAN = metrics.CONVERGED_EVALUATIONS, 0.005


class ReportError(Exception):
    """The report cannot be made from this WORKDIR; the message says why and what to do."""


def is_whole(split) -> bool:
    """Whether a run trained on the whole dataset (data_prep's split `whole`, every class)."""
    return str(split) == WHOLE


def series_of(split: str, examples_per_class, stretch: int = 1) -> str:
    """Which experiment a run belongs to: the main random-split series, dissimilar, reduced
    (on halves or on the whole dataset), whole (the whole dataset with every example: the
    paper's random-features control and its base), or convergence (a base net trained again
    on a longer schedule, `baseB-x2`: report.convergence)."""
    if stretch > 1:
        return convergence.SERIES
    if examples_per_class and not pd.isna(examples_per_class):
        return "reduced"
    if str(split) in DISSIMILAR_SPLITS:
        return "dissimilar"
    if is_whole(split):
        return "whole"
    return "main"


def converged(history) -> bool | None:
    """Whether the last evaluations are within CONVERGED_SPAN of each other (None: too few)."""
    values = [e["top1"] for e in history or []][-CONVERGED_EVALUATIONS:]
    if len(values) < CONVERGED_EVALUATIONS:
        return None
    return max(values) - min(values) <= CONVERGED_SPAN + 1e-12


@dataclasses.dataclass(frozen=True)
class Network:
    """The network the report's runs trained, as their result.json records it: what n counts."""
    name: str  # main's --model
    cut_names: tuple  # the cut points, bottom to top: n copies the first n
    paper_layers: bool  # whether n means the paper's layer n, so the paper's values compare

    @property
    def max_n(self) -> int:
        return len(self.cut_names)


def external_bases(df: pd.DataFrame) -> list[str]:
    """Each network trained elsewhere that nets of `df` copied from, with the start of its
    file's sha256 (none for Keras' own download)."""
    if "external_base" not in df:  # e.g. the authors' nets
        return []
    used = df.dropna(subset=["external_base"])
    digests = used.get("external_base_sha256", pd.Series(None, index=used.index))
    pairs = sorted({(path, digest if isinstance(digest, str) else "")
                    for path, digest in zip(used["external_base"], digests)})
    return [f"{path} (sha256 {digest[:12]})" if digest else str(path) for path, digest in pairs]


def cut_names_of(result: dict) -> tuple | None:
    """The cut points a result.json records: its `layers` (one per cut point, then the head)
    without the head; None if they are not recorded."""
    layers = result.get("layers")
    if not isinstance(layers, list) or not all(
            isinstance(row, dict) and isinstance(row.get("name"), str) for row in layers):
        return None
    return tuple(row["name"] for row in layers[:-1]) or None


def paper_layers_of(result: dict, cut_names: tuple) -> bool:
    """Whether a run's n are the paper's layers; records written before they said so are, when
    their cut points are the paper's conv1..fc7 (as for caffenet and small)."""
    return bool(result.get("paper_layers", cut_names == naming.PAPER_LAYERS))

def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def malformed(result) -> str | None:
    """What makes a result.json unusable for the report (wrong types, impossible values), or
    None. A non-finite loss means the net diverged: it is no result either."""
    if not isinstance(result, dict):
        return "not a JSON object"
    try:
        naming.parse_run_name(str(result.get("run")))
    except ValueError as e:
        return str(e)
    if result.get("condition") not in naming.CONDITIONS:
        return f"unknown condition {result.get('condition')!r}"
    model = result.get("model")
    if not isinstance(model, str):
        return f"model is {model!r}, not a network's name"
    cut_names = cut_names_of(result)
    if cut_names is None:
        return "its layers do not name the cut points of its network"
    for key in ("n", "seed"):
        value = result.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"{key} is {value!r}"
    problem = naming.net_problem(result.get("source"), result["n"], result.get("finetune"),
                                 model=model, cut_names=cut_names)
    if problem:
        return problem
    for key in ("dataset", "split", "split_dir", "target"):
        if not isinstance(result.get(key), str):
            return f"{key} is {result.get(key)!r}, not text"
    history = result.get("history")
    if not isinstance(history, list) or not history or not all(
            isinstance(e, dict) and _is_number(e.get("top1")) and 0 <= e["top1"] <= 1
            and _is_number(e.get("step")) for e in history):
        return "its history is not a list of evaluations with a step and a top-1 in [0, 1]"
    loss = result.get("loss_final")
    if loss is not None and not (_is_number(loss) and math.isfinite(loss)):
        return f"its final loss is {loss}: the net diverged"
    return None


def load_diverged(workdir) -> list[dict]:
    """The nets that diverged (a diverged.json and no result.json), with where, their model
    (None if unknown) and how."""
    workdir = Path(workdir)
    found = []
    for run in RunDir.find(workdir, RunDir.DIVERGED):
        if not run.is_diverged():  # trained again since, and finished
            continue
        record = run.diverged() or {}
        # The --model it started with (config.json is written when a run starts).
        model = (run.config() or {}).get("model")
        found.append({"run_dir": str(run.path.relative_to(workdir)),
                      "model": model,
                      "step": record.get("step", "?"),
                      "what": f"{record.get('quantity', 'its loss')} was "
                              f"{record.get('value', 'not finite')}"})
    return found


def load_runs(workdir, dataset: str | None = None,
              model: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """One row per result.json under workdir (with its config.json's flags) of one dataset and
    one model, and notes on skipped files. The top-1 metrics are recomputed from each run's
    history (metrics.top1_metrics)."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise ReportError(f"{workdir} is not a directory; give the --workdir of the grid "
                          "(e.g. runs)")
    rows, notes, unusable = [], [], []
    for run in RunDir.find(workdir, RunDir.RESULT):
        try:
            result = run.load_result()
        except RecordError as e:
            notes.append(f"skipped {e.kind} {e.path}: {e}")
            unusable.append((run, e.kind))
            continue
        problem = malformed(result)
        if problem:
            notes.append(f"skipped malformed {run.result_path}: {problem}")
            unusable.append((run, "malformed"))
            continue
        row = {k: result.get(k) for k in RESULT_COLUMNS}
        external = result.get("external_base") or {}  # a base trained elsewhere (--base_model)
        row.update(external_base=external.get("path"),
                   external_base_sha256=external.get("sha256"))
        cut_names = cut_names_of(result)
        row.update(cut_points=",".join(cut_names),
                   paper_layers=paper_layers_of(result, cut_names))
        history = result.get("history") or []
        if history:
            row.update(metrics.top1_metrics(history))
        row["converged"] = converged(history)
        row["last_top1"] = ", ".join(f"{e['top1']:.4f}" for e in history[-CONVERGED_EVALUATIONS:])
        config = {}
        if run.config_path.is_file():
            try:
                config = run.load_config()
            except RecordError as e:
                notes.append(f"ignored {e.kind} {e.path}: {e}")
            for k, v in config.items():
                if k not in row and not isinstance(v, (dict, list)):
                    row[f"flag_{k}"] = v
        row[SETTINGS] = {k: config[k] for k in RESULT_FLAGS
                         if k in config and not isinstance(config[k], (dict, list))}
        row["run_dir"] = str(run.path.relative_to(workdir))
        rows.append(row)
    if not rows:
        diverged = load_diverged(workdir)
        also = (f"; {len(diverged)} diverged: {', '.join(d['run_dir'] for d in diverged)}"
                if diverged else "")
        if unusable:
            raise ReportError(_none_readable(workdir, unusable) + also)
        raise ReportError(f"no result.json under {workdir}: no run has finished there yet{also} "
                          "(train some with ./launch.sh, or point at the grid's workdir)")
    df = _runs_of_one(pd.DataFrame(rows), "dataset", dataset, workdir)
    # n counts each network's own cut points, so runs of two networks never compare per n.
    df = _runs_of_one(df, "model", model, workdir, ", whose n count different cut points")
    df = df.copy()
    df["stretch"] = [naming.parse_run_name(run)["stretch"] for run in df["run"]]
    df["series"] = [series_of(s, e, x) for s, e, x in
                    zip(df["split"], df["examples_per_class"], df["stretch"])]
    df["n"] = df["n"].astype(int)
    df["seed"] = df["seed"].astype(int)
    for metric in TOP1:
        df[metric] = pd.to_numeric(df[metric], errors="coerce")
    order = ["series", "split_dir", "seed", "condition", "n", "run"]
    return df.sort_values(order).reset_index(drop=True), notes


def results_table(df: pd.DataFrame) -> pd.DataFrame:
    """What results.csv holds: the runs table (`load_runs`) without the columns that describe
    the network or hold each run's settings as a dict (its flags are the flag_<name> columns)."""
    return df.drop(columns=NETWORK_COLUMNS).drop(columns=SETTINGS, errors="ignore")


def _none_readable(workdir: Path, unusable: list) -> str:
    """The error when every result.json under `workdir` is unusable: a few of them with why,
    their count and how to train them again."""
    shown = ", ".join(f"{run.result_path.relative_to(workdir)} ({kind})"
                      for run, kind in unusable[:3])
    more = f" and {len(unusable) - 3} more" if len(unusable) > 3 else ""
    return (f"none of the {len(unusable)} result.json files under {workdir} can be read: "
            f"{shown}{more}. Train those nets again: run the grid's command again with "
            "--overwrite (it retrains nets whose result.json is unreadable), or python -m "
            "keras_transfer.main with the flags in the net's config.json and --overwrite")


def settings_differences(df: pd.DataFrame) -> list[str]:
    """Nets trained with other values of a flag that changes a result (run_records.RESULT_FLAGS, as
    their config.json records them) than the other nets of their series, which the report
    averages them with: one line per flag and value, naming the nets. A net whose config.json
    does not record a flag is not compared on it."""
    lines = []
    for series, group in df.groupby("series", sort=True):
        for flag in RESULT_FLAGS:
            values = {row["run_dir"]: row[SETTINGS][flag] for _, row in group.iterrows()
                      if isinstance(row[SETTINGS], dict) and flag in row[SETTINGS]}
            counts = Counter(_key(v) for v in values.values())
            if len(counts) < 2:
                continue
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
            shown = {_key(v): v for v in values.values()}
            nets = {key: _listing(sorted(_short(run_dir) for run_dir, v in values.items()
                                         if _key(v) == key)) for key in counts}
            if ranked[0][1] == ranked[1][1]:  # no usual value to name the others by
                lines.append(f"the {series} series mixes " + "; ".join(
                    f"--{flag}={shown[key]} ({nets[key]})" for key, _ in ranked))
                continue
            usual, usual_count = ranked[0]
            for key, count in ranked[1:]:
                others = len(values) - count
                rest = (f"the other {others} {'net' if others == 1 else 'nets'}"
                        if len(counts) == 2 else f"{usual_count} of the other {others} nets")
                lines.append(f"{nets[key]} trained with --{flag}={shown[key]}, {rest} of the "
                             f"{series} series with --{flag}={shown[usual]}")
    return lines


def _listing(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more"
                                       if len(names) > limit else "")


def _key(value):
    """A flag's value as a key that tells 1 from 1.0 no more than the flag does (True apart)."""
    return ("bool", value) if isinstance(value, bool) else (
        "number", float(value)) if _is_number(value) else ("other", str(value))


def _short(run_dir: str) -> str:
    """A run's folder without the dataset (one per report): random_1/seed0/A3B."""
    parts = Path(run_dir).parts
    return "/".join(parts[1:]) if len(parts) > 1 else run_dir


def _runs_of_one(df: pd.DataFrame, column: str, chosen: str | None, workdir: Path,
                 why: str = "") -> pd.DataFrame:
    """The runs whose `column` (dataset, model) is `chosen`, or all of them when they share one;
    ReportError naming the values and the option (--dataset, --model) otherwise."""
    values = sorted(df[column].dropna().unique())
    if chosen is not None:
        if chosen not in values:
            raise ReportError(f"no runs of {column} {chosen!r} under {workdir}; it holds "
                              f"{', '.join(values)}")
        return df[df[column] == chosen]
    if len(values) > 1:
        raise ReportError(f"{workdir} holds runs of several {column}s ({', '.join(values)}){why}; "
                          f"choose one with --{column}=NAME")
    return df


def architecture(df: pd.DataFrame) -> Network:
    """The network of the report's runs (load_runs keeps one): what n counts, as their records
    say."""
    names = sorted(df["model"].unique())
    if len(names) != 1:
        raise ReportError(f"a report is on the runs of one model, not of {len(names)} "
                          f"({', '.join(names)}); choose one with --model=NAME")
    described = sorted(set(zip(df["cut_points"], df["paper_layers"])))
    if len(described) != 1:
        raise ReportError(f"the runs of {names[0]} record different cut points "
                          f"({'; '.join(cuts for cuts, _ in described)}): their n do not "
                          "compare; report on the runs of one version of the network")
    cut_points, paper_layers = described[0]
    return Network(names[0], tuple(cut_points.split(",")), bool(paper_layers))


def n_counts(paper_layers: bool) -> str:
    """What n counts, in the report's words: the paper's layers, or the network's cut points."""
    return "layer" if paper_layers else "cut point"


def drop_unpaired_bases(df: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Leaves out base nets whose half is no transfer net's target (baseA in a target-B grid):
    they solve another task, so pooling them into "base" would compare the B nets with a mix
    of A and B. Base-only series (reduced volume) are kept whole."""
    keys = df[["series", "split", "seed", "target"]].apply(tuple, axis=1)
    is_base = df["condition"] == "base"
    targets = set(keys[~is_base])
    unpaired = is_base & df["series"].isin({k[0] for k in targets}) & ~keys.isin(targets)
    if unpaired.any():
        names = sorted(set(df.loc[unpaired, "run"]))
        notes.append(f"left out of tables and figures (no net targets their half): "
                     f"{', '.join(names)}; still listed in results.csv")
    return df[~unpaired].reset_index(drop=True)
