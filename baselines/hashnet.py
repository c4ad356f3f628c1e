"""HashNet: Cao, Long, Wang, Yu, "HashNet: Deep Learning to Hash by Continuation", ICCV 2017 (official code:
thuml/HashNet, Caffe and PyTorch).

A backbone with a new K-unit layer z, squashed by tanh(beta z), trained on the pairs of each batch with the
weighted pairwise likelihood
    sum_ij w_ij [log(1 + exp(alpha <h_i, h_j>)) - s_ij alpha <h_i, h_j>],  h = tanh(beta z), alpha = 10 / K,
with w_ij = |S|/|S1| for similar and |S|/|S0| for dissimilar pairs (the paper's balancing; ``bench.deep
.pair_weights``). Continuation: beta = (1 + 0.005 t)^0.5, updated every 200 iterations (the release's
ScaleTanH layer), so tanh(beta z) approaches sign(z). Codes: sign(z).

Departures from the paper: pairs are all pairs within one batch (the release pairs two independently shuffled
batches); the class_num positive weight of the release is replaced by the paper's balanced weights; backbone and
schedule are the shared ones of bench.deep.SupervisedConfig (from scratch by default).
"""

from __future__ import annotations

import dataclasses
import typing

import torch

from bench.backbones import DeepHashMethod
from bench.deep import SUPERVISED_CPU_REDUCED, SupervisedConfig, pair_weights, pairwise_likelihood
from bench.hookspecs import hookimpl
from bench.method import setting
from bench.metrics import relevance


class HashNet(DeepHashMethod):
    name = "hashnet"
    paper = "Cao et al., ICCV 2017"
    supervision = "pairs"
    recipes = {"cpu-reduced": SUPERVISED_CPU_REDUCED}

    @dataclasses.dataclass(frozen=True)
    class Config(SupervisedConfig):
        # alpha = alpha_bits / K (the release's sigmoid_param "10 / code length")
        alpha_bits: float = setting(10.0, above=0)
        # continuation: beta = (1 + gamma t)^power every beta_step iterations (gamma or power 0: beta stays 1)
        beta_gamma: float = setting(0.005, at_least=0)
        beta_power: float = setting(0.5, at_least=0)
        beta_step: int = 200
        # the weight of dissimilar pairs: "balanced", |S|/|S0| (the paper); "one", the release's weight 1
        dissimilar_weight: typing.Literal["balanced", "one"] = "balanced"

    def batch_loss(self, y, generator):
        c, alpha = self.config, self.config.alpha_bits / self.n_bits

        def loss(z, idx, step):
            beta = (1 + c.beta_gamma * (step // c.beta_step) * c.beta_step) ** c.beta_power  # continuation
            h = torch.tanh(beta * z)
            s = relevance(y[idx], y[idx])
            return pairwise_likelihood(h, h, s, alpha, pair_weights(s, c.dissimilar_weight, True)), {}

        return loss


@hookimpl
def bench_methods():
    return [HashNet]
