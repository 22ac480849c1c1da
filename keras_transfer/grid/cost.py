"""What a grid costs before it runs: `--dry_run` prints every command and the compute.

Paper-scale grids are hundreds of GPU-days, so the estimate (images trained x FLOP per image
of the preset's own model) comes before a single net is started, and it writes nothing.
"""
from __future__ import annotations

import shlex
import sys

from data_prep import quiet_tensorflow
from keras_transfer import models, naming
from keras_transfer.grid.nets import PlannedNet, stages, trained_blocks
from keras_transfer.grid.plan import Plan

CAFFENET_MULTIPLY_ADDS = 0.724e9  # design.md section 1, forward pass of one 227x227 image.
TRAIN_FLOPS_PER_MULTIPLY_ADD = 3 * 2  # forward + backward (about 2x forward); 2 FLOP per MAC.


def images_per_net(preset, plan: Plan, net: PlannedNet) -> float | None:
    """Training images one net sees: steps x batch (the net's own steps, else the preset's), or
    epochs x the target half's training count."""
    steps = net.steps or preset.steps
    if steps > 0:
        return float(steps * preset.batch_size)
    manifest = plan.target_manifest(net)
    if manifest is None:
        return None
    return preset.epochs * manifest["counts"]["train"]


def net_costs(plan: Plan, preset) -> dict:
    """Each net's training cost, by key, for the local grid's ETA (grid/progress.py): the images
    it trains (as the dry run counts them) x its work per image, blocks priced alike: a forward
    pass through each, and twice that again through each block that trains (nets.trained_blocks).
    No model is built, so the launcher stays free of TensorFlow; only the nets' ratios matter,
    since the ETA divides by the rate measured in the same unit."""
    top = models.get(preset.model).max_n
    images = {net.key: images_per_net(preset, plan, net) for net in plan.nets}
    known = [count for count in images.values() if count is not None]
    typical = sum(known) / len(known) if known else 1.0  # --epochs and no manifest to count
    return {net.key: (images[net.key] or typical) * (top + 1 + 2 * trained_blocks(net, top))
            for net in plan.nets}


def multiply_adds(preset, plan: Plan) -> tuple[float, str]:
    """Forward multiply-adds per image of the preset's model, and where the number comes from."""
    shape, classes, note = plan.model_input(preset)
    try:
        quiet_tensorflow.import_tensorflow()
        from keras_transfer import data
        crop = preset.crop or data.default_crop(preset.model, min(shape[0], shape[1]))
        model = models.build(preset.model, classes, (crop, crop, shape[2]))
        return float(models.multiply_adds(model)), f"{preset.model} at {crop}x{crop}x{shape[2]}{note}"
    except ImportError as e:
        if preset.model == "caffenet":
            return CAFFENET_MULTIPLY_ADDS, "caffenet, design.md's 0.724 G"
        return 0.0, f"unknown: {e}"


def dry_run(plan: Plan, preset, images_per_sec: float, out=sys.stdout) -> None:
    todo = [net for net in plan.nets if not plan.is_done(net)]
    print(f"# {len(plan.nets)} nets in {plan.workdir}/{plan.dataset}: {len(plan.nets) - len(todo)} "
          f"done, {len(todo)} to run", file=out)
    for stage, nets in stages(todo):
        packs = plan.packs(nets)
        in_packs = (f" in {naming.counted(len(packs), 'process', 'processes')}"
                    if len(packs) < len(nets) else "")
        print(f"# {stage}: {naming.counted(len(nets), 'net')}{in_packs}", file=out)
        for pack in packs:
            print(shlex.join(plan.command(pack)), file=out)
    missing = plan.missing_data()
    if missing:
        print("# data not prepared yet; run first:", file=out)
        for cmd in missing:
            print(f"#   {cmd}", file=out)
    counts = [images_per_net(preset, plan, net) for net in todo]
    images = sum(c for c in counts if c is not None)
    macs, macs_source = multiply_adds(preset, plan)
    gflop = TRAIN_FLOPS_PER_MULTIPLY_ADD * macs / 1e9
    unknown = sum(c is None for c in counts)
    print(f"# compute: {images:,.0f} images trained ({len(todo) - unknown} nets"
          + (f"; {unknown} nets use --epochs without a manifest to count, left out" if unknown else "")
          + ")", file=out)
    print(f"#   x {gflop:.4g} GFLOP per trained image (3 x 2 x {macs / 1e9:.4g} G forward "
          f"multiply-adds, {macs_source}) = {images * gflop / 1e6:.4g} PFLOP", file=out)
    print(f"#   = {images / images_per_sec / 3600:.4g} GPU-hours at {images_per_sec:g} images/s "
          "per GPU (one net per GPU; set --images_per_sec to your measured rate; frozen nets "
          "train somewhat faster)", file=out)
