"""DHN: Zhu, Long, Wang, Cao, "Deep Hashing Network for Efficient Similarity Retrieval", AAAI 2016.

A backbone with a new K-unit layer z (the paper's fch), trained on the pairs of each batch with the pairwise
cross-entropy on inner products and a smooth quantization penalty:
    sum_ij [log(1 + exp(Theta_ij)) - s_ij Theta_ij] + lambda sum_i sum_k log cosh(|z_ik| - 1),
    Theta_ij = 1/2 <z_i, z_j>
Codes: sign(z). Unweighted pairs (HashNet added the balancing).

Departures from the paper: lambda is cross-validated in the paper and unpublished: 0.1 as the public PyTorch
port; pairs are all pairs within one batch; backbone and schedule are the shared ones of
bench.deep.SupervisedConfig (from scratch by default).
"""

from __future__ import annotations

import dataclasses

import torch

from bench.backbones import DeepHashMethod
from bench.deep import SUPERVISED_CPU_REDUCED, SupervisedConfig, log_cosh, pairwise_likelihood
from bench.hookspecs import hookimpl
from bench.method import setting
from bench.metrics import relevance


class DHN(DeepHashMethod):
    name = "dhn"
    paper = "Zhu et al., AAAI 2016"
    supervision = "pairs"
    recipes = {"cpu-reduced": SUPERVISED_CPU_REDUCED}

    @dataclasses.dataclass(frozen=True)
    class Config(SupervisedConfig):
        inner_product_scale: float = setting(0.5, above=0)  # Theta = 1/2 <z_i, z_j> (the paper)
        w_quantization: float = setting(0.1, at_least=0)  # lambda (unpublished; the port's value)

    def batch_loss(self, y, generator):
        c = self.config

        def loss(z, idx, step):
            s = relevance(y[idx], y[idx])
            mask = 1 - torch.eye(len(idx), device=z.device)  # an item paired with itself teaches nothing
            likelihood = pairwise_likelihood(z, z, s, c.inner_product_scale, mask)
            quantization = log_cosh(z.abs() - 1).sum(1).mean()
            return likelihood + c.w_quantization * quantization, {
                "likelihood": likelihood,
                "quantization": quantization,
            }

        return loss


@hookimpl
def bench_methods():
    return [DHN]
