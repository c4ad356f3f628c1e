"""DSH: Liu, Wang, Shan, Chen, "Deep Supervised Hashing for Fast Image Retrieval", CVPR 2016 (the authors' Caffe
release: lhmRyan/deep-supervised-hashing-DSH, its HashingLoss layer).

A backbone with a new linear K-unit layer b = F(x), trained on every pair of images in a batch (the paper
generates the pairs online, within each minibatch) with a contrastive loss on the real-valued outputs, the
binary constraint relaxed to a regulariser that pulls each output towards -1 or +1 (Eq. 3, the relaxed loss
L_r of a pair; Eq. 1 is the contrastive part, with y = 0 for a similar pair and 1 for a dissimilar one):
    L_r(b_1, b_2, y) = 1/2 (1 - y) ||b_1 - b_2||^2 + 1/2 y max(m - ||b_1 - b_2||^2, 0)
                       + alpha (|| |b_1| - 1 ||_1 + || |b_2| - 1 ||_1),
averaged over the batch's pairs i < j. Codes: sign(b). Similarity: sharing at least one label (the release's
layer takes class ids or multi-hot rows the same way).

Defaults (the paper's): margin m = 2K (m_bits = 2), alpha = 0.01 (the release's CIFAR-10 net: bi_margin 24 at
12 bits, tradeoff 0.01). The release's layer writes the same objective, halved (its gradient divides the pair
sum by n(n - 1), the regulariser by n), which only rescales the learning rate.

Departures from the paper: backbone and schedule are the shared ones of bench.deep.SupervisedConfig (the paper
trains its own three-conv network from scratch with its own solver; here the project's small CNN, or AlexNet /
VGG-16, on the schedule every supervised method shares).
"""

from __future__ import annotations

import dataclasses

import torch

from bench.backbones import DeepHashMethod
from bench.deep import SUPERVISED_CPU_REDUCED, SupervisedConfig
from bench.hookspecs import hookimpl
from bench.method import setting
from bench.metrics import relevance


def squared_distances(b: torch.Tensor) -> torch.Tensor:
    """||b_i - b_j||^2 for every pair of rows (clamped at 0 against rounding)."""
    sq = (b * b).sum(1)
    return (sq[:, None] + sq[None, :] - 2 * b @ b.T).clamp(min=0)


def relaxed_pair_loss(b: torch.Tensor, s: torch.Tensor, margin: float, alpha: float) -> tuple[torch.Tensor, dict]:
    """DSH's L_r (Eq. 3) averaged over the pairs i < j of a batch; s: (n, n) bool, True for similar pairs (the
    paper's y = 0). Returns (loss, {"contrastive": the Eq. 1 part, "regulariser": its mean per pair})."""
    n = b.shape[0]
    d = squared_distances(b)
    similar = s.to(b.dtype)
    # Eq. 1: pull similar pairs together, push dissimilar ones apart until their squared distance reaches m
    contrastive = 0.5 * similar * d + 0.5 * (1 - similar) * torch.relu(margin - d)
    # Eq. 3: the relaxation of b in {-1, +1}^K, alpha (|| |b_1| - 1 ||_1 + || |b_2| - 1 ||_1) for each pair
    r = (b.abs() - 1).abs().sum(1)
    regulariser = r[:, None] + r[None, :]
    pairs = torch.ones(n, n, device=b.device).triu(diagonal=1)
    count = pairs.sum().clamp(min=1)
    contrastive, regulariser = (contrastive * pairs).sum() / count, (regulariser * pairs).sum() / count
    return contrastive + alpha * regulariser, {"contrastive": contrastive, "regulariser": regulariser}


class DSH(DeepHashMethod):
    name = "dsh"
    paper = "Liu et al., CVPR 2016"
    supervision = "pairs"
    recipes = {"cpu-reduced": SUPERVISED_CPU_REDUCED}

    @dataclasses.dataclass(frozen=True)
    class Config(SupervisedConfig):
        # the margin m of dissimilar pairs' squared distance, in units of K: m = 2K (the paper)
        margin_bits: float = setting(2.0, above=0)
        alpha: float = setting(0.01, at_least=0)  # the regulariser's weight (the paper; the release's tradeoff)

    def batch_loss(self, y, generator):
        c = self.config

        def loss(b, idx, step):
            # Eq. 3 over the batch's pairs (generated online, all pairs of the minibatch)
            return relaxed_pair_loss(b, relevance(y[idx], y[idx]), c.margin_bits * self.n_bits, c.alpha)

        return loss


@hookimpl
def bench_methods():
    return [DSH]
