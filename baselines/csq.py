"""CSQ: Yuan, Wang, Zhang, Tay, Jie, Liu, Feng, "Central Similarity Quantization for Efficient Image and Video
Retrieval", CVPR 2020 (official code: yuanli2333/Hadamard-Matrix-for-hashing, PyTorch).

Every class gets a hash centre c in {-1, +1}^K, fixed before training, the centres far apart in Hamming space
(Definition 1: mutual distance about K/2 or more):
  - rows of a K x K Hadamard matrix H_K (Sylvester's construction), then of -H_K, when K is a power of two and
    2K >= the number of classes: every two rows differ in exactly K/2 bits (a row and its negation in K);
  - otherwise random centres, each bit Bernoulli(1/2), a draw kept only if it lies more than
    ``min_distance_fraction`` x K bits from every centre kept before (the release's rule: more than K/4).
An item with several labels (multi-hot) gets the centroid of its labels' centres, binarised by sign, each tied bit
(a zero sum) set at random (Sec. 3.2); the draws are made once per training item before training.

The network F (backbone + K-unit layer z) gives h = tanh(z) in (-1, 1); the loss of a batch is
    L_C + lambda L_Q,
    L_C = -1/K sum_k [c'_k log h'_k + (1 - c'_k) log(1 - h'_k)]   (Eq. 6, central similarity: the binary
          cross-entropy between h' = (h + 1)/2 and the item's centre c' = (c + 1)/2; computed from the logits 2z,
          as h' = sigmoid(2z))
    L_Q = sum_k log cosh(|h_k| - 1)                               (Eq. 7, quantization; in the paper's [0, 1]
          outputs log cosh(|2h'_k - 1| - 1), the same number)
(Eq. 8, the total), both averaged over the batch (and L_Q over the bits, as both public ports do). Codes: sign(z).

Defaults: lambda = 1e-4 (the PyTorch port's value; the release weights its squared quantization term 0.05).
Departures, each a Config switch: ``quantization="squared"`` is the release's (|h| - 1)^2 in place of log cosh;
``w_pairwise`` adds the release's extra HashNet pairwise likelihood (its lambda1 = 0.2; here on all pairs of the
batch, alpha = 10 / K, balanced weights, ``bench.deep.pairwise_likelihood``), 0 by default as the paper has none;
when the required distance cannot be met within ``CENTRE_TRIES`` draws for one centre (many classes, few bits),
it is lowered one bit at a time and the distance kept is stored in ``training_``. The release draws the whole set
again until its minimum is met (and its notebook also asks for a mean of K/2, which Bernoulli draws have in
expectation); it breaks multi-label ties with one random vector shared by all items. Backbone and schedule are the
shared ones of bench.deep.SupervisedConfig (from scratch by default; the paper fine-tunes AlexNet/ResNet with Adam).
"""

from __future__ import annotations

import dataclasses
import math
import typing

import torch
import torch.nn.functional as F

from bench.backbones import DeepHashMethod
from bench.deep import SUPERVISED_CPU_REDUCED, SupervisedConfig, log_cosh, pair_weights, pairwise_likelihood
from bench.hookspecs import hookimpl
from bench.method import FitContext, setting
from bench.metrics import relevance

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


def central_similarity(z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """L_C (Eq. 6): the bitwise binary cross-entropy between (tanh(z) + 1)/2 = sigmoid(2z) and the {0, 1} centre,
    averaged over bits and items."""
    return F.binary_cross_entropy_with_logits(2 * z, (targets + 1) / 2)


def quantization(h: torch.Tensor, kind: str = "log_cosh") -> torch.Tensor:
    """L_Q (Eq. 7): log cosh(|h| - 1) (the paper) or (|h| - 1)^2 (the release), averaged over bits and items."""
    u = h.abs() - 1
    return (log_cosh(u) if kind == "log_cosh" else u**2).mean()


class CSQ(DeepHashMethod):
    name = "csq"
    paper = "Yuan et al., CVPR 2020"
    supervision = "labels"  # pointwise: one centre per class
    recipes = {"cpu-reduced": SUPERVISED_CPU_REDUCED}

    @dataclasses.dataclass(frozen=True)
    class Config(SupervisedConfig):
        w_quantization: float = setting(1e-4, at_least=0)  # lambda (the PyTorch port's value)
        # "log_cosh": the paper's Eq. 7; "squared": the release's (|h| - 1)^2
        quantization: typing.Literal["log_cosh", "squared"] = "log_cosh"
        # random centres lie more than this fraction of K apart (the release: K/4; its issue #1: K/4 to K/3)
        min_distance_fraction: float = setting(0.25, at_least=0, below=1)
        w_pairwise: float = setting(0.0, at_least=0)  # the release's extra pairwise term (its 0.2); the paper: none

    def batch_loss(self, y, generator):
        c = self.config
        self.centres_ = hash_centres(n_classes(y), self.n_bits, generator, c.min_distance_fraction)
        targets = centre_targets(y, self.centres_.codes, generator)
        alpha = 10.0 / self.n_bits  # the release's sigmoid_param for its pairwise term

        def loss(z, idx, step):
            h = torch.tanh(z)
            central = central_similarity(z, targets[idx])
            quantized = quantization(h, c.quantization)
            total = central + c.w_quantization * quantized  # Eq. 8
            terms = {"central": central, "quantization": quantized}
            if c.w_pairwise > 0:
                s = relevance(y[idx], y[idx])
                terms["pairwise"] = pairwise_likelihood(h, h, s, alpha, pair_weights(s, "balanced", True))
                total = total + c.w_pairwise * terms["pairwise"]
            return total, terms

        return loss

    def fit(self, x, y=None, context=FitContext()):
        super().fit(x, y, context)
        self.training_["centres"] = centres_record(self.centres_)
        return self


def centres_record(centres: Centres) -> dict:
    """What a record says of the centres a run trained towards."""
    return {"construction": centres.construction, "n": len(centres.codes), "min_distance": centres.min_distance}


@hookimpl
def bench_methods():
    return [CSQ]
