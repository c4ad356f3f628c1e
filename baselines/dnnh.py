"""DNNH: Lai, Pan, Liu, Yan, "Simultaneous Feature Learning and Hash Coding with Deep Neural Networks", CVPR 2015.

Triplets (I, I+, I-) from the labels: I+ shares a label with I, I- shares none. A shared network ends in a
divide-and-encode module: the last feature vector is split into K slices, each slice mapped by its own unit to one
output, a sigmoid, then a piecewise threshold that snaps outputs already far from 1/2 to 0 or 1:
    g(s) = 0 if s < 0.5 - eps,  s if |s - 0.5| <= eps,  1 if s > 0.5 + eps
trained with the triplet ranking loss max(0, 1 - (||F(I) - F(I-)||^2 - ||F(I) - F(I+)||^2)). Codes: 1[F > 0.5].

Departures from the paper: no public code; eps is unpublished (0.1 here); triplets are drawn inside each batch
(one random positive and negative per anchor that has both); backbone and schedule are the shared ones of
bench.deep.SupervisedConfig (from scratch by default, Cao et al. used AlexNet).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from bench.backbones import DeepHashMethod
from bench.deep import SUPERVISED_CPU_REDUCED, SupervisedConfig
from bench.errors import BenchError
from bench.hookspecs import hookimpl
from bench.method import setting
from bench.metrics import relevance


class DivideAndEncode(nn.Module):
    """K slices of the feature vector, one unit each (a block-diagonal layer): (n, d) -> (n, K)."""

    def __init__(self, dim: int, n_bits: int):
        super().__init__()
        self.width = dim // n_bits
        if self.width < 1:
            raise BenchError(f"dnnh: {n_bits} bits need at least {n_bits} backbone features (has {dim})")
        self.weight = nn.Parameter(torch.randn(n_bits, self.width) / self.width**0.5)
        self.bias = nn.Parameter(torch.zeros(n_bits))

    def forward(self, features):
        n_bits = self.weight.shape[0]
        slices = features[:, : n_bits * self.width].reshape(-1, n_bits, self.width)
        return torch.einsum("nkw,kw->nk", slices, self.weight) + self.bias


def piecewise_threshold(s: torch.Tensor, eps: float) -> torch.Tensor:
    """DNNH's g: outputs farther than eps from 1/2 become exactly 0 or 1 (no gradient there)."""
    return torch.where(s < 0.5 - eps, torch.zeros_like(s), torch.where(s > 0.5 + eps, torch.ones_like(s), s))


def triplets(y: torch.Tensor, generator: torch.Generator):
    """(anchor, positive, negative) index triples inside a batch: for each anchor with both, a random item that
    shares a label and a random one that shares none."""
    s = relevance(y, y)
    s.fill_diagonal_(False)
    noise = torch.rand(s.shape, generator=generator).to(s.device)
    pos_score, neg_score = torch.where(s, noise, -1.0), torch.where(~s, noise, -1.0)
    neg_score.fill_diagonal_(-1.0)
    ok = (pos_score.max(1).values >= 0) & (neg_score.max(1).values >= 0)
    anchors = torch.nonzero(ok).squeeze(1)
    return anchors, pos_score.argmax(1)[anchors], neg_score.argmax(1)[anchors]


class DNNH(DeepHashMethod):
    name = "dnnh"
    paper = "Lai et al., CVPR 2015"
    supervision = "labels"  # triplets are formed from the labels
    recipes = {"cpu-reduced": SUPERVISED_CPU_REDUCED}
    # at the shared rate (0.01) a smoke fit's mAP ranged 0.22-0.31 over seeds, at half of it 0.29-0.39
    smoke = {**DeepHashMethod.smoke, "lr": 0.005}

    @dataclasses.dataclass(frozen=True)
    class Config(SupervisedConfig):
        margin: float = setting(1.0, at_least=0)  # the triplet ranking loss's margin (paper)
        eps: float = setting(0.1, at_least=0, at_most=0.5)  # the piecewise threshold's band around 1/2 (unpublished)

    def network(self, x):
        net = super().network(x)
        net.layer = DivideAndEncode(net.backbone.dim, self.n_bits)
        return net

    def batch_loss(self, y, generator):
        c = self.config

        def loss(z, idx, step):
            f = piecewise_threshold(torch.sigmoid(z), c.eps)
            a, p, n = triplets(y[idx], generator)
            d_pos, d_neg = ((f[a] - f[p]) ** 2).sum(1), ((f[a] - f[n]) ** 2).sum(1)
            ranking = torch.relu(c.margin - (d_neg - d_pos)).mean() if len(a) else z.sum() * 0
            return ranking, {}

        return loss

    # codes: sign(z), i.e. sigmoid(z) > 1/2


@hookimpl
def bench_methods():
    return [DNNH]
