"""End to end on the real Fashion-MNIST IDX files of Debian's dataset-fashion-mnist."""
import time
from pathlib import Path

import numpy as np
import pytest

from data_prep import classnames, idx, manifest, records, sources
from data_prep.prepare import prepare

FASHION = Path(sources.FASHION_MNIST_DIR)
pytestmark = pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST IDX files absent from {FASHION}: "
           "apt-get install -y dataset-fashion-mnist (bootstrap.sh does it as root)")


@pytest.mark.slow
def test_full_fashion_mnist_prepares_into_5_plus_5_classes(tmp_path):
    start = time.perf_counter()
    halves = prepare("fashion_mnist", "random:0", tmp_path, progress=True)
    seconds = time.perf_counter() - start
    m = {h: manifest.load_manifest(halves[h]) for h in "AB"}
    assert m["A"]["num_classes"] == m["B"]["num_classes"] == 5
    assert {c["name"] for h in "AB" for c in m[h]["classes"]} == set(classnames.FASHION_MNIST)
    assert sum(m[h]["counts"]["train"] for h in "AB") == 60000
    assert sum(m[h]["counts"]["validation"] for h in "AB") == 10000
    for h in "AB":
        assert set(m[h]["counts_per_class"]["train"].values()) == {6000}
        assert set(m[h]["counts_per_class"]["validation"].values()) == {1000}
        assert len(m[h]["shards"]["train"]) >= 2 and len(m[h]["shards"]["validation"]) >= 2
        assert manifest.verify(halves[h]) == []

    # The first training record of A is the first source image of A's classes, intact.
    images = idx.read_idx(FASHION / "train-images-idx3-ubyte.gz", 3)
    labels = idx.read_idx(FASHION / "train-labels-idx1-ubyte.gz", 1)
    a_classes = [c["original_index"] for c in m["A"]["classes"]]
    first = int(np.flatnonzero(np.isin(labels, a_classes))[0])
    shard = halves["A"] / m["A"]["shards"]["train"][0]["file"]
    ex = next(records.read_examples([shard]))
    np.testing.assert_array_equal(ex["image"][..., 0], images[first])
    assert ex["original_label"] == labels[first]
    mean_a = images[np.isin(labels, a_classes)].mean(axis=0)
    np.testing.assert_allclose(np.load(halves["A"] / "mean.npy")[..., 0], mean_a, rtol=1e-5)
    print(f"Fashion-MNIST prepared in {seconds:.1f} s ({70000 / seconds:.0f} images/s)")
