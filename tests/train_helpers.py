"""The tiny nets the training tests train: a few steps on the synthetic fixture data, on one CPU."""
import tensorflow as tf

from keras_transfer import train
from keras_transfer.config import Config

SMOKE = dict(model="small", batch_size=8, steps=4, eval_every=2, eval_steps=2, lr=0.05,
             lr_step=0, histogram_every=1, strategy="one_device", dataset="synthetic",
             eval_last=0)  # as flags/smoke.flags


def smoke_config(data_dir, workdir, **kw):
    return Config(data_dir=str(data_dir), workdir=str(workdir), **{**SMOKE, **kw})


def train_on_cpu(config):
    return train.run(config, tf.distribute.OneDeviceStrategy("/cpu:0"))


def hparams_written(tb_dir):
    """[(trial id, {hparam: value})] of each HParams session start in a run's event files."""
    from tensorboard.plugins.hparams import metadata

    starts = []
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == metadata.SESSION_START_INFO_TAG:
                    info = metadata.parse_session_start_info_plugin_data(
                        value.metadata.plugin_data.content)
                    starts.append((info.group_name, {
                        name: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                        for name, v in info.hparams.items()}))
    return starts
