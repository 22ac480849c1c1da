"""How many nets per hour a grid trains here: `python -m keras_transfer.bench --only=grid`.

Trains the demo's grid (baseA, baseB and for n = 1..7 BnB, BnB+, AnB, AnB+, RnB: 37 nets of the
small model on Fashion-MNIST's random:0 halves; --grid_layers for fewer) from scratch, one way after the other in one run,
each into a fresh temporary workdir:
  packed     the launcher as it runs by default (`launch.sh`): nets packed into long-lived
             processes, one per core, each stepping its nets together (steps.py);
  one-per-process  the launcher with --pack=1: one process, TensorFlow import and trace per net;
  peer       a plain PyTorch loop training the same nets serially (optional: --peer_script).
For each it prints the wall time, nets per hour, training images per second, the mean final
top-1 (the same nets should score alike), where the processes spent their time (start-up,
set-up, tracing, training, evaluation, backups, summaries, summed from the runs' result.json)
and how many core-seconds no process used, and the FLOP the nets computed (computed_flop) as a
rate and as a fraction of the machine's float32 matmul rate.
Ratios are of figures measured minutes apart on one machine; on a shared machine run it twice.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from keras_transfer import naming

# RnB on half B (--random_control=half), as the PyTorch peer trains it: one split's data.
GRID_ARGS = ["--splits=0", "--seeds=0", "--experiments=transfer,random", "--random_control=half",
             "--targets=B"]
ALL_LAYERS = list(naming.PAPER_N)  # the PyTorch peer's n: the paper's layers
WAYS = ("packed", "one-per-process", "peer")


def run_grid(way: str, workdir: Path, flagfile: str, data_dir: str, dataset: str, steps: int,
             jobs: int, layers) -> float:
    """Trains the grid one way into `workdir`; returns its wall seconds."""
    cmd = [sys.executable, "-m", "keras_transfer.grid", f"--flagfile={flagfile}",
           f"--workdir={workdir}", f"--jobs={jobs}", *GRID_ARGS,
           f"--layers={','.join(map(str, layers))}"]
    if way == "one-per-process":
        cmd.append("--pack=1")
    cmd += ["--", f"--data_dir={data_dir}", f"--dataset={dataset}", f"--steps={steps}"]
    return _timed(cmd, workdir / "grid.log")


def run_peer(script: str, python: str, workdir: Path, steps: int, threads: int,
             fashion_dir: str, layers) -> tuple[float, list[dict]]:
    """Runs the PyTorch peer; returns its wall seconds and its per-net JSON lines."""
    cmd = [python, script, str(threads), str(steps), fashion_dir]
    log = workdir / "peer.log"
    env = None
    if list(layers) != ALL_LAYERS:  # the peer's NETS: these nets (and the bases they need)
        names = [f"{kind}{n}B{plus}" for n in layers for kind in "BAR"
                 for plus in ("", "+") if not (kind == "R" and plus)]
        env = {"NETS": ",".join(["baseA", "baseB", *names])}
    seconds = _timed(cmd, log, env)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return seconds, [line for line in lines if "net" in line]


def _timed(cmd: list[str], log: Path, env: dict | None = None) -> float:
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"  $ {' '.join(f'{k}={v}' for k, v in (env or {}).items())}{' ' if env else ''}"
          f"{shlex.join(cmd)}", flush=True)
    started = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT,
                              env={**_quiet_env(), **(env or {})})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
        raise RuntimeError(f"exit code {done.returncode}: {shlex.join(cmd)}\n{tail}")
    return seconds


def _quiet_env() -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def finished_runs(workdir: Path) -> list[dict]:
    from keras_transfer.run_records import RunDir
    return [run.load_result() for run in RunDir.find(workdir)]


def time_spent(results: list[dict]) -> dict:
    """Process-seconds per phase, each process counted once (packmates share one timing)."""
    totals, seen = {}, set()
    for result in results:
        pack = tuple(result.get("pack", [result["run"]]))
        key = (result["split_dir"], result["seed"], pack)
        if key in seen:
            continue
        seen.add(key)
        for phase, seconds in result.get("timing", {}).items():
            totals[phase] = totals.get(phase, 0.0) + seconds
    return totals


def computed_flop(results: list[dict], data_dir: str, batch_size: int) -> dict:
    """FLOP the grid's nets computed, {"train": ..., "evaluate": ...}: per training image the
    forward pass and the gradients actually taken (models.training_flop: nothing below a net's
    lowest trainable block), per evaluated image the forward pass; frozen blocks that packmates
    share (steps.PackSteps) counted once per pack, as they are computed."""
    from data_prep import layout
    from data_prep.manifest import load_manifest
    from keras_transfer import data, models, transfer
    totals, built, shared = {"train": 0.0, "evaluate": 0.0}, {}, set()
    for result in results:
        manifest = load_manifest(layout.half_dir(data_dir, result["dataset"], result["split_dir"],
                                                 result["target"]))
        height, width, channels = manifest["image_shape"]
        crop = data.default_crop(result["model"], min(height, width))
        key = (result["model"], result["num_outputs"], crop, channels)
        if key not in built:
            model = models.build(result["model"], result["num_outputs"], (crop, crop, channels))
            built[key] = model, models.block_multiply_adds(models.get(result["model"]), model)
        model, blocks = built[key]
        head = models.get(result["model"]).head[0]  # result.json names the head by its layer
        plan = [transfer.LayerPlan(row["name"], row["origin"], row["trainable"])
                for row in result["layers"]]
        trainable = {"head" if row.name == head else row.name: row.trainable for row in plan}
        train_images = result["steps"] * batch_size
        eval_images = result["evaluations"] * manifest["counts"]["validation"]
        totals["train"] += train_images * models.training_flop(blocks, trainable)
        totals["evaluate"] += eval_images * 2 * sum(blocks.values())
        digests = [row["sha256_start"] for row in result["layers"]]
        pack = (result["split_dir"], result["seed"], tuple(result.get("pack", [result["run"]])),
                result["data"].get("mean_half"))
        for depth, cut in enumerate(transfer.frozen_prefix(model, result["model"], plan), 1):
            chain = (pack, tuple(digests[:depth]))
            if chain in shared:  # a packmate computed this block's output already
                totals["train"] -= train_images * 2 * blocks[cut.name]
                totals["evaluate"] -= eval_images * 2 * blocks[cut.name]
            shared.add(chain)
    return totals


def report_line(way: str, seconds: float, nets: int, images: float, top1: list[float]) -> dict:
    row = {"way": way, "seconds": seconds, "nets": nets, "nets_per_hour": nets * 3600 / seconds,
           "images_per_sec": images / seconds, "mean_top1_final": float(np.mean(top1))}
    print(f"grid {way:16s}: {nets} nets in {seconds:.0f} s = {row['nets_per_hour']:.0f} nets/hour, "
          f"{row['images_per_sec']:.0f} training images/s, mean final top-1 "
          f"{row['mean_top1_final']:.4f}", flush=True)
    return row


def run(ways, *, flagfile: str, data_dir: str, dataset: str, steps: int, jobs: int,
        peer_script: str | None, peer_python: str, fashion_dir: str, keep: str | None,
        layers=ALL_LAYERS, matmul_gflops: float | None = None) -> dict:
    """Trains the grid each way in `ways`, prints the figures; returns them by way."""
    from keras_transfer import config as config_lib
    from keras_transfer.evaluation import evaluation_steps
    preset = config_lib.resolve(flagfile, [f"--data_dir={data_dir}", f"--dataset={dataset}"]
                                + ([f"--steps={steps}"] if steps else []))
    images_per_net = preset.steps * preset.batch_size
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="kt-bench-grid-"))
    count = 2 + 5 * len(layers)
    evaluations = evaluation_steps(preset.steps, preset.eval_every, preset.eval_last)
    print(f"grid benchmark: the demo's {count} nets (n = {','.join(map(str, layers))}), "
          f"{preset.steps} steps of {preset.batch_size}, evaluations at steps "
          f"{', '.join(map(str, evaluations))}, {jobs} processes; workdirs in {root}")
    rows = {}
    for way in ways:
        workdir = root / way
        if way == "peer":
            if not peer_script:
                print("grid peer            : skipped (give --peer_script=torch_fmnist_grid.py "
                      "and --peer_python, a Python with torch)")
                continue
            seconds, nets = run_peer(peer_script, peer_python, workdir, preset.steps, jobs,
                                     fashion_dir, layers)
            rows[way] = report_line(way, seconds, len(nets), len(nets) * images_per_net,
                                    [n["top1_final"] for n in nets])
            continue
        seconds = run_grid(way, workdir, flagfile, data_dir, dataset, preset.steps, jobs, layers)
        results = finished_runs(workdir)
        rows[way] = report_line(way, seconds, len(results), len(results) * images_per_net,
                                [r["top1_final"] for r in results])
        spent = time_spent(results)
        total = sum(spent.values())
        idle = max(0.0, seconds * jobs - total)
        parts = ", ".join(f"{phase} {s:.0f} s ({s / (seconds * jobs):.0%})"
                          for phase, s in spent.items() if s >= 0.5)
        print(f"  where the {jobs} processes' {seconds * jobs:.0f} s went: {parts}, launcher and "
              f"idle cores {idle:.0f} s ({idle / (seconds * jobs):.0%})", flush=True)
        flop = computed_flop(results, data_dir, preset.batch_size)
        rate = sum(flop.values()) / seconds / 1e9
        rows[way].update(flop=sum(flop.values()), gflops=rate)
        of_matmul = ""
        if matmul_gflops:
            rows[way]["matmul_fraction"] = rate / matmul_gflops
            of_matmul = (f" = {rate / matmul_gflops:.0%} of the machine's float32 matmul rate "
                         f"({matmul_gflops:.0f} GFLOP/s)")
        print(f"  computed {sum(flop.values()) / 1e12:.1f} TFLOP (training "
              f"{flop['train'] / 1e12:.1f}, evaluation {flop['evaluate'] / 1e12:.1f}) in "
              f"{seconds:.0f} s: {rate:.0f} GFLOP/s{of_matmul}", flush=True)
    for way, base in (("packed", "peer"), ("packed", "one-per-process")):
        if way in rows and base in rows:
            ratio = rows[way]["nets_per_hour"] / rows[base]["nets_per_hour"]
            print(f"ratio: {way} / {base} = {ratio:.2f}x nets per hour")
    return rows
