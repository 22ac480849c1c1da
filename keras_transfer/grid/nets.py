"""Which nets the paper's experiments need, and in which order they can be trained.

Kept free of flags, processes and files: the list of nets is the one thing every backend, the
dry run and the tests agree on, and each net names the base nets it copies from so that a
backend can order them without knowing the experiments.
"""
from __future__ import annotations

import dataclasses

from data_prep.splits import WHOLE as WHOLE_SPLIT  # the split of every class, in half A
from keras_transfer import naming
from keras_transfer.grid.errors import GridError

EXPERIMENTS = ("transfer", "random", "dissimilar", "reduced", "convergence")
DEFAULT_EXPERIMENTS = ("transfer", "random")
# The convergence control trains each base net again on a schedule this many times as long.
CONVERGENCE_STRETCH = 2
# Where the random-features control and the reduced-volume base nets train: `whole`, the
# paper's, on the whole dataset (data_prep's split `whole`, every class in half A) against a
# whole-dataset baseA; `half`, on the halves of the class splits (RnB against baseB; baseA and
# baseB per examples-per-class value).
DATA_CHOICES = ("whole", "half")


@dataclasses.dataclass(frozen=True)
class PlannedNet(naming.NetIdentity):
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
    # Main's --steps and --lr_step for this net alone (0: the preset's), for a series with a
    # solver of its own (the paper's reduced-volume nets).
    steps: int = 0
    lr_step: int = 0
    # Main's --stretch: the convergence control's base nets train on a schedule this many
    # times as long (named e.g. baseB-x2).
    stretch: int = 1
    # Main's --base_model stands in for baseA: a net of source A copies from it, not from baseA.
    external_base: bool = False

    @property
    def key(self) -> tuple:
        return (self.split_dir, self.seed, self.name)

    @property
    def label(self) -> str:
        return f"{self.split_dir}/seed{self.seed}/{self.name}"

    @property
    def pack_key(self) -> tuple:
        """Nets with equal keys can train as one pack: same data stream, seed and solver."""
        return (self.split, self.split_dir, self.seed, self.target, self.examples_per_class,
                self.steps, self.lr_step, self.stretch)

    @property
    def needs(self) -> tuple:
        """Keys of the base nets this net copies layers from (none for bases and random features)."""
        if self.source in naming.HALVES and self.n > 0 and not self.copies_external:
            return ((self.split_dir, self.seed, f"base{self.source}"),)
        return ()

    @property
    def copies_external(self) -> bool:
        return self.external_base and self.source == "A"

    def main_flags(self) -> list[str]:
        flags = [f"--split={self.split}", f"--seed={self.seed}", f"--source={self.source}",
                 f"--target={self.target}", f"--n={self.n}"]
        if self.finetune:
            flags.append("--finetune")
        if self.stretch > 1:  # a pack's --nets names carry it instead
            flags.append(f"--stretch={self.stretch}")
        return flags + self.shared_flags()

    def shared_flags(self) -> list[str]:
        """The flags besides --split and --seed that every net of its pack shares."""
        flags = []
        if self.examples_per_class:
            flags.append(f"--examples_per_class={self.examples_per_class}")
        if self.steps:
            flags.append(f"--steps={self.steps}")
        if self.lr_step:
            flags.append(f"--lr_step={self.lr_step}")
        return flags


def dissimilar_split(dataset: str) -> str:
    """ImageNet's dissimilar split is the paper's natural/man-made one; small datasets name theirs."""
    return "natman" if dataset.startswith("imagenet") else "dissimilar"


def transfer_set(experiment, split, seed, targets, n_values, epc=0,
                 selffer_targets=naming.HALVES, external_base=False) -> list[PlannedNet]:
    """baseA, baseB, then per n the selffer (for `selffer_targets`) and transfer nets, frozen
    and fine-tuned, per target. With `external_base` (main's --base_model in baseA's role,
    target B only) no baseA: AnB and AnB+ copy from the external network."""
    sd = naming.split_dir(split, epc)
    nets = [PlannedNet(experiment, split, sd, seed, "none", h, 0, False, epc)
            for h in naming.HALVES if not (external_base and h == "A")]
    for n in n_values:
        for target in targets:
            other = naming.other_half(target)
            sources = (target, other) if target in selffer_targets else (other,)
            for source in sources:                  # BnB, BnB+, AnB, AnB+ (target B)
                for finetune in (False, True):
                    nets.append(PlannedNet(experiment, split, sd, seed, source, target, n,
                                           finetune, epc, external_base=external_base))
    return nets


def check_external_base(*, experiments, targets, random_control) -> None:
    """GridError for what makes no sense when main's --base_model stands in for baseA: nets of
    target A (they would need baseA, or copy into the half it was trained on) and the
    experiments built on grid-trained base nets of half A."""
    if list(targets) != ["B"]:
        raise GridError("--base_model stands in for baseA, so its nets train on half B: give "
                        "--targets=B (AnB, AnB+ from the external network beside baseB, BnB, "
                        "BnB+)")
    other = [e for e in experiments if e not in ("transfer", "random")]
    if other:
        raise GridError(f"--experiments={','.join(experiments)}: {', '.join(other)} compare "
                        "base nets the grid trains on half A, which --base_model replaces; give "
                        "--experiments=transfer or transfer,random")
    if "random" in experiments and random_control != "half":
        raise GridError("--base_model with the random-features control: the whole-dataset "
                        "control (--random_control=whole) compares with a whole-dataset baseA, "
                        "not with the external network; give --random_control=half (RnB "
                        "against baseB on the target half) or --experiments=transfer")


def check_choices(*, random_control: str, reduced_data: str, reduced_steps: int,
                  reduced_lr_step: int) -> None:
    """GridError naming the first option of the random and reduced series that is invalid."""
    for option, value in (("random_control", random_control), ("reduced_data", reduced_data)):
        if value not in DATA_CHOICES:
            raise GridError(f"--{option}={value} is invalid: use whole (the paper's: the whole "
                            "dataset, data_prep's --split=whole) or half (the halves of each "
                            "class split)")
    for option, value in (("reduced_steps", reduced_steps), ("reduced_lr_step", reduced_lr_step)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise GridError(f"--{option}={value} is invalid: give a whole number of steps, or 0 "
                            "for main's own")


def enumerate_nets(*, dataset: str, splits, seeds, experiments=DEFAULT_EXPERIMENTS,
                   targets=naming.HALVES, n_values=naming.PAPER_N,
                   reduced_examples=(), selffer_targets=None, random_splits=None,
                   random_control="whole", reduced_data="whole", reduced_steps=0,
                   reduced_lr_step=0, external_base=False) -> list[PlannedNet]:
    """Every net of the requested experiments, bases first, each net listed once.

    transfer: per split and seed, baseA, baseB and for each n BnB, BnB+, AnB, AnB+ (and, for
    target A, AnA, AnA+, BnA, BnA+): 2 + 28 + 28 nets; `selffer_targets` (default: every
    target) limits the selffer nets to some halves, e.g. B only as in the paper (2 + 28 + 14).
    random: the random-features control. `random_control="whole"` (the paper's): per seed,
    baseA on the whole dataset (split `whole`) and R nA there, 1 + 7 nets, compared with that
    base in the report; "half": R nB on half B against baseB, 7 nets per split of
    `random_splits` (default: every split). dissimilar: the transfer set on the dataset's
    dissimilar split, per seed. reduced: base nets per examples-per-class value, trained with
    main's --steps and --lr_step, or `reduced_steps` and `reduced_lr_step` where not 0;
    `reduced_data="whole"` (the paper's): baseA on the whole dataset per seed; "half": baseA
    and baseB per split and seed. `external_base`: main's --base_model stands in for baseA
    (check_external_base says with what): no baseA, AnB and AnB+ copy from it.
    """
    if external_base:
        check_external_base(experiments=experiments, targets=targets,
                            random_control=random_control)
    check_choices(random_control=random_control, reduced_data=reduced_data,
                  reduced_steps=reduced_steps, reduced_lr_step=reduced_lr_step)
    selffer_targets = tuple(targets if selffer_targets is None else selffer_targets)
    random_splits = list(splits if random_splits is None else random_splits)
    unknown = sorted(set(experiments) - set(EXPERIMENTS))
    if unknown:
        raise GridError(f"unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(EXPERIMENTS)}")
    if "reduced" in experiments and not reduced_examples:
        raise GridError("--experiments=reduced needs --reduced_examples=N1,N2,... "
                        "(training examples per class of each reduced base net)")

    def reduced_bases(split, seed, halves):
        return [PlannedNet("reduced", split, naming.split_dir(split, epc), seed, "none", h, 0,
                           False, epc, reduced_steps, reduced_lr_step)
                for epc in reduced_examples for h in halves]

    nets: list[PlannedNet] = []
    for split in splits:
        for seed in seeds:
            if "transfer" in experiments:
                nets += transfer_set("transfer", split, seed, targets, n_values,
                                     selffer_targets=selffer_targets,
                                     external_base=external_base)
            if "convergence" in experiments:
                nets += [PlannedNet("convergence", split, naming.split_dir(split), seed, "none",
                                    h, 0, False, stretch=CONVERGENCE_STRETCH)
                         for h in naming.HALVES]
            if "random" in experiments and random_control == "half" and split in random_splits:
                sd = naming.split_dir(split)
                nets += [PlannedNet("random", split, sd, seed, "random", "B", n, False)
                         for n in n_values]
            if "reduced" in experiments and reduced_data == "half":
                nets += reduced_bases(split, seed, naming.HALVES)
    for seed in seeds:  # the whole dataset is one task: its nets are per seed, not per split
        if "random" in experiments and random_control == "whole":
            sd = naming.split_dir(WHOLE_SPLIT)
            nets += [PlannedNet("random", WHOLE_SPLIT, sd, seed, source, "A", n, False)
                     for source, n in (("none", 0), *(("random", n) for n in n_values))]
        if "reduced" in experiments and reduced_data == "whole":
            nets += reduced_bases(WHOLE_SPLIT, seed, ("A",))
    if "dissimilar" in experiments:
        for seed in seeds:
            nets += transfer_set("dissimilar", dissimilar_split(dataset), seed, targets, n_values,
                                 selffer_targets=selffer_targets)
    unique = {}
    for net in nets:                                # a run dir asked for twice is one net
        unique.setdefault(net.key, net)
    # Stable sort: base nets, then the random-features control, then nets that copy from a base.
    return sorted(unique.values(), key=lambda net: (bool(net.needs), net.n > 0))


def stages(nets):
    """Nets without dependencies (bases, random features), then the nets that copy from a base."""
    first = [net for net in nets if not net.needs]
    second = [net for net in nets if net.needs]
    return [(name, group) for name, group in
            (("stage 1, no dependencies", first), ("stage 2, after their base nets", second)) if group]


def base_keys(nets) -> set:
    """Keys of the nets some net copies from."""
    return {key for net in nets for key in net.needs}


def packs(nets, size_of, bases) -> list[list[PlannedNet]]:
    """The nets in packs: nets of one pack key, at most `size_of(net)` per pack, as few packs
    as that allows, the first ones full (the launcher starts one pack per free process and
    packs the rest again with the nets that have become ready meanwhile).

    Nets in `bases` (keys of nets others copy from) are packed alone, so their dependants are
    not held up by packmates; for the rest, a pack shares one input stream and compiled step.
    The frozen nets that copy from one base (AnB for every n) go into one pack, where their
    copied layers' forward pass is computed once (steps.PackSteps). Within those bounds the
    packs get equal shares of the work, so that packs started together end together: the
    costliest nets (or groups) first, each into the pack with the least work so far
    (`trained_blocks` as the measure of a net's work).
    """
    result, by_key = [], {}
    for net in nets:
        if net.key in bases or size_of(net) <= 1:
            result.append([net])
        else:
            by_key.setdefault(net.pack_key, []).append(net)
    for group in by_key.values():
        size = size_of(group[0])
        order = {net.key: index for index, net in enumerate(group)}
        top = max(net.n for net in group)
        sharing, units = {}, []
        for net in group:
            if net.source in naming.HALVES and not net.finetune:
                sharing.setdefault(net.source, []).append(net)
            else:
                units.append([net])
        units += [unit[i:i + size] for unit in sharing.values() for i in range(0, len(unit), size)]
        count = -(-len(group) // size)
        capacity = [size] * (count - 1) + [len(group) - size * (count - 1)]
        filled, work = [[] for _ in range(count)], [0] * count
        work_of = lambda unit: sum(trained_blocks(net, top) for net in unit)
        for unit in sorted(units, key=lambda u: (-work_of(u), -len(u), order[u[0].key])):
            room = [i for i, pack in enumerate(filled) if len(pack) + len(unit) <= capacity[i]]
            if not room:  # a frozen group that fits nowhere whole: a pack of its own
                filled.append([])
                work.append(0)
                capacity.append(size)
                room = [len(filled) - 1]
            best = min(room, key=lambda i: (work[i], i))
            filled[best] += unit
            work[best] += work_of(unit)
        result += [sorted(pack, key=lambda net: order[net.key]) for pack in filled if pack]
    return result


def trained_blocks(net: PlannedNet, top: int) -> int:
    """How many of a net's blocks train, of the `top` cut points and the head above them: a
    measure of its work in a pack that needs no model (a block's gradients cost about twice
    its forward pass; a net's frozen bottom is mostly computed once for the pack)."""
    return top + 1 - (0 if net.finetune else net.n)
