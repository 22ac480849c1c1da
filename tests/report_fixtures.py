"""Writes result.json/config.json files shaped like main's (docs/formats.md) with chosen top-1 values."""
import json

from keras_transfer import naming


def write_run(workdir, *, source, target, n, finetune=False, split="random:0", seed=0,
              top1_final, top1_best10_mean=None, dataset="fashion_mnist", examples_per_class=None,
              steps=100):
    split_dir = split.replace(":", "_") + (f"_epc{examples_per_class}" if examples_per_class else "")
    name = naming.run_name(source, target, n, finetune)
    run_dir = naming.run_dir(workdir, dataset, split_dir, seed, name)
    run_dir.mkdir(parents=True, exist_ok=True)
    best10 = top1_final if top1_best10_mean is None else top1_best10_mean
    result = {
        "run": name, "condition": naming.condition(source, target, n, finetune),
        "dataset": dataset, "split": split, "split_dir": split_dir, "seed": seed,
        "examples_per_class": examples_per_class, "source": source, "target": target, "n": n,
        "finetune": finetune, "model": "small", "top1_final": top1_final, "top5_final": 1.0,
        "top1_best10_mean": best10, "top5_best10_mean": 1.0, "loss_final": 0.3,
        "history": [{"step": steps, "top1": top1_final, "top5": 1.0, "loss": 0.3}],
        "steps": steps, "images_per_sec": 1000.0, "wall_time_sec": 1.5,
        "layers": [{"name": "conv1", "origin": "new", "trainable": True}],
    }
    config = {"source": source, "target": target, "n": n, "finetune": finetune, "lr": 0.01,
              "batch_size": 8, "steps": steps, "run": name, "run_dir": str(run_dir)}
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "result.json").write_text(json.dumps(result))
    return run_dir
