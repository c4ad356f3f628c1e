"""Hash centres: a code in {-1, +1}^K per class, fixed before training and far apart in Hamming space, the
targets of CSQ, DPN and OrthoHash (CSQ's construction: Hadamard rows when they fit, else Bernoulli draws kept at
a minimum distance), and each training item's target (multi-hot labels: the centroid of its labels' centres)."""

from __future__ import annotations

import math
import typing

import torch

CENTRE_TRIES = 2_000  # random draws for one centre before the required distance is lowered by one bit
_BLOCK = 64  # candidates drawn (and checked) at once


class Centres(typing.NamedTuple):
    codes: torch.Tensor  # (n_classes, n_bits) float32 in {-1, +1}, on the CPU
    construction: str  # "hadamard" or "bernoulli"
    min_distance: int  # the least Hamming distance the construction guarantees between two centres


def hadamard(n: int) -> torch.Tensor:
    """Sylvester's n x n Hadamard matrix (n a power of two): entries +-1, rows pairwise orthogonal (H H^T = n I)."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Sylvester's construction needs a power of two, not {n}")
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    return h


def hamming_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(len(a), len(b)) Hamming distances of +-1 codes."""
    return (a.shape[1] - a @ b.T) / 2


def bernoulli_centres(n_classes: int, n_bits: int, generator: torch.Generator, min_distance: int = 0) -> Centres:
    """Random +-1 centres, each bit Bernoulli(1/2), drawn one after another; a draw is kept when it lies at least
    ``min_distance`` bits from every centre kept before. After ``CENTRE_TRIES`` refused draws for one centre the
    required distance drops by one bit (it can always reach 0)."""
    kept = torch.empty(0, n_bits)
    required, refused = max(int(min_distance), 0), 0
    while len(kept) < n_classes:
        block = torch.where(torch.rand(_BLOCK, n_bits, generator=generator) < 0.5, 1.0, -1.0)
        if required == 0:
            kept = torch.cat([kept, block[: n_classes - len(kept)]])
            continue
        for candidate in block:
            if not len(kept) or hamming_distances(candidate[None], kept).min() >= required:
                kept, refused = torch.cat([kept, candidate[None]]), 0
                if len(kept) == n_classes:
                    break
            else:
                refused += 1
                if refused >= CENTRE_TRIES:
                    required, refused = required - 1, 0
    return Centres(kept, "bernoulli", required)


def hash_centres(n_classes: int, n_bits: int, generator: torch.Generator, min_distance_fraction: float = 0.25):
    """CSQ's hash centres (Sec. 3.2): Hadamard rows when ``n_bits`` is a power of two and 2 n_bits >= n_classes
    (pairwise distance >= n_bits / 2, no randomness), else Bernoulli centres more than ``min_distance_fraction``
    x n_bits apart (``bernoulli_centres``)."""
    if n_bits & (n_bits - 1) == 0 and n_classes <= 2 * n_bits:
        h = hadamard(n_bits)
        rows = torch.cat([h, -h])[:n_classes]
        return Centres(rows, "hadamard", n_bits // 2 if n_classes > 1 else n_bits)
    return bernoulli_centres(n_classes, n_bits, generator, math.floor(min_distance_fraction * n_bits) + 1)


def n_classes(y: torch.Tensor) -> int:
    """The number of classes of class ids (n,) or multi-hot labels (n, c)."""
    return y.shape[1] if y.ndim == 2 else int(y.max()) + 1


def centre_targets(y: torch.Tensor, centres: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each item's target code (n, K) in {-1, +1}: its class's centre; for multi-hot labels the centroid of its
    labels' centres binarised by sign, a tied bit (sum 0, also every bit of an item without labels) drawn at
    random (CSQ Sec. 3.2)."""
    centres = centres.to(y.device)
    if y.ndim == 1:
        return centres[y]
    total = y.to(centres.dtype) @ centres
    ties = torch.where(torch.rand(total.shape, generator=generator) < 0.5, 1.0, -1.0).to(total.device)
    return torch.where(total > 0, 1.0, torch.where(total < 0, -1.0, ties))


def centres_record(centres: Centres) -> dict:
    """What a record says of the centres a run trained towards."""
    return {"construction": centres.construction, "n": len(centres.codes), "min_distance": centres.min_distance}
