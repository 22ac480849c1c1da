"""Every flag of `python -m keras_transfer.main`, and the frozen config they resolve to.

Only main reads FLAGS; it calls `from_flags(FLAGS)` and passes the resulting `Config` down.
The defaults are the embedded Fashion-MNIST preset, so the bare command
`python -m keras_transfer.main --source=A --n=5 --finetune` trains A5B+ on it. Each flag is a
`Config` field: its name, type, default and help are written once, there.
"""
from __future__ import annotations

import dataclasses
import math
import shlex
import sys
from pathlib import Path

from absl import flags

from data_prep import layout
from keras_transfer import metrics, models, naming


class ConfigError(Exception):
    """Flags that cannot be run as given; the message says how to fix them."""


STRATEGIES = ("mirrored", "multi_worker", "one_device")
PRECISIONS = ("float32", "bfloat16", "float16")
# The flags that say which net to train; --nets gives them per net instead.
NET_FLAGS = ("source", "target", "n", "finetune", "stretch")
MEAN_IMAGES = ("base", "target")
ADAPT_INPUTS = ("none", "resize", "crop", "pad")  # data.ADAPT_MODES, without importing TensorFlow
ADAPT_CHANNELS = ("none", "repeat")


def _flag(default, help: str, *, choices=None, allowed=None):
    """A Config field that is also a flag of main: its default, help text, enum choices and, for
    a number, `allowed`: (a test of the value, the rule in words)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices,
                                                        "allowed": allowed})


# The values a numeric flag may take (NaN and infinity never): a test and the rule in words.
NON_NEGATIVE = (lambda v: v >= 0), "it must be 0 or more"
POSITIVE = (lambda v: v > 0), "it must be positive"
# Every integer flag is a count, kept below 2**31 (TensorFlow's int32 shapes and sizes).
MAX_COUNT = 2**31 - 1
BELOW_ONE = (lambda v: 0 <= v < 1), "it must be at least 0 and below 1"
SEED_RANGE = (lambda v: 0 <= v < 2**31), "a seed is an integer from 0 to 2**31 - 1"


@dataclasses.dataclass(frozen=True)
class Config(naming.NetIdentity):
    """The settings of one run. Each field is a flag of main with the same name, type and
    default (`define_flags` makes the flags from these fields), so a default is written once."""
    # What to train.
    source: str = _flag("none", "Where layers 1..n come from: none (a base net), A or B (that base "
                        "net's weights), random (fresh random weights, frozen: the random-features "
                        "control).", choices=naming.SOURCES)
    target: str = _flag("B", "The half this net is trained on.", choices=naming.HALVES)
    n: int = _flag(0, "Number of cut points copied (1..k: conv1..fc7 for caffenet and small, "
                   "k = 7; see --model); 0 trains a base net.")
    finetune: bool = _flag(False, "Fine-tune the copied layers (AnB+) instead of freezing them "
                           "(AnB).")
    model: str = _flag("small", "The network: " + "; ".join(
        f"{name}: {models.get(name).about} (k = {models.get(name).max_n})"
        for name in models.NAMES) + "; or your own, without editing the package: "
        "module:function or path/to/file.py:function, a function that returns a "
        "keras_transfer.models.Architecture (docs/examples/my_model.py).")
    base_model: str = _flag("", "A network trained elsewhere that takes baseA's role: nets with "
                            "--source=A (target B) copy cut points 1..n from it, matched by the "
                            "--model's layer names. A saved Keras model (.keras) of the --model "
                            "architecture; for resnet50 and mobilenetv2 also a weights file "
                            "(.weights.h5, .h5: keras.applications' weights=PATH, saved without "
                            "the top) or imagenet (downloaded by Keras: needs network access). "
                            "Empty: baseA of the grid.")
    adapt_input: str = _flag("none", "With --base_model: how the target's crops become the "
                             "external network's input size (its saved input; 224 for a "
                             "weights file): resize, crop (the centre; crops at least that big) "
                             "or pad (zeros; crops at most that big); none feeds the crops as "
                             "they are (convolutions take any size; a copied dense layer "
                             "does not).", choices=ADAPT_INPUTS)
    adapt_channels: str = _flag("none", "With --base_model: repeat the grey channel of 1-channel "
                                "images to the external network's channels (repeat), or none.",
                                choices=ADAPT_CHANNELS)
    fc8_outputs: int = _flag(0, "Width of fc8; 0 means the number of classes of the target half "
                             "(the authors' code used 1000 even for 500-class halves).",
                             allowed=NON_NEGATIVE)
    # Data.
    data_dir: str = _flag("data", "Output directory of `python -m data_prep`.")
    dataset: str = _flag("fashion_mnist", "Dataset folder name inside --data_dir.")
    split: str = _flag("random:0", "Class split, as given to data_prep (random:S, natman, "
                       "dissimilar, classes:FILE, whole: every class in half A).")
    examples_per_class: int = _flag(0, "Reduced-volume series: use the data prepared with this "
                                    "many training examples per class (0: all).",
                                    allowed=NON_NEGATIVE)
    crop: int = _flag(0, "Training crop size; 0: the network's own: " + ", ".join(
        f"{models.get(name).crop_of_256} for {name}" for name in models.NAMES
        if models.get(name).crop_of_256) + "; the image size minus 2 for " + " and ".join(
        name for name in models.NAMES if not models.get(name).crop_of_256)
        + " (26 of Fashion-MNIST's 28 px).", allowed=NON_NEGATIVE)
    # The paper subtracted the mean image of the base net's data from every input, so copied
    # layers see their inputs centred as in training; the target half's mean is the other choice.
    mean_image: str = _flag("base", "Whose per-pixel training mean is subtracted from the inputs: "
                            "base (the paper's: the mean of the half the copied layers were trained "
                            "on, A's for AnB) or target (the half this net trains on). "
                            "Base nets and the random-features control always use their own "
                            "half's, and nets copying --base_model the target's (its training "
                            "mean is not known).", choices=MEAN_IMAGES)
    verify_data: bool = _flag(False, "Hash every shard against the manifest before training "
                              "(sizes are always checked).")
    # Solver (the paper's, for base and transfer nets alike: momentum 0.9, weight decay 5e-4,
    # bias lr x2, lr/10 steps) with a higher base lr for the short schedule: 720 steps of 128
    # (3 epochs of a half), lr 0.05, /10 at step 540 (the last quarter, as the paper's final
    # step), an evaluation every 120 steps. Chosen on a split the demo does not report
    # (random:9, baseA and baseB, seeds 0 and 1), against the same nets trained twice as long
    # (--stretch=2, the report's convergence control): this shape ended highest of the 720-step
    # ones (0.894-0.920; the twice-as-long nets 0.9-2.0 points higher, mean 1.3), above steps
    # at 240 and 480 (0.880-0.908, 0.9-3.0 points short) and at 360 (0.893-0.917, 1.0-1.9);
    # the former 480 steps with steps at 160 and 320 ended at 0.883-0.896 (0.8-3.1 points
    # short) and at 0.74-0.79 on random:0's baseB, a stall its flat last evaluations hid.
    # Longer schedules come closer but not to the control's 1 point: the same nets at x4 (2,880
    # steps) ended 0.3-1.1 points above x2 (mean 0.8; x1 to x2: 0.9-2.0), so on this network
    # top-1 still gains about a point per doubling at 4x the demo's compute. Batch 64 for 1,440
    # steps (the same images) ended 0.0-1.9 points below this shape (mean 0.9, seeds 0 and 1);
    # lr 0.02, 0.6 below on both halves (seed 0). Halves holding three or four of the four
    # upper-body garments (T-shirt, pullover, coat, shirt) are the slowest: random:4's half A
    # (seed 0) ends at 0.793, 0.839, 0.856 and 0.867 at x1, x2, x4 and x8. On it (seeds 0 and
    # 1) neither --dropout=0 (x2 -0.9 and +4.0 points from x1) nor --crop=28, no random crops
    # (+2.9, +2.9), brings x1 within a point of x2.
    # The demo's 30 minutes on 2 cores set the length.
    batch_size: int = _flag(128, "Global batch size (split across replicas).",
                            allowed=POSITIVE)
    steps: int = _flag(720, "Training steps; 0 means use --epochs.",
                       allowed=NON_NEGATIVE)
    epochs: float = _flag(0.0, "Training epochs over the target half, used when --steps=0.",
                          allowed=NON_NEGATIVE)
    lr: float = _flag(0.05, "Base learning rate (biases get twice this, as in Caffe).",
                      allowed=POSITIVE)
    lr_step: int = _flag(540, "Divide the learning rate by 10 every this many steps; 0: never.",
                         allowed=NON_NEGATIVE)
    momentum: float = _flag(0.9, "SGD momentum.",
                            allowed=BELOW_ONE)
    weight_decay: float = _flag(5e-4, "Caffe's weight decay: weight_decay * w is added to each "
                                "kernel's gradient by the solver; biases are not decayed.",
                                allowed=NON_NEGATIVE)
    dropout: float = _flag(0.5, "Dropout rate after fc6 and fc7.",
                           allowed=BELOW_ONE)
    eval_every: int = _flag(120, "Evaluate on the validation set every this many steps.",
                            allowed=POSITIVE)
    eval_last: int = _flag(metrics.CONVERGED_EVALUATIONS,
                           "Evaluate only at the last this many of the --eval_every points "
                           "(a backup is written at each); 0: at all of them. The report needs "
                           "the final evaluation and, for its convergence control, the last "
                           f"{metrics.CONVERGED_EVALUATIONS}.",
                           allowed=NON_NEGATIVE)
    eval_steps: int = _flag(0, "Validation batches per evaluation; 0: the whole set.",
                            allowed=NON_NEGATIVE)
    stretch: int = _flag(1, "Train on a schedule this many times as long: --steps (or --epochs), "
                         "--lr_step and --eval_every multiplied. The run is named e.g. "
                         "baseB-x2; the grid's convergence control trains each base net again "
                         "at 2 and the report compares the two.", allowed=POSITIVE)
    # Where and how.
    workdir: str = _flag("runs", "Root of the run directories.")
    seed: int = _flag(0, "Seed of the run: initialisation, data order, augmentation.",
                      allowed=SEED_RANGE)
    deterministic: bool = _flag(False, "Enable TF op determinism (bit-identical reruns; "
                                "disables XLA).")
    xla: bool = _flag(False, "Compile the train step with XLA (jit_compile=True).")
    mixed_precision: str = _flag("float32", "Compute dtype; fc8 and the softmax stay float32.",
                                 choices=PRECISIONS)
    strategy: str = _flag("mirrored", "mirrored: all local GPUs; multi_worker: TF_CONFIG or a "
                          "SLURM allocation; one_device: the first device.", choices=STRATEGIES)
    threads: int = _flag(0, "TensorFlow intra-op threads; 0: TensorFlow's default.",
                         allowed=NON_NEGATIVE)
    overwrite: bool = _flag(False, "Retrain the net from scratch even if it is finished, "
                            "diverged or half-trained with other settings: its old run is moved "
                            "aside into <run>/.replaced-<time>/ and deleted once the new one is "
                            "done.")
    histogram_every: int = _flag(5, "Write weight histograms and conv1 filters every this many "
                                 "evaluations.",
                                 allowed=POSITIVE)

    def stretched(self, steps):
        """A length of the schedule (--steps, --epochs, --lr_step, --eval_every) as trained."""
        return steps * self.stretch

    # Derived names (see naming.py and docs/formats.md).
    run = naming.NetIdentity.name  # the net's name, as config.json and result.json call it

    @property
    def split_dir(self) -> str:
        return naming.split_dir(self.split, self.examples_per_class)

    @property
    def copies_external(self) -> bool:
        """Whether its copied layers come from --base_model (in baseA's role), not baseA."""
        return bool(self.base_model) and self.source == "A" and self.n > 0

    @property
    def mean_half(self) -> str:
        """The half whose training mean image this net's inputs have subtracted (the target's
        for a net copying --base_model, whose training mean is not known)."""
        if self.mean_image == "base" and self.source in naming.HALVES and not self.copies_external:
            return self.source
        return self.target

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
                 run_dir=str(self.run_dir), mean_half=self.mean_half)
        return d


_DEFINE = {"str": flags.DEFINE_string, "int": flags.DEFINE_integer, "float": flags.DEFINE_float,
           "bool": flags.DEFINE_boolean}
NETS_HELP = ("Train these nets together as one pack, by name (e.g. baseB or B3B,A3B+,R3B; all of "
             "one target half): one process, one input stream and one compiled step for all, each "
             "net with its own run directory and result. Replaces --source, --target, --n and "
             "--finetune.")


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines main's flags in `flag_values`: one per Config field, and --nets (idempotent, so
    tests can import main twice)."""
    if "source" in flag_values:
        return
    for field in dataclasses.fields(Config):
        help_text, choices = field.metadata["help"], field.metadata["choices"]
        if choices:
            flags.DEFINE_enum(field.name, field.default, list(choices), help_text,
                              flag_values=flag_values)
        else:
            _DEFINE[field.type](field.name, field.default, help_text, flag_values=flag_values)
    flags.DEFINE_list("nets", [], NETS_HELP, flag_values=flag_values)


def flag_names() -> set[str]:
    """The names of main's flags, as define_flags defines them (a boolean's --noNAME aside)."""
    return {field.name for field in dataclasses.fields(Config)} | {"nets"}


def list_in_help(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Makes `--help` list main's flags. absl's --help lists the key flags of the module named
    by sys.argv[0] (main.py under `python -m`, the console script's path otherwise); the flags
    are defined here, so they are declared key flags of whichever it is."""
    for flag in flag_values.get_flags_for_module(__name__):
        flag_values.register_key_flag_for_module(sys.argv[0], flag)


def check_values(config: Config) -> None:
    """Raises ConfigError naming the first numeric flag outside its allowed values."""
    for field in dataclasses.fields(Config):
        if field.metadata["allowed"] is None:
            continue
        allowed, rule = field.metadata["allowed"]
        value = getattr(config, field.name)
        if not (math.isfinite(value) and allowed(value)):
            raise ConfigError(f"--{field.name}={value} is out of range: {rule}.")
        if isinstance(value, int) and value > MAX_COUNT:
            raise ConfigError(f"--{field.name}={value} is out of range: it must be at most "
                              f"2**31 - 1.")


def from_flags(flag_values) -> Config:
    """The Config of the parsed flags (the only place flags become values), its values checked."""
    config = Config(**{f.name: flag_values[f.name].value for f in dataclasses.fields(Config)})
    check_values(config)
    return config


def command(config: Config, *, overwrite: bool = False) -> str:
    """The `python -m keras_transfer.main` command that trains `config` (every flag that differs
    from its default), for the hints in error messages; `overwrite` adds --overwrite."""
    defaults = Config()
    parts = ["python -m keras_transfer.main", f"--source={config.source}",
             f"--target={config.target}"]
    for field in dataclasses.fields(Config):
        value = getattr(config, field.name)
        if field.name in ("source", "target", "overwrite"):
            continue
        if value == getattr(defaults, field.name):
            continue
        if isinstance(value, bool):
            parts.append(f"--{'' if value else 'no'}{field.name}")
        else:
            parts.append(shlex.quote(f"--{field.name}={value}"))
    return " ".join(parts + (["--overwrite"] if overwrite else []))


def from_record(recorded: dict) -> Config:
    """The Config a run's config.json records (fields it lacks keep their defaults)."""
    names = {field.name for field in dataclasses.fields(Config)} - {"overwrite"}
    return Config(**{k: v for k, v in recorded.items() if k in names})


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
