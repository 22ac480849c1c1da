"""What a finished net's result.json says (docs/formats.md): which net it is, the numbers that
stand for it and its evaluation history, how fast it trained, and each layer's origin and
hashes at the start and end (and, for a net copying --base_model, that file and its hashes). train composes it here; run_records.RunDir writes it."""
from __future__ import annotations

import time

from data_prep import manifest as manifest_lib
from keras_transfer import metrics, models
from keras_transfer.pack import NetInTraining
from keras_transfer.progress import Timing


def result_of(net: NetInTraining, end_digests: dict, *, jit_compile: bool, replicas: int,
              pack: list[str], timing: Timing, started: float) -> dict:
    """The result of `net`, trained to the end of its schedule; `end_digests` are its layers'
    hashes now, `started` the time its process started, `pack` the names of its packmates."""
    config = net.config
    entries = net.history.entries
    final = entries[-1]
    manifest = net.resolved.target_manifest
    external = net.resolved.external
    return {
        "run": config.run, "condition": config.condition, "dataset": config.dataset,
        "split": config.split, "split_dir": config.split_dir, "seed": config.seed,
        "examples_per_class": config.examples_per_class or None,
        "source": config.source, "target": config.target, "n": config.n,
        "finetune": config.finetune, "model": config.model,
        # What n counts, for readers without the model registry (the report): `layers` names the
        # cut points, this says whether they are the paper's layers.
        "paper_layers": models.get(config.model).paper_layers,
        "num_outputs": net.resolved.num_classes,
        **metrics.top1_metrics(entries),
        "top5_final": final["top5"], "loss_final": final["loss"],
        "history": [{k: e[k] for k in ("step", "top1", "top5", "loss")} for e in entries],
        "steps": final["step"],
        "images_per_sec": final["step"] * config.batch_size / max(net.history.train_seconds, 1e-9),
        "wall_time_sec": time.time() - started,
        "jit_compile": jit_compile,
        "replicas": replicas,
        "pack": pack,
        "timing": timing.as_dict(),
        "data": {"dataset": manifest["dataset"],
                 "split": manifest["split"]["spec"],
                 "classes": [c["original_index"] for c in manifest["classes"]],
                 "image_shape": list(manifest["image_shape"]),
                 "content_sha256": manifest_lib.content_sha256(manifest),
                 "mean_half": config.mean_half},
        "layers": [{"name": row.name, "origin": row.origin, "trainable": row.trainable,
                    "sha256_start": net.start_digests[row.name],
                    "sha256_end": end_digests[row.name]}
                   for row in net.plan],
        # Where the layers of origin "external" came from (--base_model); only for such nets.
        **({"external_base": external.record(config.mean_half)} if external else {}),
    }
