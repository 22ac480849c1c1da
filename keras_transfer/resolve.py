"""One step turns a run's Config into a checked, immutable plan: `resolve(config) -> Resolved`.

Every check that can be made before a file is written happens here, once: the flags, the data
(the target half's manifest, and the source half's where its mean image is used), the base net
a transfer run copies from (finished, trained on these classes with this model, its weights
readable for this input shape; or the network of --base_model, external_base.py), and what
follows from them: the input shape, the number of outputs, the steps. train takes the plan and
checks none of it again.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from data_prep import splits
from data_prep.errors import DataPrepError
from keras_transfer import config as config_lib
from keras_transfer import data, external_base, models, naming, transfer
from keras_transfer.config import Config
from keras_transfer.run_records import RecordError, RunDir, load_record


class RunError(Exception):
    """A run cannot start: the message says what is wrong and how to fix it."""


@dataclasses.dataclass(frozen=True)
class Resolved:
    """One net's checked inputs and what follows from them."""
    config: Config
    target_manifest: dict  # the half it trains and evaluates on
    base_weights: dict | None  # the base net's layer weights it copies (None: copies none)
    input_shape: tuple  # the network's input (crop, crop, channels; adapted for --base_model)
    num_classes: int  # fc8's outputs
    total_steps: int  # the whole schedule, --stretch included
    top_k: int | None  # 5 for top-5 accuracy, or None where it means nothing
    crop: int = 0  # the input stream's crops (before an external base's adaptation)
    external: external_base.ExternalBase | None = None  # --base_model, if it copies from it

    @property
    def copied_from(self) -> str | None:
        """The origin of its copied cut points (baseA, baseB, external), None if it copies none."""
        if self.external is not None:
            return external_base.ORIGIN
        return f"base{self.config.source}" if self.config.source in naming.HALVES else None


def resolve(config: Config) -> Resolved:
    """The plan for `config`, or a RunError naming what is wrong and how to fix it. Reads the
    manifests and the base net's records and weights; writes nothing."""
    target_manifest, base_weights = check_inputs(config)
    crop_shape = input_shape_of(config, target_manifest)
    num_classes = config.fc8_outputs or target_manifest["num_classes"]
    external = read_external(config, crop_shape, num_classes)
    return Resolved(
        config=config, target_manifest=target_manifest,
        base_weights=external.weights if external else base_weights,
        input_shape=external.model_input if external else crop_shape,
        num_classes=num_classes,
        total_steps=total_steps(config, target_manifest["counts"]["train"]),
        top_k=top_k(target_manifest), crop=crop_shape[0], external=external)


def read_external(config: Config, crop_shape: tuple,
                  num_classes: int) -> external_base.ExternalBase | None:
    """The --base_model network a net copies from, checked against it; None if it copies
    from none."""
    if not config.copies_external:
        return None
    try:
        return external_base.read(config, crop_shape, num_classes)
    except external_base.ExternalBaseError as e:
        raise RunError(str(e)) from None


def check_external_flags(config: Config) -> None:
    """--base_model stands in for baseA, of half A: what makes no sense with it is refused."""
    if not config.base_model:
        for name in ("adapt_input", "adapt_channels"):
            if getattr(config, name) != "none":
                raise RunError(f"--{name}={getattr(config, name)} adapts inputs to a network "
                               "trained elsewhere: give it with --base_model, or drop it.")
        return
    if config.target == "A":
        raise RunError(f"--base_model stands in for baseA, so the nets it serves train on half "
                       f"B; {config.run} trains on half A: give --target=B, or drop "
                       "--base_model.")
    if config.copies_external and (problem := external_base.path_problem(config.base_model,
                                                                         config.model)):
        raise RunError(problem + ".")


def total_steps(config: Config, train_count: int) -> int:
    if config.steps:
        return config.stretched(config.steps)
    return max(1, math.ceil(config.stretched(config.epochs) * train_count / config.batch_size))


def top_k(manifest: dict) -> int | None:
    """5 for top-5 accuracy, or None where it means nothing: a half of 5 classes or fewer
    always has its label among the 5 highest outputs."""
    return 5 if manifest["num_classes"] > 5 else None


# More evaluation points (each writes a backup) than this is a mistake in the flags.
MAX_EVALUATION_POINTS = 1_000_000


def check_config(config: Config) -> None:
    try:
        arch = models.get(config.model)
    except models.ModelError as e:
        raise RunError(str(e)) from None
    problem = naming.net_problem(config.source, config.n, config.finetune, model=arch.name,
                                 cut_names=arch.cut_names, flag="--")
    if problem:
        raise RunError(problem + ".")
    try:
        config_lib.check_values(config)
    except config_lib.ConfigError as e:
        raise RunError(str(e)) from None
    if config.steps == 0 and config.epochs == 0:
        raise RunError("--steps=0 and --epochs=0 train nothing: give --steps (e.g. 720) or "
                       "--epochs.")
    if config.stretched(config.steps) > config_lib.MAX_COUNT:
        raise RunError(f"--steps={config.steps} x --stretch={config.stretch} is more steps than "
                       "a run can count (2**31 - 1): give fewer.")
    check_external_flags(config)


def check_schedule(config: Config, total: int) -> None:
    """The run's length in steps and evaluation points can be counted and held."""
    if total > config_lib.MAX_COUNT:
        raise RunError(f"--epochs={config.epochs} is {total} steps, more than a run can count "
                       "(2**31 - 1): give fewer.")
    points = total // config.stretched(config.eval_every)
    if points > MAX_EVALUATION_POINTS:
        raise RunError(f"--eval_every={config.eval_every} over {total} steps is {points} "
                       f"evaluation points, each writing a backup (at most "
                       f"{MAX_EVALUATION_POINTS:,}): give a larger --eval_every.")


def check_split(config: Config, manifest: dict) -> None:
    """The target half was prepared for this --split. A split file's folder is named by its
    stem, so classes:a/s.json and classes:b/s.json share one: the classes decide, not the name."""
    prepared = manifest["split"]["spec"]
    if prepared == config.split:
        return
    known = {c["original_index"]: c["name"] for c in manifest["classes"] + manifest["other_half"]}
    count = manifest["num_source_classes"]
    names = [known[i] for i in range(count)] if set(known) == set(range(count)) else None
    try:
        halves = splits.resolve(config.split, count, names, manifest["dataset"])
    except (DataPrepError, ValueError) as e:
        raise RunError(f"--split={config.split}: {e}") from None
    wanted = list(halves.classes(config.target))
    have = [c["original_index"] for c in manifest["classes"]]
    if wanted != have:
        raise RunError(f"{config.half_dir(config.target)} was prepared for --split={prepared}, "
                       f"whose half {config.target} holds other classes ({have}) than "
                       f"--split={config.split}'s ({wanted}); the two share the folder "
                       f"{config.split_dir}. Give the split file another name, or prepare it "
                       "under another --data_dir.")


def check_images(config: Config, manifest: dict) -> None:
    """The target half holds a classification problem and images the network can take."""
    if manifest["num_classes"] < 2:
        raise RunError(f"half {config.target} of {config.split_dir} has "
                       f"{manifest['num_classes']} class: a classifier needs at least 2. "
                       "Prepare a split with at least 2 classes per half (data_prep --split).")
    height, width, _ = manifest["image_shape"]
    if config.crop > min(height, width):
        raise RunError(f"--crop={config.crop} is larger than the {height}x{width} images of half "
                       f"{config.target}: give at most {min(height, width)}, or 0 for the model's "
                       "own crop.")
    crop = input_shape_of(config, manifest)[0]
    arch = models.get(config.model)
    if not config.crop and crop > min(height, width):
        raise RunError(f"--model={arch.name} crops {crop}x{crop} pixels, larger than the "
                       f"{height}x{width} images of half {config.target}: prepare larger images "
                       "(data_prep --image_size=256) or give a --crop of at most "
                       f"{min(height, width)}.")
    if crop < arch.min_input:
        given = f"--crop={crop}" if config.crop else f"the {height}x{width} images cropped to {crop}"
        raise RunError(f"--model={arch.name} takes crops of at least {arch.min_input}x"
                       f"{arch.min_input} pixels, not {given}: prepare larger images "
                       f"(data_prep --image_size) or give a larger --crop.")


def check_own_model(config: Config, manifest: dict) -> None:
    """A network from the user's code (not built in, whose tests check it) builds for this
    data's input and classes, every variable in one cut point or the head."""
    if models.is_builtin(config.model):
        return
    try:
        models.check_build(config.model, config.fc8_outputs or manifest["num_classes"],
                           input_shape_of(config, manifest))
    except models.ModelError as e:
        raise RunError(str(e)) from None


def base_command(config: Config, half: str) -> str:
    """The command that trains (or, if it is finished, retrains) the base net a transfer run
    needs, with this run's data and solver (quoted in error messages)."""
    base = dataclasses.replace(config, source="none", target=half, n=0, finetune=False)
    return config_lib.command(base, overwrite=RunDir(base.run_dir).is_done())


def check_base(config: Config, target_manifest: dict, base_manifest: dict) -> Path | None:
    """The weights file of the base net to copy from, after checking it fits the target and
    was trained on the classes `base_manifest` (its half, as prepared now) lists."""
    if config.source not in naming.HALVES:
        return None
    base = RunDir(config.base_run_dir(config.source))
    if not base.is_done() or not base.weights_path.exists():
        raise RunError(f"{config.run} copies layers from base{config.source}, which has not been "
                       f"trained: {base.path} holds no finished run. Train it first:\n  "
                       + base_command(config, config.source))
    base_config = _read_base_record(config, base.config_path)
    base_data = _read_base_record(config, base.result_path).get("data", {})
    expected = {"dataset": target_manifest["dataset"], "split": target_manifest["split"]["spec"],
                "model": config.model}
    found = {"dataset": base_data.get("dataset", base_config.get("dataset")),
             "split": base_data.get("split", base_config.get("split")),
             "model": base_config.get("model")}
    if "classes" in base_data:  # the same split name prepared from other data or options
        expected["classes"] = [c["original_index"] for c in base_manifest["classes"]]
        found["classes"] = base_data["classes"]
        expected["image shape"] = list(base_manifest["image_shape"])
        found["image shape"] = base_data.get("image_shape", expected["image shape"])
    if found["model"] != expected["model"]:
        # That base is good for its own network: retraining it would lose it.
        own = dataclasses.replace(config, workdir=f"{config.workdir.rstrip('/')}_"
                                                  f"{naming.model_dirname(config.model)}")
        raise RunError(f"base{config.source} in {base.path} is a --model={found['model']} net and "
                       f"this run is --model={config.model}: the nets of one workdir share their "
                       f"base nets, so each network needs its own. Give this one its own "
                       f"--workdir and train its base there first:\n  "
                       + config_lib.command(dataclasses.replace(own, source="none",
                                                                target=config.source, n=0,
                                                                finetune=False)))
    for key in expected:
        if found[key] != expected[key]:
            raise RunError(f"base{config.source} in {base.path} was trained with {key} "
                           f"{found[key]!r}, but this run's data has {expected[key]!r}; its "
                           "layers do not transfer here. Retrain it:\n  "
                           + base_command(config, config.source))
    return base.weights_path


def _read_base_record(config: Config, path: Path) -> dict:
    """A base net's config.json or result.json, or a RunError that says how to retrain it."""
    try:
        return load_record(path)
    except RecordError as e:
        raise RunError(f"base{config.source}'s {path.name} in {path.parent} is unreadable ({e}); "
                       "its layers cannot be trusted. Retrain it:\n  "
                       + base_command(config, config.source)) from e


def input_shape_of(config: Config, manifest: dict) -> tuple[int, int, int]:
    height, width, channels = manifest["image_shape"]
    crop = config.crop or data.default_crop(config.model, min(height, width))
    return (crop, crop, channels)


def check_inputs(config: Config) -> tuple[dict, dict | None]:
    """Everything that can be checked before a file is written: config, data, the base net,
    whose weights are read here. Returns the target's manifest and the base's layer weights."""
    check_config(config)
    try:
        config.split_dir  # parses --split
    except ValueError as e:
        raise RunError(str(e)) from e  # data_prep's message names the flag and the fix
    try:
        target_manifest = data.load_half(config.half_dir(config.target),
                                         verify_data=config.verify_data)
    except data.DataError as e:
        raise RunError(str(e)) from e
    source_manifest = None
    if (config.source in naming.HALVES and config.source != config.target
            and not config.copies_external):
        try:
            source_manifest = data.load_half(config.half_dir(config.source))
        except data.DataError as e:
            raise RunError(str(e)) from e
    if (source_manifest and config.mean_half == config.source
            and source_manifest["image_shape"] != target_manifest["image_shape"]):
        raise RunError(f"--mean_image=base subtracts half {config.source}'s mean image, but its "
                       f"images are {source_manifest['image_shape']} and half {config.target}'s "
                       f"{target_manifest['image_shape']}; use --mean_image=target.")
    check_split(config, target_manifest)
    check_images(config, target_manifest)
    check_own_model(config, target_manifest)
    train_count = target_manifest["counts"]["train"]
    check_schedule(config, total_steps(config, train_count))
    if config.batch_size > train_count:
        raise RunError(f"--batch_size={config.batch_size} is larger than the {train_count} "
                       f"training images of half {config.target}: give at most {train_count}.")
    if 0 < config.fc8_outputs < target_manifest["num_classes"]:
        raise RunError(f"--fc8_outputs={config.fc8_outputs} is smaller than the "
                       f"{target_manifest['num_classes']} classes of half {config.target}.")
    if config.copies_external:  # read_external checks its base
        return target_manifest, None
    weights_path = check_base(config, target_manifest, source_manifest or target_manifest)
    if weights_path is None:
        return target_manifest, None
    base_result = _read_base_record(config, RunDir(config.base_run_dir(config.source)).result_path)
    try:
        base_weights = transfer.read_base_weights(
            weights_path, config.model, input_shape_of(config, target_manifest),
            int(base_result["num_outputs"]))
    except (transfer.TransferError, KeyError, TypeError, ValueError) as e:
        raise RunError(f"{e}\nRetrain base{config.source}:\n  "
                       + base_command(config, config.source)) from e
    return target_manifest, base_weights
