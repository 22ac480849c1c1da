"""The authors' own nets (github.com/yosinski/convnet_transfer, `results/`) as a runs table.

`load()` reads the shipped data/yosinski2014_nets.csv into the table runs.load_runs builds from
our result.json files, so findings.measure_findings and tables.summarize compute the paper's
values with the same estimator and intervals as ours. `derive(repo)` rebuilds that CSV from a
checkout or a bare git dir of their repository (data/yosinski2014_nets.md: how each column is
derived). Their Caffe logs hold every validation evaluation (every 1000 iterations), so the
paper's best-10 mean and the final value both come from the learning curve.
"""
from __future__ import annotations

import gzip
import io
import re
import subprocess
from pathlib import Path

import pandas as pd

from keras_transfer import metrics, naming
from keras_transfer.report.runs import CONVERGED_EVALUATIONS, CONVERGED_SPAN, series_of

CSV = Path(__file__).parent / "data" / "yosinski2014_nets.csv"
REPOSITORY = "https://github.com/yosinski/convnet_transfer"
COMMIT = "9838c273ab67c1014693fa8e1bf9a316bc23fa7d"  # the one the shipped CSV is derived from
DATASET, MODEL = "imagenet2012", "caffenet"
COLUMNS = ["run", "condition", "dataset", "split", "split_dir", "seed", "examples_per_class",
           "source", "target", "n", "finetune", "model", "top1_final", "top1_best_fraction",
           "top1_best10_mean", "evaluations", "steps", "converged", "last_top1", "paper_dir",
           "paper_logs"]

# Their directory names: half0A (baseA of split 0), transfer0A0B_1_3 (A3B: copies 3 layers of
# half0A, trains on 0B), transfer-ft... (fine-tuned), natman halves, netbase (the whole dataset),
# nolearn_1_n (n random frozen layers, whole dataset), reduced-NNNN (NNNN images per class).
_DIR_RE = re.compile(
    r"^(?:half(?P<base>[0-3]|natman)(?P<bt>[AB])"
    r"|transfer(?P<ft>-ft)?(?:(?P<s1>[0-3])(?P<src>[AB])(?P<s2>[0-3])|natman(?P<nsrc>[AB]))"
    r"(?P<tgt>[AB])_1_(?P<n>[1-7])"
    r"|(?P<netbase>netbase)|nolearn_1_(?P<rn>[1-7])|reduced-(?P<epc>\d{4}))$")


class _Repo:
    """Files of their repository, from a checkout (a `results/` folder) or a bare git dir."""

    def __init__(self, path):
        self.path = Path(path)
        self.bare = not (self.path / "results").is_dir()
        git = ["git", "--git-dir", str(self.path)] if self.bare else ["git", "-C", str(self.path)]
        self._git = git
        try:
            self.commit = self._run("rev-parse", "HEAD").decode().strip()
        except (OSError, subprocess.CalledProcessError):
            self.commit = None  # a checkout without .git still derives
        if self.bare:
            listing = self._run("ls-tree", "-r", "HEAD", "results").decode().splitlines()
            self.files = sorted(line.split("\t", 1)[1] for line in listing)
        else:
            self.files = sorted(str(p.relative_to(self.path)) for p in
                                (self.path / "results").rglob("*") if p.is_file() or p.is_symlink())

    def _run(self, *args) -> bytes:
        return subprocess.run([*self._git, *args], check=True, capture_output=True).stdout

    def read(self, path: str) -> bytes:
        """The file's bytes; for a symlink, its target (git stores it so)."""
        if self.bare:
            return self._run("show", f"HEAD:{path}")
        local = self.path / path
        return str(local.readlink()).encode() if local.is_symlink() else local.read_bytes()


def _identity(name: str) -> dict:
    """Which net a results/ directory holds, from its name, in our naming."""
    m = _DIR_RE.match(name)
    if not m:
        raise ValueError(f"unknown results directory {name!r}")
    g = m.groupdict()
    if g["base"] is not None:
        split = "natman" if g["base"] == "natman" else f"random:{g['base']}"
        return dict(split=split, source="none", target=g["bt"], n=0, finetune=False, epc=None)
    if g["tgt"] is not None:
        if g["s1"] is not None and g["s1"] != g["s2"]:
            raise ValueError(f"{name}: source and target halves of different splits")
        split = f"random:{g['s1']}" if g["s1"] is not None else "natman"
        return dict(split=split, source=g["src"] or g["nsrc"], target=g["tgt"], n=int(g["n"]),
                    finetune=bool(g["ft"]), epc=None)
    # Whole-dataset nets: every class is "A" (our RnA against baseA on the whole dataset).
    if g["rn"] is not None:
        return dict(split="whole", source="random", target="A", n=int(g["rn"]), finetune=False,
                    epc=None)
    return dict(split="whole", source="none", target="A", n=0, finetune=False,
                epc=int(g["epc"]) if g["epc"] else None)


def _layers(prototxt: str) -> list[tuple[str, float]]:
    """(name, first blobs_lr) of each layer with weights, in order ("-new" marks a fresh one)."""
    found = []
    for block in prototxt.split("layers {")[1:]:
        name = re.search(r'name:\s*"([^"]+)"', block).group(1)
        lr = re.search(r"blobs_lr:\s*([0-9.]+)", block)
        if lr:
            found.append((name, float(lr.group(1))))
    return found


def _n_and_finetune(prototxt: str, has_base: bool) -> tuple[int, bool]:
    """n and fine-tuning as the training prototxt sets them: the first n layers are copied
    (named as in the base net) or frozen (blobs_lr 0); fine-tuned when copied ones learn."""
    layers = [(name, lr) for name, lr in _layers(prototxt)
              if name.split("-")[0] in naming.PAPER_LAYERS]
    kept = [(name, lr) for name, lr in layers
            if (has_base and not name.endswith("-new")) or lr == 0]
    n = len(kept)
    if [name.split("-")[0] for name, _ in kept] != list(naming.PAPER_LAYERS[:n]):
        raise ValueError("copied/frozen layers are not the first n")
    return n, any(lr > 0 for _, lr in kept)


def _half(link: bytes) -> str:
    """`../../ilsvrc12/data/half0B_valid/leveldb` -> `half0B`; `../half0A` -> `half0A`."""
    return re.search(r"(half[0-9a-z]*[AB]|whole|reduced-?\d+)", link.decode()).group(1)


def _evaluations(logs) -> dict[int, float]:
    """Validation top-1 (Caffe's "Test score #0") per iteration over the logs of one net; an
    iteration logged twice (a job resumed from a snapshot) keeps its latest value, as the
    authors' notebook (plots/transfer_plots.ipynb, read_info) does."""
    scores: dict[int, tuple[float, str]] = {}
    for data in logs:
        testing, expecting = None, 0
        for raw in io.TextIOWrapper(gzip.GzipFile(fileobj=io.BytesIO(data)), errors="replace"):
            if expecting and "Test score" not in raw:
                if len(raw.split()) > 4:  # anything else ends the test block
                    testing, expecting = None, 0
                continue
            fields = raw.split()
            if len(fields) <= 4:
                continue
            stamp = fields[0] + " " + fields[1]
            if expecting:
                if "Test score #0:" in raw and testing is not None:
                    if testing not in scores or stamp > scores[testing][1]:
                        scores[testing] = (float(fields[7]), stamp)
                expecting -= 1
            elif fields[4] == "Iteration" and fields[6:8] == ["Testing", "net"]:
                testing, expecting = int(fields[5].strip(",")), 2
    return {it: value for it, (value, _) in sorted(scores.items())}


def _check(condition: bool, message: str) -> None:
    if not condition:  # not assert: the checks must hold under python -O too
        raise ValueError(message)


def derive(repo) -> pd.DataFrame:
    """One row per net in their results/ (COLUMNS), from a checkout or bare git dir; checks
    that the names, data links and prototxts of each net agree."""
    tree = _Repo(repo)
    by_dir: dict[str, list[str]] = {}
    for path in tree.files:
        parts = path.split("/")
        if len(parts) == 3:
            by_dir.setdefault(parts[1], []).append(parts[2])
    rows = []
    for name, files in sorted(by_dir.items()):
        net = _identity(name)
        base = f"results/{name}/"
        val = _half(tree.read(base + "imagenet_val_leveldb"))
        has_base = "basenet" in files
        # The data the net was trained and validated on must be its target half.
        if net["split"] != "whole":
            split_id = "natman" if net["split"] == "natman" else net["split"][-1]
            _check(val == f"half{split_id}{net['target']}", f"{name} validates on {val}")
            if has_base:
                source = _half(tree.read(base + "basenet"))
                _check(source == f"half{split_id}{net['source']}", f"{name} copies {source}")
        n, finetune = _n_and_finetune(tree.read(base + "imagenet_train.prototxt").decode(),
                                      has_base)
        _check((n, finetune) == (net["n"], net["finetune"]),
               f"{name}: its prototxt has n={n}, finetune={finetune}")
        logs = sorted(f for f in files if re.search(r"\.[eo][0-9A-Z]+\.gz$", f))
        curve = _evaluations(tree.read(base + f) for f in logs)
        values = list(curve.values())
        last = values[-CONVERGED_EVALUATIONS:]
        split_dir = naming.split_dir(net["split"], net["epc"] or 0)
        rows.append({
            "run": naming.run_name(net["source"], net["target"], net["n"], net["finetune"]),
            "condition": naming.condition(net["source"], net["target"], net["n"], net["finetune"]),
            "dataset": DATASET, "split": net["split"], "split_dir": split_dir, "seed": 0,
            "examples_per_class": net["epc"], "source": net["source"], "target": net["target"],
            "n": net["n"], "finetune": net["finetune"], "model": MODEL,
            **metrics.top1_metrics([{"top1": v} for v in values]),
            "steps": max(curve) if curve else None,
            "converged": (max(last) - min(last) <= CONVERGED_SPAN + 1e-12
                          if len(last) == CONVERGED_EVALUATIONS else None),
            "last_top1": ", ".join(f"{v:.4f}" for v in last),
            "paper_dir": base.rstrip("/"), "paper_logs": ";".join(logs)})
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs["commit"] = tree.commit
    return df


def write(repo, path=CSV) -> pd.DataFrame:
    """derive(repo) written to `path` (the shipped CSV by default)."""
    df = derive(repo)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, float_format="%.8g")
    return df


def load(path=CSV, series: str | None = None) -> pd.DataFrame:
    """The authors' nets as runs.load_runs' table (its columns, `series`, `converged`), sorted
    the same way; `series` keeps one ("main": the four random splits). Nets whose directory
    holds no log (evaluations 0) are left out, as load_runs leaves out runs without a result."""
    df = pd.read_csv(path, dtype={"split": str, "split_dir": str, "last_top1": str})
    df = df[df["evaluations"] > 0].copy()
    df["finetune"] = df["finetune"].astype(bool)
    df["converged"] = df["converged"].map({True: True, False: False, "True": True,
                                           "False": False})
    df["series"] = [series_of(s, e) for s, e in zip(df["split"], df["examples_per_class"])]
    df["run_dir"] = df["paper_dir"]
    df["cut_points"], df["paper_layers"] = ",".join(naming.PAPER_LAYERS), True  # CaffeNet's
    if series is not None:
        df = df[df["series"] == series]
    order = ["series", "split_dir", "seed", "condition", "n", "run"]
    return df.sort_values(order).reset_index(drop=True)


if __name__ == "__main__":  # python -m keras_transfer.report.paper_nets REPO: rewrite the CSV
    import sys
    table = write(sys.argv[1])
    print(f"{len(table)} nets from {table.attrs['commit']} -> {CSV}")
