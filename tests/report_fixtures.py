"""Writes result.json/config.json files shaped like main's (docs/formats.md) with chosen top-1 values."""
import json

from keras_transfer import naming


def write_run(workdir, *, source, target, n, finetune=False, split="random:0", seed=0,
              top1_final, curve=(), dataset="fashion_mnist", examples_per_class=None,
              steps=100):
    """`curve`: top-1 of the evaluations before the last (which is top1_final)."""
    split_dir = split.replace(":", "_") + (f"_epc{examples_per_class}" if examples_per_class else "")
    name = naming.run_name(source, target, n, finetune)
    run_dir = naming.run_dir(workdir, dataset, split_dir, seed, name)
    run_dir.mkdir(parents=True, exist_ok=True)
    top1s = [*curve, top1_final]
    history = [{"step": steps * (i + 1) // len(top1s), "top1": v, "top5": None, "loss": 0.3}
               for i, v in enumerate(top1s)]
    result = {
        "run": name, "condition": naming.condition(source, target, n, finetune),
        "dataset": dataset, "split": split, "split_dir": split_dir, "seed": seed,
        "examples_per_class": examples_per_class, "source": source, "target": target, "n": n,
        "finetune": finetune, "model": "small", "top1_final": top1_final, "top5_final": None,
        "top1_best10_mean": max(top1s), "loss_final": 0.3, "history": history,
        "steps": steps, "images_per_sec": 1000.0, "wall_time_sec": 1.5,
        "layers": [{"name": "conv1", "origin": "new", "trainable": True}],
    }
    config = {"source": source, "target": target, "n": n, "finetune": finetune, "lr": 0.01,
              "batch_size": 8, "steps": steps, "run": name, "run_dir": str(run_dir)}
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "result.json").write_text(json.dumps(result))
    return run_dir
