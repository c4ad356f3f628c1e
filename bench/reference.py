"""Slow, obvious implementations of the metrics, written the way the popular repositories write them: one query
at a time, numpy argsort of its distances, a cumulative sum. The tests check ``bench.metrics`` against these, and
``bench bench-eval`` times them as the baseline. Never used to produce results.
"""

from __future__ import annotations

import itertools

import numpy as np


def _relevant(query_label, db_labels) -> np.ndarray:
    if np.ndim(db_labels) == 1:
        return (db_labels == query_label).astype(np.float64)
    return ((db_labels @ query_label) > 0).astype(np.float64)


def _distances(query, db, distance):
    """Distances of one {-1,+1} query to every database code, as the repositories compute them."""
    n_bits = db.shape[1]
    if distance == "hamming":
        return 0.5 * (n_bits - db @ query)
    q1, d1 = query > 0, db > 0  # Spherical Hashing: |a xor b| / |a and b| of the +1 bits
    xor = (q1 != d1).sum(1).astype(np.float64)
    both = (q1 & d1).sum(1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(both > 0, xor / np.where(both > 0, both, 1), np.where(xor > 0, np.inf, 0.0))


def _ap(rel_sorted: np.ndarray) -> float:
    """AP of a ranked 0/1 relevance list, normalised by the relevant items inside it (0 if none)."""
    hits = rel_sorted.sum()
    if hits == 0:
        return 0.0
    ranks = np.arange(1, len(rel_sorted) + 1)
    return float((np.cumsum(rel_sorted) / ranks * rel_sorted).sum() / hits)


def reference_evaluate(
    query_codes,
    db_codes,
    query_labels,
    db_labels,
    topk=(1000,),
    radius=2,
    pn=(),
    sort_kind="stable",
    distance="hamming",
) -> dict:
    """Per query: distances (Hamming, or Spherical Hashing's), ``np.argsort`` (``sort_kind``; "stable" breaks ties
    by database index, the numpy default "quicksort" the way most repositories do, arbitrarily), AP over the whole
    ranking and the top K, precision within the radius, P@N."""
    qb = np.asarray(query_codes, dtype=np.float64)
    db = np.asarray(db_codes, dtype=np.float64)
    ap, ap_at, p_ball, p_at = [], {k: [] for k in topk}, [], {n: [] for n in pn}
    for i in range(qb.shape[0]):
        hamm = _distances(qb[i], db, distance)
        rel = _relevant(query_labels[i], db_labels)
        order = np.argsort(hamm, kind=sort_kind)
        rel_sorted = rel[order]
        ap.append(_ap(rel_sorted))
        for k in topk:
            ap_at[k].append(_ap(rel_sorted[:k]))
        ball = hamm <= radius
        p_ball.append(float(rel[ball].mean()) if ball.any() else 0.0)
        for n in pn:
            p_at[n].append(float(rel_sorted[:n].mean()))
    out = {"map": float(np.mean(ap)), f"p@h<={radius}": float(np.mean(p_ball))}
    out.update({f"map@{k}": float(np.mean(v)) for k, v in ap_at.items()})
    out.update({f"p@{n}": float(np.mean(v)) for n, v in p_at.items()})
    return out


def reference_pr_radius(query_codes, db_codes, query_labels, db_labels):
    """Mean precision and recall of the Hamming ball of each radius 0..n_bits (empty ball: precision 0)."""
    qb = np.asarray(query_codes, dtype=np.float64)
    db = np.asarray(db_codes, dtype=np.float64)
    n_bits = qb.shape[1]
    precision = np.zeros(n_bits + 1)
    recall = np.zeros(n_bits + 1)
    for i in range(qb.shape[0]):
        hamm = 0.5 * (n_bits - db @ qb[i])
        rel = _relevant(query_labels[i], db_labels)
        for r in range(n_bits + 1):
            ball = hamm <= r
            precision[r] += rel[ball].sum() / ball.sum() if ball.any() else 0.0
            recall[r] += rel[ball].sum() / rel.sum() if rel.sum() else 0.0
    return precision / qb.shape[0], recall / qb.shape[0]


def brute_force_tie_ap(query_codes, db_codes, query_labels, db_labels, distance="hamming"):
    """Expected, best and worst mAP over every order of tied items, by enumerating all permutations of the
    database (the position in the permutation breaks ties). Only for tiny databases (n! orders)."""
    qb = np.asarray(query_codes, dtype=np.float64)
    db = np.asarray(db_codes, dtype=np.float64)
    n_db = db.shape[0]
    expected, best, worst = [], [], []
    for i in range(qb.shape[0]):
        hamm = _distances(qb[i], db, distance)
        rel = _relevant(query_labels[i], db_labels)
        values = []
        for perm in itertools.permutations(range(n_db)):
            order = sorted(range(n_db), key=lambda j: (hamm[j], perm[j]))
            values.append(_ap(rel[order]))
        expected.append(np.mean(values))
        best.append(max(values))
        worst.append(min(values))
    return float(np.mean(expected)), float(np.mean(best)), float(np.mean(worst))
