"""UTH: Unsupervised Triplet Hashing (Huang, Xiong, Zhang, Wang, ACM MM Thematic Workshops 2017,
arXiv 1702.08798).

A backbone with a K-unit sigmoid layer F(x) trained on unsupervised triplets: an anchor image, its rotated copy
(the positive) and another random image (the negative), with three criteria (the abstract):
    max(0, margin + ||F(a) - F(p)||^2 - ||F(a) - F(n)||^2)   triplet loss: discriminative, rotation-invariant codes
  + 1/2 ||b - F(a)||^2, b = 1[F(a) > 0.5] held fixed          minimum quantization loss
  - sum_k H(mu_k), mu_k = batch mean of F_k                  maximum information entropy: balanced bits
Codes are sign(F(x) - 0.5).

Only the abstract is available: the weights, rotation range and schedule are not published, so they follow
DeepBit's release (rotations within +-10 degrees, margin 1, SGD as DeepBit's first stage). The paper fine-tunes an
ImageNet-pretrained VGG-16; offline the default trains the small CNN (bench.backbones) from scratch;
``backbone``/``weights``/``freeze_backbone`` select the paper's setup for users with the weights.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from bench.backbones import DeepHashMethod
from bench.deep import BackboneConfig, LossLog, bit_entropy, iteration_batches, random_affine, sgd_stage
from bench.hookspecs import hookimpl
from bench.method import FitContext, binarize, setting


class UTH(DeepHashMethod):
    name = "uth"
    paper = "Huang et al., ACM MM Thematic Workshops 2017"
    supervision = "none"
    activation = "sigmoid"
    smoke = {"iterations": 40}
    recipes = {"cpu-reduced": {"iterations": 5000}}  # CPU-only runs: a tenth of the solver iterations

    @dataclasses.dataclass(frozen=True)
    class Config(BackboneConfig):  # paper: VGG-16 with ImageNet weights
        freeze_backbone: bool = False
        margin: float = setting(1.0, at_least=0)  # not published: a guess (the usual unit margin)
        # the positive = the anchor rotated uniformly within +-this (0: the anchor itself)
        rotation_degrees: float = setting(10.0, at_least=0, at_most=180)
        w_triplet: float = setting(1.0, at_least=0)  # the three criteria weighted equally (not published)
        w_quantization: float = setting(1.0, at_least=0)
        w_entropy: float = setting(1.0, at_least=0)
        iterations: int = 50_000  # DeepBit's first stage: 50k iterations, lr 1e-3, x0.1 at 25k
        lr: float = setting(1e-3, above=0)
        lr_step: int = 25_000
        batch_size: int = 32
        momentum: float = setting(0.9, at_least=0, below=1)
        weight_decay: float = setting(5e-4, at_least=0)

    def fit(self, x, y=None, context=FitContext()):
        c, g = self.config, self.generator()
        self.net_ = self.network(x).train()
        opt, schedule = sgd_stage(self.net_.trainable(), c.lr, c.lr_step, c.momentum, c.weight_decay)
        log = LossLog(self.name)
        for step, idx in enumerate(iteration_batches(x.shape[0], c.batch_size, c.iterations, g, x.device), 1):
            loss, terms = self._loss(self.net_.backbone.prepare(x[idx]), g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            log.add(loss=loss, **terms)
            if step % 500 == 0 or step == c.iterations:
                log.close(step, c.iterations, iteration=step)
        self.training_ = {
            "iterations": c.iterations,
            "selection": "last iteration (fixed schedule)",
            "log": log.entries,
        }
        return self

    def _loss(self, anchor_in: torch.Tensor, generator: torch.Generator):
        """The three criteria on a batch of prepared anchor images: (loss, {term: value})."""
        c = self.config
        positive_in = random_affine(anchor_in, generator, c.rotation_degrees, 0.0)
        # The negative of each anchor: another image of the batch (a random batch of a 10-class set is another
        # image, and mostly another class).
        negative = torch.roll(torch.arange(anchor_in.shape[0], device=anchor_in.device), 1)
        f_anchor, f_positive = self.net_(anchor_in), self.net_(positive_in)
        f_negative = f_anchor[negative]
        b = (f_anchor > 0.5).float().detach()
        terms = {
            "triplet": F.relu(
                c.margin + ((f_anchor - f_positive) ** 2).sum(1) - ((f_anchor - f_negative) ** 2).sum(1)
            ).mean(),
            "quantization": 0.5 * ((b - f_anchor) ** 2).sum(1).mean(),
            "entropy": bit_entropy(f_anchor.mean(0)).sum(),
        }  # maximised: balanced bits
        loss = (
            c.w_triplet * terms["triplet"] + c.w_quantization * terms["quantization"] - c.w_entropy * terms["entropy"]
        )
        return loss, terms

    def encode(self, x):
        self.check_fitted("net_")
        return binarize(self.net_.outputs(x), 0.5)


@hookimpl
def bench_methods():
    return [UTH]
