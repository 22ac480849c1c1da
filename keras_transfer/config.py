"""Every flag of `python -m keras_transfer.main`, and the frozen config they resolve to.

Only main reads FLAGS; it calls `from_flags(FLAGS)` and passes the resulting `Config` down.
The defaults are the embedded Fashion-MNIST preset, so the bare command
`python -m keras_transfer.main --source=A --n=5 --finetune` trains A5B+ on it;
`flags/fashion_mnist.flags` spells the same values out.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from absl import flags

from data_prep import layout
from keras_transfer import naming

class ConfigError(Exception):
    """Flags that cannot be run as given; the message says how to fix them."""


STRATEGIES = ("mirrored", "multi_worker", "one_device")
PRECISIONS = ("float32", "bfloat16", "float16")
# The flags that say which net to train; --nets gives them per net instead.
NET_FLAGS = ("source", "target", "n", "finetune")


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the flags in `flag_values` (idempotent, so tests can import main twice)."""
    if "source" in flag_values:
        return
    # What to train.
    flags.DEFINE_enum("source", "none", list(naming.SOURCES),
                      "Where layers 1..n come from: none (a base net), A or B (that base net's "
                      "weights), random (fresh random weights, frozen: the random-features control).",
                      flag_values=flag_values)
    flags.DEFINE_enum("target", "B", list(naming.HALVES), "The half this net is trained on.",
                      flag_values=flag_values)
    flags.DEFINE_integer("n", 0, "Number of layers copied (1..7: conv1..fc7); 0 trains a base net.",
                         lower_bound=None, flag_values=flag_values)
    flags.DEFINE_boolean("finetune", False,
                         "Fine-tune the copied layers (AnB+) instead of freezing them (AnB).",
                         flag_values=flag_values)
    flags.DEFINE_list("nets", [],
                      "Train these nets together as one pack, by name (e.g. baseB or B3B,A3B+,R3B; "
                      "all of one target half): one process, one input stream and one compiled "
                      "step for all, each net with its own run directory and result. Replaces "
                      "--source, --target, --n and --finetune.", flag_values=flag_values)
    flags.DEFINE_enum("model", "small", ["caffenet", "small"],
                      "caffenet: the paper's 227 px network; small: the same 8 layers for 28-64 px.",
                      flag_values=flag_values)
    flags.DEFINE_integer("fc8_outputs", 0,
                         "Width of fc8; 0 means the number of classes of the target half "
                         "(the authors' code used 1000 even for 500-class halves).",
                         flag_values=flag_values)
    # Data.
    flags.DEFINE_string("data_dir", "data", "Output directory of `python -m data_prep`.",
                        flag_values=flag_values)
    flags.DEFINE_string("dataset", "fashion_mnist", "Dataset folder name inside --data_dir.",
                        flag_values=flag_values)
    flags.DEFINE_string("split", "random:0",
                        "Class split, as given to data_prep (random:S, natman, dissimilar, classes:FILE).",
                        flag_values=flag_values)
    flags.DEFINE_integer("examples_per_class", 0,
                         "Reduced-volume series: use the data prepared with this many training "
                         "examples per class (0: all).", flag_values=flag_values)
    flags.DEFINE_integer("crop", 0, "Training crop size; 0: 227 for caffenet, 26 for small.",
                         flag_values=flag_values)
    flags.DEFINE_boolean("verify_data", False,
                         "Hash every shard against the manifest before training (sizes are always checked).",
                         flag_values=flag_values)
    # Solver (the paper's, for base and transfer nets alike).
    flags.DEFINE_integer("batch_size", 128, "Global batch size (split across replicas).",
                         flag_values=flag_values)
    flags.DEFINE_integer("steps", 480, "Training steps; 0 means use --epochs.",
                         flag_values=flag_values)
    flags.DEFINE_float("epochs", 0.0, "Training epochs over the target half, used when --steps=0.",
                       flag_values=flag_values)
    flags.DEFINE_float("lr", 0.05, "Base learning rate (biases get twice this, as in Caffe).",
                       flag_values=flag_values)
    flags.DEFINE_integer("lr_step", 160, "Divide the learning rate by 10 every this many steps; 0: never.",
                         flag_values=flag_values)
    flags.DEFINE_float("momentum", 0.9, "SGD momentum.", flag_values=flag_values)
    flags.DEFINE_float("weight_decay", 5e-4, "Caffe's weight decay: weight_decay * w is added to "
                       "each kernel's gradient by the solver; biases are not decayed.",
                       flag_values=flag_values)
    flags.DEFINE_float("dropout", 0.5, "Dropout rate after fc6 and fc7.", flag_values=flag_values)
    flags.DEFINE_integer("eval_every", 80, "Evaluate on the validation set every this many steps.",
                         flag_values=flag_values)
    flags.DEFINE_integer("eval_steps", 0, "Validation batches per evaluation; 0: the whole set.",
                         flag_values=flag_values)
    # Where and how.
    flags.DEFINE_string("workdir", "runs", "Root of the run directories.", flag_values=flag_values)
    flags.DEFINE_integer("seed", 0, "Seed of the run: initialisation, data order, augmentation.",
                         flag_values=flag_values)
    flags.DEFINE_boolean("deterministic", False,
                         "Enable TF op determinism (bit-identical reruns; disables XLA).",
                         flag_values=flag_values)
    flags.DEFINE_boolean("xla", False, "Compile the train step with XLA (jit_compile=True).",
                         flag_values=flag_values)
    flags.DEFINE_enum("mixed_precision", "float32", list(PRECISIONS),
                      "Compute dtype; fc8 and the softmax stay float32.", flag_values=flag_values)
    flags.DEFINE_enum("strategy", "mirrored", list(STRATEGIES),
                      "mirrored: all local GPUs; multi_worker: TF_CONFIG or a SLURM allocation; "
                      "one_device: the first device.", flag_values=flag_values)
    flags.DEFINE_integer("threads", 0, "TensorFlow intra-op threads; 0: TensorFlow's default.",
                         flag_values=flag_values)
    flags.DEFINE_integer("histogram_every", 5,
                         "Write weight histograms and conv1 filters every this many evaluations.",
                         flag_values=flag_values)


@dataclasses.dataclass(frozen=True)
class Config:
    source: str = "none"
    target: str = "B"
    n: int = 0
    finetune: bool = False
    model: str = "small"
    fc8_outputs: int = 0
    data_dir: str = "data"
    dataset: str = "fashion_mnist"
    split: str = "random:0"
    examples_per_class: int = 0
    crop: int = 0
    verify_data: bool = False
    batch_size: int = 128
    steps: int = 480
    epochs: float = 0.0
    lr: float = 0.05
    lr_step: int = 160
    momentum: float = 0.9
    weight_decay: float = 5e-4
    dropout: float = 0.5
    eval_every: int = 80
    eval_steps: int = 0
    workdir: str = "runs"
    seed: int = 0
    deterministic: bool = False
    xla: bool = False
    mixed_precision: str = "float32"
    strategy: str = "mirrored"
    threads: int = 0
    histogram_every: int = 5

    # Derived names (see naming.py and docs/formats.md).
    @property
    def run(self) -> str:
        return naming.run_name(self.source, self.target, self.n, self.finetune)

    @property
    def condition(self) -> str:
        return naming.condition(self.source, self.target, self.n, self.finetune)

    @property
    def split_dir(self) -> str:
        from data_prep.splits import split_dirname
        return split_dirname(self.split, self.examples_per_class or None)

    def half_dir(self, half: str) -> Path:
        return layout.half_dir(self.data_dir, self.dataset, self.split_dir, half)

    @property
    def run_dir(self) -> Path:
        return naming.run_dir(self.workdir, self.dataset, self.split_dir, self.seed, self.run)

    def base_run_dir(self, half: str) -> Path:
        return naming.run_dir(self.workdir, self.dataset, self.split_dir, self.seed, f"base{half}")

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(run=self.run, condition=self.condition, split_dir=self.split_dir,
                 run_dir=str(self.run_dir))
        return d


def from_flags(flag_values) -> Config:
    """The Config of the parsed flags (the only place flags become values)."""
    fields = {f.name: flag_values[f.name].value for f in dataclasses.fields(Config)}
    return Config(**fields)


def pack_from_flags(flag_values) -> list[Config]:
    """The Configs of the nets to train: the one the flags describe, or each net of --nets."""
    config = from_flags(flag_values)
    names = flag_values["nets"].value
    if not names:
        return [config]
    given = [f"--{name}" for name in NET_FLAGS if flag_values[name].present]
    if given:
        raise ConfigError(f"--nets names each net, so {', '.join(given)} cannot be given with it")
    configs = []
    for name in names:
        try:
            configs.append(dataclasses.replace(config, **naming.parse_run_name(name)))
        except ValueError as e:
            raise ConfigError(f"--nets: {e}") from e
    return configs  # train.run_pack checks that they can train together


def resolve(flagfile: str | None, extra_flags: list[str]) -> Config:
    """The Config main would run with for this flagfile and these flags, without touching FLAGS.

    For tools that plan main's runs without being main (the grid): parsing into a fresh
    FlagValues leaves the global FLAGS, and a main in the same process, untouched. Raises
    ConfigError with absl's message if the flags do not parse.
    """
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    argv = ["keras_transfer.main"] + ([f"--flagfile={flagfile}"] if flagfile else [])
    argv += list(extra_flags)
    try:
        flag_values(argv)
    except flags.Error as e:
        raise ConfigError(str(e)) from e
    return from_flags(flag_values)
