"""OrthoHash: Hoe, Ng, Zhang, Chan, Song, Xiang, "One Loss for All: Deep Hashing with a Single Cosine Similarity
based Learning Objective", NeurIPS 2021 (official code: kamwoh/orthohash, PyTorch).

Every class c gets a fixed binary codeword o_c in {-1, +1}^K (the codebook O, near-orthogonal: random bits are
nearly orthogonal for large K). The network's continuous codes v (backbone, a new K-unit layer without bias, then
batch normalisation, which centres each bit over the batch and so balances it) are classified by their scaled
cosine similarity to the codewords, with an additive margin on the item's own class, and one cross-entropy:
    L = -log( exp(s (cos(v, o_y) - m)) / (exp(s (cos(v, o_y) - m)) + sum_{c != y} exp(s cos(v, o_c))) )
(the paper's single objective, Sec. 3.2; maximising cos(v, o_y) also bounds the quantization error).
Multi-hot labels (the paper's label smoothing): the margin on every label of the item and a label-smoothed target,
each of its k labels 1/k (the cross-entropy against y / |y|); an item without labels adds nothing.
``margin_type="arc"`` puts the margin on the angle, cos(theta_y + m), as the code's option. Codes: sign(v).

Defaults: s = 8, m = 0.2, a Bernoulli codebook (each bit +-1 with probability 1/2, the code's default "B";
``codebook="csq"`` takes CSQ's Hadamard/Bernoulli hash centres, ``bench.centres.hash_centres``) and no
quantization term (``w_quantization`` 0, the code's default; its option 1 - cos(v, sign(v)), sign held fixed).
Departures: the official code trains with Adam (lr 1e-4, the backbone at a tenth) on a pretrained AlexNet; here the
backbone and schedule are the shared ones of bench.deep.SupervisedConfig (SGD, from scratch by default).
"""

from __future__ import annotations

import dataclasses
import typing

import torch
import torch.nn.functional as F
from torch import nn

from bench.backbones import DeepHashMethod
from bench.centres import bernoulli_centres, centres_record, hash_centres, n_classes
from bench.deep import SUPERVISED_CPU_REDUCED, SupervisedConfig, sign
from bench.hookspecs import hookimpl
from bench.method import FitContext, setting


def cosine_logits(v: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """cos(v_i, o_c) for every item and codeword: (n, C)."""
    return F.normalize(v, dim=1) @ F.normalize(codebook, dim=1).T


def margin_logits(cosine: torch.Tensor, positives: torch.Tensor, s: float, m: float, kind: str = "cos"):
    """s (cos - m) on the positive classes (``positives`` (n, C) 0/1) and s cos elsewhere; "arc": s cos(theta + m)
    on the positives."""
    if kind == "arc":
        theta = torch.acos(cosine.clamp(-1 + 1e-6, 1 - 1e-6))
        return s * torch.where(positives > 0, torch.cos(theta + m), cosine)
    return s * (cosine - m * positives)


def orthohash_loss(v, y, codebook, s: float, m: float, kind: str = "cos") -> torch.Tensor:
    """The cross-entropy of the margin cosine logits: against the class ids, or for multi-hot labels against the
    label-smoothed target y / |y| (items without labels left out)."""
    cosine = cosine_logits(v, codebook)
    if y.ndim == 1:
        positives = F.one_hot(y, codebook.shape[0]).to(v.dtype)
        return F.cross_entropy(margin_logits(cosine, positives, s, m, kind), y)
    positives = y.to(v.dtype)
    count = positives.sum(1)
    log_p = F.log_softmax(margin_logits(cosine, positives, s, m, kind), dim=1)
    per_item = -(positives * log_p).sum(1) / count.clamp(min=1)
    return per_item[count > 0].sum() / (count > 0).sum().clamp(min=1)


def cosine_quantization(v: torch.Tensor) -> torch.Tensor:
    """1 - cos(v, sign(v)) averaged over the items, sign held fixed (the code's "cs" quantization)."""
    return (1 - F.cosine_similarity(v, sign(v).detach(), dim=1)).mean()


class OrthoHash(DeepHashMethod):
    name = "orthohash"
    paper = "Hoe et al., NeurIPS 2021"
    supervision = "labels"  # pointwise: one codeword per class
    recipes = {"cpu-reduced": SUPERVISED_CPU_REDUCED}

    @dataclasses.dataclass(frozen=True)
    class Config(SupervisedConfig):
        scale: float = setting(8.0, above=0)  # s
        margin: float = setting(0.2, at_least=0)  # m
        margin_type: typing.Literal["cos", "arc"] = "cos"  # on the cosine (the default) or on the angle
        codebook: typing.Literal["bernoulli", "csq"] = "bernoulli"  # the code's "B"; or CSQ's hash centres
        w_quantization: float = setting(0.0, at_least=0)  # the code's optional term (default 0: one loss)

    def network(self, x):
        """F with the new layer followed by batch normalisation (the paper's bit balancing)."""
        net = super().network(x)
        net.layer = nn.Sequential(nn.Linear(net.backbone.dim, self.n_bits, bias=False), nn.BatchNorm1d(self.n_bits)).to(
            self.device
        )
        return net

    def batch_loss(self, y, generator):
        c = self.config
        make = hash_centres if c.codebook == "csq" else bernoulli_centres
        self.codebook_ = make(n_classes(y), self.n_bits, generator)
        codebook = self.codebook_.codes.to(y.device)

        def loss(v, idx, step):
            classification = orthohash_loss(v, y[idx], codebook, c.scale, c.margin, c.margin_type)
            if c.w_quantization == 0:
                return classification, {}
            quantized = cosine_quantization(v)
            return classification + c.w_quantization * quantized, {
                "classification": classification,
                "quantization": quantized,
            }

        return loss

    def fit(self, x, y=None, context=FitContext()):
        super().fit(x, y, context)
        self.training_["codebook"] = centres_record(self.codebook_)
        return self


@hookimpl
def bench_methods():
    return [OrthoHash]
