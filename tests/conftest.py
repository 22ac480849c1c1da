"""Shared pytest set-up: quiet, CPU-only TensorFlow for every test."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """With pytest-xdist (`-n 2 --dist loadgroup`, the README's test command), the tests that
    start a SLURM cluster or several worker processes run one after another on one worker: they
    share the node's SLURM daemons and its cores."""
    for item in items:
        if item.get_closest_marker("cluster"):
            item.add_marker(pytest.mark.xdist_group("cluster"))


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """A tiny prepared dataset, `random:0` split of 10 synthetic classes at 28x28x1.

    Returns the data_dir; halves are at <data_dir>/synthetic/random_0/{A,B}. Read-only: tests
    that damage data make their own copy.
    """
    from data_prep.prepare import prepare
    from data_prep.sources import SyntheticSpec

    out = tmp_path_factory.mktemp("data")
    prepare(source="synthetic", split="random:0", out=out, progress=False,
            synthetic=SyntheticSpec(num_classes=10, image_size=28, channels=1,
                                    train_per_class=24, validation_per_class=8, seed=0))
    return out
