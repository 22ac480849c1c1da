"""The authors' nets (`report --paper`) as TensorBoard runs for the HParams dashboard.

A WORKDIR's nets need nothing from the report: training writes each net's hparams and final
metrics into the net's own TensorBoard events (progress.Summaries), so TensorBoard lists every
net once, with its curves and its hparams. The authors' nets have no events here, so each gets
a run of its own, with the same hparams and tags.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from data_prep import quiet_tensorflow
from keras_transfer import metrics, naming


def hparam_value(value):
    """A value the HParams API takes: Python's bool, int, float or str; an empty
    examples_per_class (every example) as 0, as main's flag says it."""
    if pd.isna(value):
        return 0
    return value.item() if hasattr(value, "item") else value


def write_hparams(df: pd.DataFrame, logdir: Path) -> None:
    """One TensorBoard run per net under `logdir`: its naming.HPARAMS (those the table has) and
    top-1 metrics, tagged as training tags them."""
    tf = quiet_tensorflow.import_tensorflow()
    from tensorboard.plugins.hparams import api as hp

    for _, row in df.iterrows():
        values = {name: hparam_value(row[name]) for name in naming.HPARAMS if name in row}
        with tf.summary.create_file_writer(str(logdir / row["run_dir"])).as_default():
            hp.hparams(values, trial_id=row["run_dir"])
            for metric in metrics.TOP1:
                if not pd.isna(row[metric]):
                    tf.summary.scalar(metrics.summary_tag(metric), float(row[metric]),
                                      step=int(row["steps"] or 0))
