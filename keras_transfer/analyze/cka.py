"""Linear centered kernel alignment (CKA): how alike two layers' representations are.

CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with linear Gram matrices K = X X^T and
L = Y Y^T of the same n examples (rows) in the same order (Kornblith et al. 2019). It is
invariant to orthogonal transforms and isotropic scaling of the features, not to arbitrary
invertible linear maps, and it is defined for layers of different widths.

Two estimators of HSIC:
- biased, tr(K H L H) / (n - 1)^2 (H centres): what the 2019 paper used. For wide layers and
  few examples it is far from 0 even for independent features, so it needs all examples at once.
- unbiased, HSIC_1 of Song et al. (2012): a U-statistic, unbiased for every n >= 4. Nguyen,
  Raghu & Kornblith (2021) average it over minibatches of a fixed size, so CKA can be streamed
  over a dataset with memory bounded by one batch's Gram matrices (`MinibatchCKA`).

Both are invariant to subtracting any vector from every row of X (the linear kernel's HSIC is a
function of the feature covariance), so callers may centre features per batch before forming
Gram matrices, which keeps float32 Gram matrices of post-ReLU features (all positive, large
mean) accurate. Everything here is float64 numpy; the network side is in `similarity`.
"""
from __future__ import annotations

import numpy as np

MIN_EXAMPLES_UNBIASED = 4  # HSIC_1 divides by n (n - 3) and (n - 2)
ESTIMATORS = ("unbiased", "biased")


def gram_linear(features) -> np.ndarray:
    """K = X X^T in float64 for features X of shape (n, ...) (trailing axes flattened)."""
    x = np.asarray(features, np.float64)
    x = x.reshape(x.shape[0], -1)
    return x @ x.T


def hsic_unbiased(gram_x, gram_y) -> float:
    """HSIC_1 of Song et al. (2012), eq. (5): the U-statistic, unbiased for n >= 4.

    [tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n (n-3)), where K~ and L~ are
    the Gram matrices with their diagonals set to zero.
    """
    k, l = (_zero_diagonal(g) for g in _check_grams(gram_x, gram_y))
    n = k.shape[0]
    if n < MIN_EXAMPLES_UNBIASED:
        raise ValueError(f"the unbiased HSIC needs at least {MIN_EXAMPLES_UNBIASED} examples, "
                         f"got {n}")
    k_rows, l_rows = k.sum(axis=1), l.sum(axis=1)
    trace_kl = np.sum(k * l)  # tr(K L) for symmetric K, L
    total = k_rows.sum() * l_rows.sum() / ((n - 1) * (n - 2))
    cross = 2.0 / (n - 2) * (k_rows @ l_rows)  # 1'K L 1 = (K 1) . (L 1)
    return float((trace_kl + total - cross) / (n * (n - 3)))


def hsic_biased(gram_x, gram_y) -> float:
    """tr(K H L H) / (n - 1)^2: Gretton et al. (2005), as used by Kornblith et al. (2019)."""
    k, l = _check_grams(gram_x, gram_y)
    n = k.shape[0]
    return float(np.sum(_center(k) * _center(l)) / (n - 1) ** 2)


_HSIC = {"unbiased": hsic_unbiased, "biased": hsic_biased}


def cka_from_hsic(hsic_xy, hsic_xx, hsic_yy) -> float:
    """The normalised alignment; NaN when a representation has no variance (e.g. dead ReLUs)."""
    denominator = float(hsic_xx) * float(hsic_yy)
    if not denominator > 0:
        return float("nan")
    return float(hsic_xy / np.sqrt(denominator))


def cka(x, y, estimator: str = "unbiased") -> float:
    """Full-batch linear CKA of features x (n, ...) and y (n, ...) of the same n examples."""
    if estimator not in _HSIC:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    k, l = gram_linear(x), gram_linear(y)
    hsic = _HSIC[estimator]
    return cka_from_hsic(hsic(k, l), hsic(k, k), hsic(l, l))


class MinibatchCKA:
    """Streaming CKA of every layer of net A against every layer of net B.

    `update` takes one minibatch's Gram matrices (one per layer, same examples in the same
    order for both nets) and adds its HSIC_1 terms; `result` is Nguyen et al.'s minibatch CKA,
    mean_b HSIC_1(K_ib, L_jb) / sqrt(mean_b HSIC_1(K_ib, K_ib) mean_b HSIC_1(L_jb, L_jb)), as a
    (layers of A) x (layers of B) matrix. The biased estimator is accumulated alongside for
    comparison (`result("biased")`); it depends on the batch size, the unbiased one does not.

    Batches must all have the same size, as in Nguyen et al.: a batch of another size raises
    ValueError (the caller drops the remainder).
    """

    def __init__(self, num_layers_a: int, num_layers_b: int):
        self.shape = (num_layers_a, num_layers_b)
        self.batch_size = None
        self.batches = 0
        self._cross = {e: np.zeros(self.shape) for e in ESTIMATORS}
        self._self_a = {e: np.zeros(num_layers_a) for e in ESTIMATORS}
        self._self_b = {e: np.zeros(num_layers_b) for e in ESTIMATORS}

    @property
    def examples(self) -> int:
        return self.batches * (self.batch_size or 0)

    def update(self, grams_a, grams_b) -> None:
        """Adds one minibatch: Gram matrices of A's layers and of B's layers, each (b, b)."""
        if (len(grams_a), len(grams_b)) != self.shape:
            raise ValueError(f"expected {self.shape[0]} and {self.shape[1]} Gram matrices, "
                             f"got {len(grams_a)} and {len(grams_b)}")
        grams_a = [np.asarray(g, np.float64) for g in grams_a]
        grams_b = [np.asarray(g, np.float64) for g in grams_b]
        sizes = {g.shape for g in grams_a + grams_b}
        if len(sizes) != 1:
            raise ValueError(f"Gram matrices of one minibatch differ in shape: {sorted(sizes)}")
        (size, _), = sizes
        if self.batch_size is None:
            if size < MIN_EXAMPLES_UNBIASED:
                raise ValueError(f"minibatches need at least {MIN_EXAMPLES_UNBIASED} examples "
                                 f"for the unbiased HSIC, got {size}")
            self.batch_size = size
        elif size != self.batch_size:
            raise ValueError(f"minibatch of {size} examples after batches of {self.batch_size}: "
                             "minibatch CKA averages over batches of one fixed size")
        for estimator, hsic in _HSIC.items():
            for i, k in enumerate(grams_a):
                self._self_a[estimator][i] += hsic(k, k)
                for j, l in enumerate(grams_b):
                    self._cross[estimator][i, j] += hsic(k, l)
            for j, l in enumerate(grams_b):
                self._self_b[estimator][j] += hsic(l, l)
        self.batches += 1

    def result(self, estimator: str = "unbiased") -> np.ndarray:
        """CKA matrix [layer of A, layer of B]; the 1/batches of the means cancels."""
        if not self.batches:
            raise ValueError("no minibatch was added")
        cross, self_a, self_b = (self._cross[estimator], self._self_a[estimator],
                                 self._self_b[estimator])
        return np.array([[cka_from_hsic(cross[i, j], self_a[i], self_b[j])
                          for j in range(self.shape[1])] for i in range(self.shape[0])])


def minibatch_cka(x, y, batch_size: int, estimator: str = "unbiased") -> float:
    """Minibatch CKA of two in-memory representations, consecutive batches, remainder dropped."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples and y {len(y)}; CKA needs the same examples")
    accumulator = MinibatchCKA(1, 1)
    for start in range(0, len(x) - batch_size + 1, batch_size):
        stop = start + batch_size
        accumulator.update([gram_linear(x[start:stop])], [gram_linear(y[start:stop])])
    return float(accumulator.result(estimator)[0, 0])


def _check_grams(gram_x, gram_y):
    k, l = np.asarray(gram_x, np.float64), np.asarray(gram_y, np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape != l.shape:
        raise ValueError(f"expected two square Gram matrices of one size, got {k.shape} and "
                         f"{l.shape}")
    return k, l


def _zero_diagonal(gram):
    k = np.array(gram, np.float64, copy=True)
    np.fill_diagonal(k, 0.0)
    return k


def _center(gram):
    """H K H: subtract row and column means, add back the grand mean."""
    return (gram - gram.mean(axis=0, keepdims=True) - gram.mean(axis=1, keepdims=True)
            + gram.mean())
