"""DCH: Cao, Long, Liu, Wang, "Deep Cauchy Hashing for Hamming Space Retrieval", CVPR 2018 (official TensorFlow
code in thulab/DeepHash).

A backbone with a new K-unit layer squashed by tanh, h = tanh(z) (the paper's fch), trained on every pair of a
batch with a Bayesian model whose similarity probability is a Cauchy function of the distance,
sigma(d) = gamma / (gamma + d), so that similar pairs farther than a small Hamming radius are penalised hard:
    d(h_i, h_j) = K/2 (1 - cos(h_i, h_j))                                 (Eq. 6, the Hamming distance for codes)
    L = sum_ij w_ij [s_ij log(d_ij / gamma) + log(1 + gamma / d_ij)]       (Eq. 8, Cauchy cross-entropy)
    Q = sum_i log(1 + d(|h_i|, 1) / gamma)                                  (Eq. 9, Cauchy quantization)
    min L + lambda Q                                                        (Eq. 7)
with w_ij = |S|/|S_1| for similar and |S|/|S_0| for dissimilar pairs (Eq. 2; ``bench.deep.pair_weights``), over
the pairs i != j. The similar term is written log(1 + d/gamma), the dissimilar one log(1 + gamma/d): the same
values, finite at d = 0 for similar pairs. L is the weighted sum divided by the sum of the weights and Q the mean
over the batch (the official code averages both the same way), so lambda weighs means. Codes: sign(h).
Similarity: sharing at least one label (class ids or multi-hot).

Defaults: gamma = 20 (the official script's default and the value of the public PyTorch port), lambda = 0.1
(the port's; the paper selects both by cross-validation).

Departures from the paper: in L, d is computed with the cosine capped at ``cosine_cap`` = 0.99 (the PyTorch
port's guard), so log(1 + gamma/d) stays finite for a dissimilar pair whose outputs point the same way; the paper
states none. Backbone and schedule are the shared ones of bench.deep.SupervisedConfig (the paper fine-tunes a
pretrained AlexNet; from scratch by default). The official code trains another loss than the paper's (a
sigmoid cross-entropy of 0.5 gamma / (gamma^2 + d) with dissimilar weight 1, and (|h| - 1)^2 quantization with
lambda = 0 by default); it is not reproduced.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from bench.backbones import DeepHashMethod
from bench.deep import SUPERVISED_CPU_REDUCED, SupervisedConfig, pair_weights
from bench.hookspecs import hookimpl
from bench.method import setting
from bench.metrics import relevance


def cauchy_distance(h_a: torch.Tensor, h_b: torch.Tensor, cosine_cap: float = 1.0) -> torch.Tensor:
    """Eq. 6: d_ij = K/2 (1 - cos(h_a_i, h_b_j)), the Hamming distance when both are codes in {-1, +1}^K; the
    cosine capped at ``cosine_cap`` (d >= K/2 (1 - cap))."""
    cos = F.normalize(h_a, dim=1) @ F.normalize(h_b, dim=1).T
    return h_a.shape[1] / 2 * (1 - cos.clamp(max=cosine_cap))


def cauchy_cross_entropy(d: torch.Tensor, s: torch.Tensor, gamma: float, weights: torch.Tensor) -> torch.Tensor:
    """Eq. 8, the weighted sum divided by the sum of the weights: for a similar pair -log sigma(d) =
    log(1 + d/gamma), for a dissimilar one -log(1 - sigma(d)) = log(1 + gamma/d), sigma(d) = gamma / (gamma + d)."""
    loss = torch.where(s, torch.log1p(d / gamma), torch.log1p(gamma / d))
    return (weights * loss).sum() / weights.sum().clamp(min=1e-12)


def cauchy_quantization(h: torch.Tensor, gamma: float) -> torch.Tensor:
    """Eq. 9, averaged over the items: log(1 + d(|h_i|, 1)/gamma), 0 when every |h_ik| is equal (h a code up to
    its scale). No cap: d has no pole here."""
    ones = torch.ones(1, h.shape[1], device=h.device, dtype=h.dtype)
    return torch.log1p(cauchy_distance(h.abs(), ones).squeeze(1) / gamma).mean()


class DCH(DeepHashMethod):
    name = "dch"
    paper = "Cao et al., CVPR 2018"
    supervision = "pairs"
    activation = "tanh"  # the fch layer's squashing (paper and official code)
    recipes = {"cpu-reduced": SUPERVISED_CPU_REDUCED}

    @dataclasses.dataclass(frozen=True)
    class Config(SupervisedConfig):
        gamma: float = setting(20.0, above=0)  # the Cauchy scale (official script's default; cross-validated)
        w_quantization: float = setting(0.1, at_least=0)  # lambda of Eq. 7 (cross-validated; the port's 0.1)
        # d's cosine is capped here (the port's guard; 1 would let log(1 + gamma/d) reach inf)
        cosine_cap: float = setting(0.99, above=0, below=1)

    def batch_loss(self, y, generator):
        c = self.config

        def loss(h, idx, step):
            s = relevance(y[idx], y[idx])
            d = cauchy_distance(h, h, c.cosine_cap)  # Eq. 6
            likelihood = cauchy_cross_entropy(d, s, c.gamma, pair_weights(s, "balanced", True))  # Eq. 8, Eq. 2
            quantization = cauchy_quantization(h, c.gamma)  # Eq. 9
            return likelihood + c.w_quantization * quantization, {  # Eq. 7
                "cauchy": likelihood,
                "quantization": quantization,
            }

        return loss


@hookimpl
def bench_methods():
    return [DCH]
