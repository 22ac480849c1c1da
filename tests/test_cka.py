"""Linear CKA and its HSIC estimators, on activations made with numpy."""
import itertools

import numpy as np
import pytest

from keras_transfer.analyze import cka


def _rng(seed=0):
    return np.random.default_rng(seed)


def _related(n=400, d=20, noise=1.0, seed=0):
    """Two representations of the same n examples: y is a random linear read-out of x plus noise."""
    rng = _rng(seed)
    x = rng.normal(size=(n, d)) + 2.0
    y = x @ rng.normal(size=(d, 12)) + noise * rng.normal(size=(n, 12))
    return x, y


def _u_statistic_hsic(k, l):
    """HSIC_1 from its definition: the mean over ordered 4-tuples of distinct examples of
    k_ij l_ij + k_ij l_qr - 2 k_ij l_iq (Song et al. 2012); O(n^4), for tiny n only."""
    n = len(k)
    terms = [k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
             for i, j, q, r in itertools.permutations(range(n), 4)]
    return float(np.mean(terms))


def test_unbiased_hsic_is_the_u_statistic():
    rng = _rng(1)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 5))
    k, l = cka.gram_linear(x), cka.gram_linear(y)
    assert cka.hsic_unbiased(k, l) == pytest.approx(_u_statistic_hsic(k, l), rel=1e-10)


@pytest.mark.parametrize("estimator", cka.ESTIMATORS)
def test_hsic_ignores_a_shift_of_the_features(estimator):
    # similarity.gram_function centres each batch's features before its float32 Gram matrices:
    # exact only because of this.
    x, y = _related(n=50)
    hsic = {"unbiased": cka.hsic_unbiased, "biased": cka.hsic_biased}[estimator]
    shifted = hsic(cka.gram_linear(x - x.mean(0)), cka.gram_linear(y + 5.0))
    assert shifted == pytest.approx(hsic(cka.gram_linear(x), cka.gram_linear(y)), rel=1e-9)


@pytest.mark.parametrize("estimator", cka.ESTIMATORS)
def test_cka_of_a_representation_with_itself_is_one(estimator):
    x, _ = _related()
    assert cka.cka(x, x, estimator) == pytest.approx(1.0, abs=1e-12)
    assert cka.minibatch_cka(x, x, 50, estimator) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("estimator", cka.ESTIMATORS)
def test_cka_is_invariant_to_isotropic_scaling_and_orthogonal_transforms(estimator):
    x, y = _related()
    reference = cka.cka(x, y, estimator)
    assert 0.1 < reference < 0.99  # a related pair, not a degenerate one
    orthogonal, _ = np.linalg.qr(_rng(2).normal(size=(x.shape[1], x.shape[1])))
    assert cka.cka(7.5 * x, y, estimator) == pytest.approx(reference, rel=1e-9)
    assert cka.cka(x, 0.01 * y, estimator) == pytest.approx(reference, rel=1e-9)
    assert cka.cka(x @ orthogonal, y, estimator) == pytest.approx(reference, rel=1e-9)


@pytest.mark.parametrize("estimator", cka.ESTIMATORS)
def test_cka_is_not_invariant_to_an_arbitrary_invertible_map(estimator):
    rng = _rng(3)
    x = rng.normal(size=(500, 10))
    # Invertible (condition number 100) but stretches one direction far more than the rest.
    u, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    v, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    stretch = u @ np.diag(np.geomspace(100.0, 1.0, 10)) @ v
    assert np.linalg.matrix_rank(stretch) == 10
    # CCA would give exactly 1 here; CKA weighs directions by their variance (about 0.48).
    assert cka.cka(x, x @ stretch, estimator) < 0.8


def test_independent_features_unbiased_near_zero_biased_not():
    # Few examples of wide layers: the regime of a minibatch of conv features.
    rng = _rng(4)
    unbiased, biased = [], []
    for _ in range(20):
        x, y = rng.normal(size=(32, 500)), rng.normal(size=(32, 500))
        unbiased.append(cka.cka(x, y, "unbiased"))
        biased.append(cka.cka(x, y, "biased"))
    # Independent features: population CKA is 0 and the unbiased estimate is 0 in expectation.
    # Its standard deviation at n = 32 is about 0.05, so the mean of 20 lies within 0.035
    # (3 standard errors).
    assert abs(np.mean(unbiased)) < 0.035
    # The biased one is dominated by the diagonals of K and L (wide, independent rows are
    # nearly orthogonal): about 0.94 here.
    assert np.mean(biased) > 0.5


def test_minibatch_mean_equals_full_hsic_over_all_partitions():
    # Why minibatch CKA estimates the full one: averaged over every way of cutting the
    # examples into batches, the mean of per-batch HSIC_1 is exactly the full HSIC_1, since each
    # 4-tuple of distinct examples is equally likely to fall in one batch.
    rng = _rng(5)
    x, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 3)) + rng.normal(size=(8, 1))
    k, l = cka.gram_linear(x), cka.gram_linear(y)
    means = []
    for first in itertools.combinations(range(8), 4):
        second = [i for i in range(8) if i not in first]
        means.append(np.mean([cka.hsic_unbiased(k[np.ix_(b, b)], l[np.ix_(b, b)])
                              for b in (list(first), second)]))
    assert len(means) == 70
    assert np.mean(means) == pytest.approx(cka.hsic_unbiased(k, l), rel=1e-10)


@pytest.mark.slow
def test_minibatch_cka_matches_the_full_batch_one():
    x, y = _related(n=2000, noise=3.0, seed=6)
    batch = 200
    streamed = cka.minibatch_cka(x, y, batch)

    # The same minibatches computed independently: the means of HSIC_1 per batch.
    batches = [slice(s, s + batch) for s in range(0, 2000, batch)]

    def mean_hsic(a, b):
        return np.mean([_hsic_via_features(a[s], b[s]) for s in batches])
    independent = mean_hsic(x, y) / np.sqrt(mean_hsic(x, x) * mean_hsic(y, y))
    assert streamed == pytest.approx(independent, rel=1e-9)

    # The full-batch value. Conditional on the data, minibatch CKA differs from it only by which
    # examples share a batch (see the test above), so the tolerance is that partition noise:
    # 4 standard deviations over random partitions, measured here, and never more than 0.02.
    full = cka.cka(x, y)
    rng = _rng(7)
    spread = np.std([cka.minibatch_cka(x[p], y[p], batch)
                     for p in (rng.permutation(2000) for _ in range(10))])
    tolerance = min(4 * spread, 0.02)
    assert 0.05 < full < 0.95
    assert abs(streamed - full) < tolerance


def _hsic_via_features(x, y):
    """HSIC_1 from the features, never forming a Gram matrix: an independent route to the same
    number for linear kernels (tr(K L) = ||X'Y||^2, K 1 = X X'1)."""
    n = len(x)
    x_norms, y_norms = np.sum(x * x, axis=1), np.sum(y * y, axis=1)  # diagonals of K and L
    trace_kl = np.sum((x.T @ y) ** 2) - np.sum(x_norms * y_norms)
    k_rows = x @ x.sum(axis=0) - x_norms
    l_rows = y @ y.sum(axis=0) - y_norms
    return (trace_kl + k_rows.sum() * l_rows.sum() / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * k_rows @ l_rows) / (n * (n - 3))


def test_minibatches_of_another_size_are_refused():
    accumulator = cka.MinibatchCKA(1, 1)
    x = _rng(8).normal(size=(10, 3))
    accumulator.update([cka.gram_linear(x[:6])], [cka.gram_linear(x[:6])])
    with pytest.raises(ValueError, match="fixed size"):
        accumulator.update([cka.gram_linear(x[:4])], [cka.gram_linear(x[:4])])
    with pytest.raises(ValueError, match="at least 4"):
        cka.MinibatchCKA(1, 1).update([np.eye(3)], [np.eye(3)])


def test_a_representation_without_variance_gives_nan():
    x = _rng(9).normal(size=(20, 4))
    assert np.isnan(cka.cka(np.zeros((20, 5)), x))
