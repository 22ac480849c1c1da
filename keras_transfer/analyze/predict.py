"""Layer similarity as a cheap predictor of the transfer curve: CKA(baseA, baseB) at each cut
point n = 1..k of the nets' model for every finished base pair, against the measured relative
drop of the frozen transfer nets, (base - AnB) / base per n (BnA against baseA likewise), pooled
over directions and seeds and compared by Spearman rank correlation. Beside it, depth alone (the
cut point's index n) as the predictor of the same drop, over the same n: CKA falls with depth,
so it is worth something only where it ranks the drop better than depth does. All base pairs
pooled must be nets of one model, so that n means the same cut point in each.

Outputs predict.json and predict.png (beside the report by default). Each pair's CKA is a
`similarity` folder, reused while its inputs (weights, data, batching) are unchanged.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from data_prep.atomic import write_bytes_atomic, write_json_atomic
from data_prep.manifest import load_manifest, sha256_file
from keras_transfer import data, metrics, models, naming
from keras_transfer.run_records import RunDir
from keras_transfer.report import stats
from keras_transfer.outputs import fmt, png_bytes, pyplot
from keras_transfer.analyze.similarity import DEFAULT_BATCH_SIZE, similarity, write_similarity
from keras_transfer.analyze.trained_nets import (AnalysisError, TrainedNet, analysis_dir,
                                                 common_architecture, find_seed_dirs, open_run,
                                                 training_half_dir)

METRICS = tuple(metrics.TOP1)


def relative_drops(seed_dir: Path, metric: str, max_n: int) -> dict:
    """{target half: {n: (base - AnB) / base}} from the frozen transfer nets AnB, n = 1..max_n,
    that finished."""
    drops = {}
    for target in naming.HALVES:
        base = RunDir(seed_dir / f"base{target}").result()
        if base is None or not base.get(metric):
            continue
        source = naming.other_half(target)
        for n in range(1, max_n + 1):
            result = RunDir(seed_dir / naming.run_name(source, target, n, False)).result()
            if result is not None and result.get(metric) is not None:
                drops.setdefault(target, {})[n] = (base[metric] - result[metric]) / base[metric]
    return drops


def predict(path, *, data_dir=None, metric=metrics.HEADLINE, batch_size=DEFAULT_BATCH_SIZE,
            max_examples=None, recompute=False, similarity_root=None, log=print) -> dict:
    """CKA(baseA, baseB) per cut point on each target half that has transfer nets (B if none),
    against the pooled relative drop of AnB per n; the contents of predict.json.

    Each pair's similarity folder goes where `similarity` would put it, or under
    `similarity_root`/<dataset>/<split_dir>/seed<k>/ when given, and is reused while its
    inputs (weights, data, batching) are unchanged.
    """
    if metric not in METRICS:
        raise AnalysisError(f"--metric must be one of {METRICS}, got {metric!r}")
    jobs = []  # every base pair and its data found and checked before anything is computed
    architecture = None
    for seed_dir in find_seed_dirs(path):
        base_a, base_b = (open_run(seed_dir / f"base{h}") for h in naming.HALVES)
        pair_architecture = common_architecture(base_a, base_b)
        if architecture is None:
            architecture, first_seed_dir = pair_architecture, seed_dir
        elif pair_architecture != architecture:
            raise AnalysisError(
                f"{first_seed_dir} holds {architecture.name} nets and {seed_dir} "
                f"{pair_architecture.name} nets: n means another cut point in each, so they "
                "cannot be pooled. Give predict one seed folder, or a WORKDIR of one model.")
        drops = relative_drops(seed_dir, metric, architecture.max_n)
        folder = analysis_dir(base_a.run_dir)
        if similarity_root is not None:
            folder = Path(similarity_root) / folder.relative_to(folder.parents[2])
        for target in sorted(drops) or ["B"]:
            half_dir = training_half_dir(base_b, target, data_dir)
            try:
                data.load_half(half_dir)
            except data.DataError as e:
                raise AnalysisError(str(e)) from e
            jobs.append((seed_dir, target, base_a, base_b, half_dir, drops.get(target, {}),
                         folder / "similarity" / f"baseA_vs_baseB_on_{target}"))
    pairs = []
    for seed_dir, target, base_a, base_b, half_dir, drops, out in jobs:
        key = _inputs_key(base_a, base_b, half_dir, batch_size, max_examples, architecture)
        result = None if recompute else _cached_similarity(out, key)
        if result is None:
            result = similarity(base_a.run_dir, base_b.run_dir, half_dir,
                                batch_size=batch_size, max_examples=max_examples)
            result["inputs_key"] = key
            write_similarity(result, out)
            log(f"[analyze] CKA(baseA, baseB) on {target}: {out}")
        else:
            log(f"[analyze] CKA(baseA, baseB) on {target}: reused {out}")
        pairs.append({"seed_dir": str(seed_dir), "target": target,
                      "similarity": str(out / "similarity.json"), "cka": result["cka"],
                      "relative_drop": {str(n): v for n, v in drops.items()}})
    pooled = _pool(pairs, architecture)
    usable = [i for i, d in enumerate(pooled["relative_drop"])
              if d is not None and pooled["cka"][i] is not None]
    correlation = depth = None
    if len(usable) >= 3:
        drops = [pooled["relative_drop"][i] for i in usable]
        correlation = stats.spearman([pooled["cka"][i] for i in usable], drops)
        depth = stats.spearman([pooled["n"][i] for i in usable], drops)
    return {
        "model": architecture.name,
        "paper_layers": architecture.paper_layers,  # what n counts, for the report
        "metric": metric,
        "relative_drop": "(top-1 of base - top-1 of the frozen transfer net AnB) / top-1 of base, "
                         "per target half; pooled: mean over halves and seeds",
        "reading": "Spearman rho < 0: cut points whose features are more alike across the two "
                   "halves lose less when transferred, as the paper's generality argument "
                   "predicts. spearman_depth: the cut point's index n against the same drops, "
                   "the baseline; better_predictor: the one of larger |rho| (neither if equal)",
        "pairs": pairs,
        "pooled": pooled,
        "spearman": correlation,
        "spearman_depth": depth,
        "better_predictor": stats.stronger_predictor({"CKA": correlation, "depth": depth}),
        "note": None if correlation else (
            f"rank correlation needs at least 3 cut points with both CKA and a finished AnB/BnA "
            f"net; found {len(usable)}"),
    }


def predict_png(result: dict) -> bytes:
    plt = pyplot()
    pooled = result["pooled"]
    ns = pooled["n"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    cka_values = [np.nan if v is None else v for v in pooled["cka"]]
    ax.plot(ns, cka_values, "o-", color="#1f4fd1", label="CKA(baseA, baseB) at cut point n")
    for pair in result["pairs"]:
        ax.plot(ns, [np.nan if pair["cka"].get(name) is None else pair["cka"][name]
                     for name in pooled["layers"]], ".", color="#1f4fd1", alpha=0.35)
    ax.set_xlabel(f"cut point n of {result['model']} (cut points 1..n copied)")
    ax.set_ylabel("linear CKA (unbiased)", color="#1f4fd1")
    ax.set_xticks(ns, [f"{n}\n{name}" for n, name in zip(ns, pooled["layers"])])
    ax.set_ylim(min(0.0, np.nanmin(cka_values) if not np.all(np.isnan(cka_values)) else 0.0), 1.02)
    drop_ax = ax.twinx()
    drops = [np.nan if v is None else v for v in pooled["relative_drop"]]
    drop_ax.plot(ns, drops, "s--", color="#d62728", label="measured relative drop of AnB")
    for pair in result["pairs"]:
        drop_ax.plot(ns, [pair["relative_drop"].get(str(n), np.nan) for n in ns], ".",
                     color="#d62728", alpha=0.35)
    drop_ax.set_ylabel(f"(base - AnB) / base, {result['metric']}", color="#d62728")
    drop_ax.axhline(0.0, color="#d62728", lw=0.5, alpha=0.5)
    correlation, depth = result["spearman"], result.get("spearman_depth")
    if correlation:
        def rho(c):
            method = "exact " if c["p_value_method"] == "exact permutation" else ""
            return f"rho = {fmt(c['rho'])}" + (f" ({method}p = {c['p_value']:.3f})"
                                                 if c["p_value"] is not None else "")
        title = f"Spearman over {correlation['points']} cut points: CKA {rho(correlation)}"
        if depth:
            title += (f"; depth alone {rho(depth)}\nbetter predictor of the drop: "
                      f"{result['better_predictor']}")
    else:
        title = "no finished transfer nets to compare with"
    ax.set_title(title, fontsize=10)
    handles = ax.get_legend_handles_labels()[0] + drop_ax.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2,
              fontsize=8, frameon=False)
    return png_bytes(fig)


def write_predict(result: dict, out) -> dict:
    """predict.json and predict.png in `out`; returns {name: path}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png = predict_png(result)
    write_json_atomic(out / "predict.json", result)
    write_bytes_atomic(out / "predict.png", png)
    return {"predict.json": out / "predict.json", "predict.png": out / "predict.png"}


def _pool(pairs, architecture: models.Architecture) -> dict:
    """Per n: CKA of cut point n and the relative drop, each averaged over the pairs that have
    it."""
    ns = list(range(1, architecture.max_n + 1))
    layers = list(architecture.cut_names)
    cka_values, drop_values, counts = [], [], []
    for n, name in zip(ns, layers):
        ckas = [p["cka"][name] for p in pairs if p["cka"].get(name) is not None]
        drops = [p["relative_drop"][str(n)] for p in pairs if str(n) in p["relative_drop"]]
        cka_values.append(float(np.mean(ckas)) if ckas else None)
        drop_values.append(float(np.mean(drops)) if drops else None)
        counts.append(len(drops))
    return {"n": ns, "layers": layers, "cka": cka_values, "relative_drop": drop_values,
            "transfer_nets": counts}


def _inputs_key(net_a: TrainedNet, net_b: TrainedNet, half_dir, batch_size, max_examples,
                architecture: models.Architecture) -> str:
    """What a similarity.json depends on: both weight files, the data, the batching, the cut
    points compared."""
    manifest = load_manifest(half_dir)
    shards = [s.get("sha256") for s in manifest["shards"]["validation"]]
    parts = [sha256_file(net_a.weights), sha256_file(net_b.weights), json.dumps(shards),
             str(batch_size), str(max_examples), ",".join(architecture.cut_names)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _cached_similarity(out: Path, key: str):
    """The similarity.json in `out` if it was computed from inputs with this key, else None."""
    path = out / "similarity.json"
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return result if result.get("inputs_key") == key else None
