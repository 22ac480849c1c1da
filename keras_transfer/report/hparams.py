"""Each run's hparams and top-1 metrics as TensorBoard summaries, for the HParams dashboard."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from keras_transfer.metrics import TOP1
from keras_transfer.report.runs import architecture

HPARAM_NAMES = ("source", "target", "n", "finetune", "split", "seed")


def write_hparams(df: pd.DataFrame, logdir: Path) -> None:
    """One TensorBoard run per net: its hparams and top-1 metrics, for the HParams dashboard."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp
    hparams = [
        hp.HParam("source", hp.Discrete(sorted(df["source"].astype(str).unique()))),
        hp.HParam("target", hp.Discrete(sorted(df["target"].astype(str).unique()))),
        hp.HParam("n", hp.IntInterval(0, architecture(df).max_n)),
        hp.HParam("finetune", hp.Discrete([False, True])),
        hp.HParam("split", hp.Discrete(sorted(df["split"].astype(str).unique()))),
        hp.HParam("seed", hp.IntInterval(int(df["seed"].min()), int(df["seed"].max()))),
    ]
    metrics = [hp.Metric(m, display_name=f"top-1 {label}") for m, label in TOP1.items()]
    with tf.summary.create_file_writer(str(logdir)).as_default():
        hp.hparams_config(hparams=hparams, metrics=metrics)
    for _, row in df.iterrows():
        values = {"source": str(row["source"]), "target": str(row["target"]), "n": int(row["n"]),
                  "finetune": bool(row["finetune"]), "split": str(row["split"]),
                  "seed": int(row["seed"])}
        with tf.summary.create_file_writer(str(logdir / row["run_dir"])).as_default():
            hp.hparams(values, trial_id=row["run_dir"])
            for metric in TOP1:
                if not pd.isna(row[metric]):
                    tf.summary.scalar(metric, float(row[metric]), step=int(row["steps"] or 0))
