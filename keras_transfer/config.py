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

from keras_transfer import naming

class ConfigError(Exception):
    """Flags that cannot be run as given; the message says how to fix them."""


STRATEGIES = ("mirrored", "multi_worker", "one_device")
PRECISIONS = ("float32", "bfloat16", "float16")


def define_flags() -> None:
    """Defines the flags (idempotent, so tests can import main twice)."""
    if "source" in flags.FLAGS:
        return
    # What to train.
    flags.DEFINE_enum("source", "none", list(naming.SOURCES),
                      "Where layers 1..n come from: none (a base net), A or B (that base net's "
                      "weights), random (fresh random weights, frozen: the random-features control).")
    flags.DEFINE_enum("target", "B", list(naming.HALVES), "The half this net is trained on.")
    flags.DEFINE_integer("n", 0, "Number of layers copied (1..7: conv1..fc7); 0 trains a base net.",
                         lower_bound=None)
    flags.DEFINE_boolean("finetune", False,
                         "Fine-tune the copied layers (AnB+) instead of freezing them (AnB).")
    flags.DEFINE_enum("model", "small", ["caffenet", "small"],
                      "caffenet: the paper's 227 px network; small: the same 8 layers for 28-64 px.")
    flags.DEFINE_integer("fc8_outputs", 0,
                         "Width of fc8; 0 means the number of classes of the target half "
                         "(the authors' code used 1000 even for 500-class halves).")
    # Data.
    flags.DEFINE_string("data_dir", "data", "Output directory of `python -m data_prep`.")
    flags.DEFINE_string("dataset", "fashion_mnist", "Dataset folder name inside --data_dir.")
    flags.DEFINE_string("split", "random:0",
                        "Class split, as given to data_prep (random:S, natman, dissimilar, classes:FILE).")
    flags.DEFINE_integer("examples_per_class", 0,
                         "Reduced-volume series: use the data prepared with this many training "
                         "examples per class (0: all).")
    flags.DEFINE_integer("crop", 0, "Training crop size; 0: 227 for caffenet, 26 for small.")
    flags.DEFINE_boolean("verify_data", False,
                         "Hash every shard against the manifest before training (sizes are always checked).")
    # Solver (the paper's, for base and transfer nets alike).
    flags.DEFINE_integer("batch_size", 128, "Global batch size (split across replicas).")
    flags.DEFINE_integer("steps", 600, "Training steps; 0 means use --epochs.")
    flags.DEFINE_float("epochs", 0.0, "Training epochs over the target half, used when --steps=0.")
    flags.DEFINE_float("lr", 0.05, "Base learning rate (biases get twice this, as in Caffe).")
    flags.DEFINE_integer("lr_step", 450, "Divide the learning rate by 10 every this many steps; 0: never.")
    flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
    flags.DEFINE_float("weight_decay", 5e-4, "Caffe's weight decay: weight_decay * w is added to "
                       "each kernel's gradient by the solver; biases are not decayed.")
    flags.DEFINE_float("dropout", 0.5, "Dropout rate after fc6 and fc7.")
    flags.DEFINE_integer("eval_every", 60, "Evaluate on the validation set every this many steps.")
    flags.DEFINE_integer("eval_steps", 0, "Validation batches per evaluation; 0: the whole set.")
    # Where and how.
    flags.DEFINE_string("workdir", "runs", "Root of the run directories.")
    flags.DEFINE_integer("seed", 0, "Seed of the run: initialisation, data order, augmentation.")
    flags.DEFINE_boolean("deterministic", False,
                         "Enable TF op determinism (bit-identical reruns; disables XLA).")
    flags.DEFINE_boolean("xla", False, "Compile the train step with XLA (jit_compile=True).")
    flags.DEFINE_enum("mixed_precision", "float32", list(PRECISIONS),
                      "Compute dtype; fc8 and the softmax stay float32.")
    flags.DEFINE_enum("strategy", "mirrored", list(STRATEGIES),
                      "mirrored: all local GPUs; multi_worker: TF_CONFIG or a SLURM allocation; "
                      "one_device: the first device.")
    flags.DEFINE_integer("threads", 0, "TensorFlow intra-op threads; 0: TensorFlow's default.")
    flags.DEFINE_integer("histogram_every", 5,
                         "Write weight histograms and conv1 filters every this many evaluations.")


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
    steps: int = 600
    epochs: float = 0.0
    lr: float = 0.05
    lr_step: int = 450
    momentum: float = 0.9
    weight_decay: float = 5e-4
    dropout: float = 0.5
    eval_every: int = 60
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
        return Path(self.data_dir) / self.dataset / self.split_dir / half

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
