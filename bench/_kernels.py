"""The CPU scan of the evaluator: a compiled (numba) counting kernel, parallel over queries.

For each query, two passes over the database and no sort:
1. Hamming distances by XOR + popcount of bit-packed codes (or the bucket of the spherical distance
   popcount(xor) / popcount(and)), and the histogram of (distance, relevant);
2. in database-index order, per-distance counters give every item's rank with ties broken by index:
   rank = (items at smaller distances) + (items at the same distance seen so far) + 1,
   and likewise the number of relevant items up to it. Each relevant item adds precision = hits / rank to the
   AP at every cutoff its rank is inside, and counts towards P@N for every N >= rank.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

# numba's OpenMP layer shares libgomp with torch and, when its pool starts, resets the thread count of the whole
# process: torch's small training ops then spin on a busy machine (200 small matmuls took 1.65 s instead of
# 0.18 s on 2 cores after one evaluation). The workqueue layer keeps a pool of its own.
numba.config.THREADING_LAYER = "workqueue"

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


@numba.njit(inline="always")
def _popcount(x):
    # SWAR popcount; LLVM turns it into the popcnt instruction where the CPU has one.
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return (x * _H01) >> np.uint64(56)


@numba.njit(parallel=True, cache=True, nogil=True)
def _scan(
    q_words, d_words, q_labels, d_labels, multi_label, buckets, key_template, cutoffs, pn_grid, hist, ap, pn_hits
):
    n_q, n_words = q_words.shape
    n_d = d_words.shape[0]
    n_buckets = hist.shape[1]
    spherical = buckets.shape[0] > 1  # buckets[xor, and]: the rank of the spherical distance xor / and
    for i in numba.prange(n_q):
        # Pass 1: key = 2 * bucket + relevant, the bucket being the Hamming distance (or the spherical one's
        # rank). Plain loops so that LLVM vectorises them (vector popcount).
        key = np.zeros(n_d, key_template.dtype)
        if spherical:
            for j in range(n_d):
                n_xor = 0
                n_and = 0
                for w in range(n_words):
                    n_xor += np.int64(_popcount(q_words[i, w] ^ d_words[j, w]))
                    n_and += np.int64(_popcount(q_words[i, w] & d_words[j, w]))
                key[j] = buckets[n_xor, n_and]
        else:
            for w in range(n_words):
                x = q_words[i, w]
                for j in range(n_d):
                    key[j] += np.int64(_popcount(x ^ d_words[j, w]))
        if multi_label:
            for j in range(n_d):
                shared = np.uint64(0)
                for w in range(q_labels.shape[1]):
                    shared |= q_labels[i, w] & d_labels[j, w]
                key[j] = 2 * key[j] + (shared != 0)
        else:
            label = q_labels[i, 0]
            for j in range(n_d):
                key[j] = 2 * key[j] + (d_labels[j, 0] == label)
        # Four interleaved histograms: consecutive increments of one counter would wait on each other.
        partial = np.zeros((4, 2 * n_buckets), np.int64)
        for j in range(n_d):
            partial[j & 3, key[j]] += 1
        counts = partial.sum(axis=0)
        for s in range(n_buckets):
            hist[i, s, 0] = counts[2 * s]
            hist[i, s, 1] = counts[2 * s + 1]

        # Pass 2, in database-index order: per-distance counters start at the number of items (relevant items)
        # at smaller distances, so after the increment they hold this item's rank (its relevant-rank).
        rank = np.zeros(n_buckets, np.int64)
        relevant_rank = np.zeros(n_buckets, np.int64)
        for s in range(1, n_buckets):
            rank[s] = rank[s - 1] + counts[2 * s - 2] + counts[2 * s - 1]
            relevant_rank[s] = relevant_rank[s - 1] + counts[2 * s - 1]
        n_relevant = relevant_rank[n_buckets - 1] + counts[2 * n_buckets - 1]
        hit_rank = np.empty(n_relevant + 1, np.int64)
        hit_relevant_rank = np.empty(n_relevant + 1, np.int64)
        n_hits = 0
        for j in range(n_d):  # branch-free: the slot is overwritten unless the item is relevant
            s = key[j] >> 1
            r = key[j] & 1
            rank[s] += 1
            relevant_rank[s] += r
            hit_rank[n_hits] = rank[s]
            hit_relevant_rank[n_hits] = relevant_rank[s]
            n_hits += r
        # Pass 3, over the relevant items only.
        for c in range(cutoffs.shape[0]):
            total = 0.0
            inside = 0
            for h in range(n_hits):
                if hit_rank[h] <= cutoffs[c]:
                    total += hit_relevant_rank[h] / hit_rank[h]
                    inside += 1
            ap[i, c] = total / inside if inside > 0 else 0.0
        for c in range(pn_grid.shape[0]):
            for h in range(n_hits):
                pn_hits[i, c] += hit_rank[h] <= pn_grid[c]


def _pack_bits(bits: np.ndarray) -> np.ndarray:
    """(n, m) bool -> (n, ceil(m/64)) uint64, zero-padded."""
    packed = np.packbits(bits, axis=1)
    pad = (-packed.shape[1]) % 8
    if pad:
        packed = np.pad(packed, ((0, 0), (0, pad)))
    return np.ascontiguousarray(packed).view(np.uint64)


def _labels(labels: torch.Tensor) -> np.ndarray:
    if labels.ndim == 1:
        return labels.numpy().astype(np.uint64).reshape(-1, 1)
    return _pack_bits(labels.numpy() > 0)


def scan(q: torch.Tensor, d: torch.Tensor, ql: torch.Tensor, dl: torch.Tensor, cutoffs, pn_grid, buckets=None):
    """Per query: (distance, relevant) histogram (nq, n_buckets, 2), AP at each cutoff (nq, len(cutoffs)) and
    relevant items among the first N for each N of ``pn_grid`` (nq, len(pn_grid)). Inputs: int8 {-1,+1} codes
    and validated labels on the CPU. ``buckets``: None for Hamming distance (n_bits + 1 buckets), else the
    (n_bits+1, n_bits+1) table of spherical-distance ranks by (xor count, and count)."""
    n_q, n_bits = q.shape
    n_buckets = n_bits + 1 if buckets is None else int(buckets.max()) + 1
    table = np.zeros((1, 1), np.int64) if buckets is None else buckets.numpy().astype(np.int64)
    template = np.zeros(1, np.int16 if 2 * n_buckets < 2**15 else np.int32)
    hist = np.zeros((n_q, n_buckets, 2), np.int64)
    ap = np.zeros((n_q, len(cutoffs)), np.float64)
    pn_hits = np.zeros((n_q, len(pn_grid)), np.int64)
    _scan(
        _pack_bits(q.numpy() > 0),
        _pack_bits(d.numpy() > 0),
        _labels(ql),
        _labels(dl),
        ql.ndim == 2,
        table,
        template,
        np.asarray(cutoffs, np.int64),
        np.asarray(pn_grid, np.int64),
        hist,
        ap,
        pn_hits,
    )
    return hist, ap, pn_hits
