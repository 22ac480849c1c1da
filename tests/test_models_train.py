"""Networks with batch normalisation through main's real training: base net, frozen and
fine-tuned transfer, each block's variables (moving statistics included) traced by the hashes
of result.json."""
import json

import pytest

from keras_transfer import models
from train_helpers import smoke_config, train_on_cpu

# (model, image size and channels of its data, crop; 0: the model's default): the small ResNet
# on 28 px grey images as in the demo. The Keras applications take the same path; their own
# blocks' semantics are tested in test_bn_transfer.py (training one here costs minutes).
CASES = {"resnet_small": (28, 1, 0)}


@pytest.fixture(scope="module", params=sorted(CASES))
def trained(request, tmp_path_factory):
    from data_prep.prepare import prepare
    from data_prep.sources import SyntheticSpec
    model = request.param
    size, channels, crop = CASES[model]
    data_dir = tmp_path_factory.mktemp(f"data_{model}")
    prepare(source="synthetic", split="random:0", out=data_dir, progress=False,
            synthetic=SyntheticSpec(num_classes=6, image_size=size, channels=channels,
                                    train_per_class=16, validation_per_class=4, seed=0))
    workdir = tmp_path_factory.mktemp(f"runs_{model}")

    def train(**kw):
        config = smoke_config(data_dir, workdir, model=model, crop=crop, lr=0.01, **kw)
        train_on_cpu(config)
        return json.loads((config.run_dir / "result.json").read_text())
    base = train(target="A")
    nets = {finetune: train(source="A", target="B", n=2, finetune=finetune)
            for finetune in (False, True)}
    return model, base, nets


def _by_name(result):
    return {row["name"]: row for row in result["layers"]}


@pytest.mark.slow
def test_result_lists_every_cut_point_and_the_head(trained):
    model, base, _ = trained
    arch = models.get(model)
    assert [row["name"] for row in base["layers"]] == [*arch.cut_names, arch.head[0]]
    assert base["model"] == model
    # A base net trains every block: each one's variables (BN statistics included) moved.
    assert all(row["sha256_end"] != row["sha256_start"] for row in base["layers"])


@pytest.mark.parametrize("finetune", [False, True])
def test_copied_blocks_are_the_base_nets_then_frozen_or_trained(trained, finetune):
    model, base, nets = trained
    arch = models.get(model)
    rows, base_rows = _by_name(nets[finetune]), _by_name(base)
    for name in arch.cut_names[:2]:
        row = rows[name]
        assert row["origin"] == "baseA" and row["trainable"] == finetune
        assert row["sha256_start"] == base_rows[name]["sha256_end"]
        # Frozen: kernels and moving statistics untouched by training steps run with
        # training=True (batch normalisation in inference mode); fine-tuned: changed.
        assert (row["sha256_end"] != row["sha256_start"]) == finetune
    for name in (*arch.cut_names[2:], arch.head[0]):
        row = rows[name]
        assert row["origin"] == "new" and row["trainable"]
        assert row["sha256_start"] != base_rows[name]["sha256_end"]
        assert row["sha256_end"] != row["sha256_start"]
