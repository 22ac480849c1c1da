"""Names of the nets of the grid and where their run directories live.

One place decides that `--source=A --n=3 --finetune` (target B) is `A3B+`, a `transfer+` net, in
`WORKDIR/<dataset>/<split_dir>/seed<k>/A3B+`, and that `--source=random --finetune` is no net of
the paper (`net_problem`); main, transfer, the grid, the report and the analysis tools all ask
here.
"""
from __future__ import annotations

import numbers
import re
from pathlib import Path

HALVES = ("A", "B")
SOURCES = ("none", "A", "B", "random")
# The paper's cut points: n = 1..7 copies conv1..conv5, fc6, fc7 (fc8 is always new). Other
# networks have their own cut points (models.get(name).cut_names); a run name allows any n >= 1.
PAPER_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
PAPER_N = tuple(range(1, len(PAPER_LAYERS) + 1))

CONDITIONS = ("base", "selffer", "selffer+", "transfer", "transfer+", "random")
# The settings that tell the nets of the experiments apart: what TensorBoard's HParams dashboard
# lists for each net (training writes them into the net's own events, progress.Summaries).
HPARAMS = ("dataset", "model", "split", "examples_per_class", "seed", "source", "target", "n",
           "finetune", "stretch")

def counted(count: int, noun: str, plural: str = "") -> str:
    """`1 net`, `2 nets`, `1 process`: a count and its noun (plural: noun + s unless given)."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


_RUN_RE = re.compile(r"^(?:base(?P<base>[AB])|(?P<src>[ABR])(?P<n>[1-9][0-9]*)(?P<tgt>[AB])(?P<ft>\+?))"
                     r"(?:-x(?P<stretch>[2-9]|[1-9][0-9]+))?$")


def other_half(half: str) -> str:
    return {"A": "B", "B": "A"}[half]


def run_name(source: str, target: str, n: int, finetune: bool, stretch: int = 1) -> str:
    """`baseB`, `A3B`, `A3B+`, `B3B`, `R3B` ... (the paper's names; R = random features);
    `baseB-x2` for a net trained on a schedule `stretch` times as long (the convergence control)."""
    suffix = f"-x{stretch}" if stretch > 1 else ""
    if source == "none" or n == 0:
        return f"base{target}{suffix}"
    letter = "R" if source == "random" else source
    return f"{letter}{n}{target}{'+' if finetune else ''}{suffix}"


def condition(source: str, target: str, n: int, finetune: bool) -> str:
    """The condition a net belongs to, pooled over directions (AnB and BnA are both `transfer`)."""
    if source == "none" or n == 0:
        return "base"
    if source == "random":
        return "random"
    kind = "selffer" if source == target else "transfer"
    return kind + ("+" if finetune else "")


def net_problem(source: str, n, finetune: bool, *, model: str, cut_names,
                flag: str = "") -> str | None:
    """What makes (source, n, finetune) no net of the paper on the network `model` with cut
    points `cut_names`, or None if it is one: a base net (source none, n 0), a selffer or
    transfer net (A or B, n 1..k, frozen or fine-tuned) or the random-features control (random,
    n 1..k, frozen). The rules are stated here only: main, transfer and the grid ask here.
    `flag` spells the settings as the caller takes them: "--" for main's flags, "" for
    arguments."""
    k = len(cut_names)
    if source not in SOURCES:
        return f"{flag}source must be one of {', '.join(SOURCES)}, not {source!r}"
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 0 <= n <= k:
        return (f"{flag}n={n!r} is out of range: n counts copied cut points, a whole number "
                f"from 0 (a base net) to {k} for {model} ({', '.join(cut_names)}; the head is "
                "always new)")
    if source == "none" and n != 0:
        return (f"{flag}source=none is a base net, which copies nothing, and needs {flag}n=0, "
                f"not {flag}n={n}; choose {flag}source=A, B or random to copy {n} cut points")
    if finetune and n == 0:
        return (f"{flag}finetune needs copied layers to fine-tune: give {flag}n between 1 and "
                f"{k} (a base net, {flag}n=0, trains every layer from scratch anyway)")
    if finetune and source == "random":
        return (f"{flag}finetune with {flag}source=random is not a condition of the paper: the "
                f"random-features control keeps its random layers frozen; drop {flag}finetune")
    if n == 0 and source != "none":
        return (f"{flag}source={source} needs {flag}n between 1 and {k} (the number of cut "
                "points to copy)")
    return None


def parse_run_name(name: str) -> dict:
    """Inverse of run_name: {'source', 'target', 'n', 'finetune', 'stretch'}; ValueError if not
    a run name."""
    m = _RUN_RE.match(name)
    if not m:
        raise ValueError(f"not a run name: {name!r} (expected e.g. baseB, A3B, A3B+, R3B, baseB-x2)")
    stretch = int(m.group("stretch") or 1)
    if m.group("base"):
        return {"source": "none", "target": m.group("base"), "n": 0, "finetune": False,
                "stretch": stretch}
    src = {"R": "random"}.get(m.group("src"), m.group("src"))
    return {"source": src, "target": m.group("tgt"), "n": int(m.group("n")),
            "finetune": m.group("ft") == "+", "stretch": stretch}


class NetIdentity:
    """Which net an object describes, from its defining fields: its name (`A3B+`, `baseB-x2`)
    and its condition (`transfer+`). Main's Config and the grid's nets both inherit it, so the two
    derive a net's identity in one place."""
    source: str
    target: str
    n: int
    finetune: bool
    stretch: int

    @property
    def name(self) -> str:
        return run_name(self.source, self.target, self.n, self.finetune, self.stretch)

    @property
    def condition(self) -> str:
        return condition(self.source, self.target, self.n, self.finetune)


def model_dirname(model: str) -> str:
    """A folder name for main's --model (`runs_<it>` in the hints and the demo): a built-in
    name as it is; `pkg.nets:tiny` -> `pkg_nets_tiny`, `path/to/my_model.py:tiny` ->
    `my_model_tiny` (the file's name, not its folders)."""
    source, _, function = model.rpartition(":")
    source = Path(source).stem if source.endswith(".py") or "/" in source else source
    name = f"{source}_{function}" if source else function
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "model"


def split_dir(split: str, examples_per_class: int = 0) -> str:
    """The folder name of a split's data and runs (`random_3`, `random_0_epc10`); main's
    --examples_per_class=0 means every example."""
    from data_prep.splits import split_dirname  # numpy: imported only when a name is needed
    return split_dirname(split, examples_per_class or None)


def seed_dir(workdir, dataset: str, split_dir: str, seed: int) -> Path:
    """Folder holding every net of one (dataset, split, seed)."""
    return Path(workdir) / dataset / split_dir / f"seed{seed}"


def run_dir(workdir, dataset: str, split_dir: str, seed: int, name: str) -> Path:
    return seed_dir(workdir, dataset, split_dir, seed) / name
