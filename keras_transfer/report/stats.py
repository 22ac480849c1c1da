"""Means and 95% confidence intervals that respect what the nets of a grid share.

Nets of one split share its class halves and its base nets (AnB and BnA copy from the same
baseA and baseB), so they are not independent draws. The independent unit is the split: a
value is first averaged within each split (over seeds, directions and the n pooled), and the
interval is Student's t over those split means, with splits - 1 degrees of freedom. A grid of
one split has no such repeats; its seeds are then the clusters, which leaves the split's own
variation out of the interval (the summary says so).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

CONFIDENCE = 0.95


def t_interval(values) -> dict:
    """Mean, sample std, count and the 95% Student-t interval (half-width `ci95`, bounds
    `low`/`high`) of independent values; the interval is NaN for fewer than two."""
    x = np.asarray([v for v in values if v is not None and not pd.isna(v)], dtype=float)
    count = len(x)
    mean = float(x.mean()) if count else math.nan
    std = float(x.std(ddof=1)) if count > 1 else math.nan
    half = math.nan
    if count > 1:
        half = float(scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, count - 1) * std / math.sqrt(count))
    return {"mean": mean, "std": std, "count": count, "ci95": half,
            "low": mean - half, "high": mean + half}


def cluster_columns(df: pd.DataFrame) -> list[str]:
    """The columns whose values make independent clusters: the split, or within a single split
    the seed (then the interval leaves out how much the split itself matters)."""
    if df["split_dir"].nunique() > 1:
        return ["split_dir"]
    return ["split_dir", "seed"]


def clustered(df: pd.DataFrame, value: str) -> dict:
    """t_interval over the per-cluster means of `value`; `count` is the number of clusters
    and `runs` the number of rows behind them."""
    rows = df.dropna(subset=[value])
    if rows.empty:
        return {**t_interval([]), "runs": 0}
    per_cluster = rows.groupby(cluster_columns(rows))[value].mean()
    return {**t_interval(per_cluster.values), "runs": len(rows)}


def verdict(interval: dict) -> str:
    """holds / reversed / not detected from a 95% interval of an effect the paper found
    positive (every finding is stated so); `not tested` without two independent clusters."""
    if interval["count"] < 2 or pd.isna(interval["ci95"]):
        return "not tested (needs 2+ splits or seeds)"
    if interval["low"] > 0:
        return "holds"
    if interval["high"] < 0:
        return "reversed"
    return "not detected"


def slope(xs, ys) -> float:
    """Least-squares slope of ys on xs (NaN for fewer than two distinct xs)."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    keep = ~np.isnan(ys)
    if len(set(xs[keep])) < 2:
        return math.nan
    return float(scipy_stats.linregress(xs[keep], ys[keep]).slope)


def spearman(x, y) -> dict:
    """Spearman's rank correlation (scipy) with its two-sided p-value: exact, over every
    permutation, for up to 9 points; scipy's asymptotic one above that."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
    rho = float(scipy_stats.spearmanr(x, y).statistic)
    if math.isnan(rho):
        return {"rho": None, "p_value": None, "p_value_method": None, "points": int(len(x))}
    if len(x) <= 9:
        # One sample under "pairings": every one of the n! orders of y against a fixed x (two
        # samples would permute both, (n!)^2 orders).
        rank_x = scipy_stats.rankdata(x)

        def rho_of(y_order, axis=-1):  # vectorised over orders: Pearson of the ranks
            rank_y = scipy_stats.rankdata(y_order, axis=axis)
            centred_x = rank_x - rank_x.mean()
            centred_y = rank_y - rank_y.mean(axis=axis, keepdims=True)
            return (centred_y @ centred_x) / (np.linalg.norm(centred_y, axis=axis)
                                              * np.linalg.norm(centred_x))
        result = scipy_stats.permutation_test(
            (y,), rho_of, permutation_type="pairings", n_resamples=math.inf,
            alternative="two-sided", vectorized=True)
        p_value, method = float(result.pvalue), "exact permutation"
    else:
        p_value, method = float(scipy_stats.spearmanr(x, y).pvalue), "asymptotic t"
    return {"rho": rho, "p_value": p_value, "p_value_method": method, "points": int(len(x))}


def stronger_predictor(correlations: dict) -> str:
    """The name of the predictor whose rank correlation is largest in size (|rho|, either
    sign), "neither" when the largest sizes are equal or none is defined."""
    sizes = {name: abs(c["rho"]) for name, c in correlations.items()
             if c is not None and c.get("rho") is not None}
    if not sizes:
        return "neither"
    best = max(sizes.values())
    leaders = [name for name, size in sizes.items() if math.isclose(size, best, abs_tol=1e-9)]
    return leaders[0] if len(leaders) == 1 else "neither"
