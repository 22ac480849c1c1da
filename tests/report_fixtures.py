"""Writes result.json/config.json files shaped like main's (docs/formats.md) with chosen top-1
values."""
import json

from keras_transfer import models, naming

SPLIT_NOISE = (-1.5, -0.5, 0.5, 1.5)  # per split, times a noise scale: mean 0, std 1.29


def recorded_layers(model):
    """result.json's `layers` of a `model` net: one row per cut point, then the head."""
    arch = models.get(model)
    return [{"name": name, "origin": "new", "trainable": True}
            for name in (*arch.cut_names, arch.head[0])]


def network_columns(model):
    """The runs table's columns that describe the network (report.runs.NETWORK_COLUMNS)."""
    arch = models.get(model)
    return {"cut_points": ",".join(arch.cut_names), "paper_layers": arch.paper_layers}


def write_run(workdir, *, source, target, n, finetune=False, split="random:0", seed=0,
              top1_final, curve=(), dataset="fashion_mnist", examples_per_class=None,
              steps=100, model="small", flags=None):
    """`curve`: top-1 of the evaluations before the last (which is top1_final); `flags`: values
    of config.json to set (a net trained with other flags), or to leave out (None)."""
    epc = f"_epc{examples_per_class}" if examples_per_class else ""
    split_dir = split.replace(":", "_") + epc
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
        "finetune": finetune, "model": model, "top1_final": top1_final, "top5_final": None,
        "top1_best10_mean": max(top1s), "loss_final": 0.3, "history": history,
        "steps": steps, "images_per_sec": 1000.0, "wall_time_sec": 1.5,
        "paper_layers": models.get(model).paper_layers, "layers": recorded_layers(model),
    }
    config = {"source": source, "target": target, "n": n, "finetune": finetune, "lr": 0.01,
              "model": model, "batch_size": 8, "steps": steps, "run": name, "run_dir": str(run_dir)}
    for key, value in (flags or {}).items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "result.json").write_text(json.dumps(result))
    return run_dir


def write_protocol(workdir, *, co_adaptation, recovery, specificity_slope, beyond_training,
                   splits=4, seeds=(0,), noise=0.002, model="small", middle=(3, 4, 5)):
    """The paper's protocol over the cut points of `model` (bases on both halves, BnB and BnB+ on
    B, AnB, AnB+ both ways) with each finding's effect set per split to its value plus split
    noise of scale `noise`; the selffer nets dip at the n in `middle`."""
    k = models.get(model).max_n
    for s in range(splits):
        split = f"random:{s}"
        e = SPLIT_NOISE[s % len(SPLIT_NOISE)] * noise
        for seed in seeds:
            bases = {"A": 0.85 + e, "B": 0.90 - e}

            def run(**kwargs):
                write_run(workdir, split=split, seed=seed, model=model, **kwargs)
            for half, base in bases.items():
                run(source="none", target=half, n=0, top1_final=base)
            for n in range(1, k + 1):
                dips = n in middle
                selffer = -(co_adaptation + e) if dips else 0.0          # relative to base
                selffer_plus = selffer + (recovery + e if dips else 0.0)
                transfer = selffer - (specificity_slope + e / 5) * n
                transfer_plus = selffer_plus + beyond_training + e
                run(source="B", target="B", n=n, top1_final=bases["B"] + selffer)
                run(source="B", target="B", n=n, finetune=True,
                    top1_final=bases["B"] + selffer_plus)
                for target, source in (("B", "A"), ("A", "B")):
                    run(source=source, target=target, n=n, top1_final=bases[target] + transfer)
                    run(source=source, target=target, n=n, finetune=True,
                        top1_final=bases[target] + transfer_plus)
