"""Bi-half Net: Yunqiang Li, Jan van Gemert, "Deep Unsupervised Image Hashing by Maximizing Bit Entropy", AAAI
2021 (arXiv 2012.12334; official PyTorch code: liyunqianggyn/Deep-Unsupervised-Image-Hashing).

The bi-half layer turns the continuous outputs U (a batch of N items x K bits) into codes B with every bit
half-half distributed over the batch, the most informative (maximum-entropy) bits:
  forward:   for each bit k, the floor(N/2) items with the largest u_k get +1, the others -1 (the optimal
             coupling of the batch's values with the half-half distribution: it minimises the Wasserstein-1
             distance between them)
  backward:  dL/dU = dL/dB + gamma (U - B) / (N K)
             (straight-through, plus the gradient of the penalty gamma / (2NK) ||U - B||^2 with B held fixed,
             pulling U towards its codes; gamma as the paper's scaling)
The layer needs a batch; codes of new items are sign(U), as the official code encodes (a trained U is already
near half-half, which is what the layer trained it for).

What trains U (``objective``), the paper's two settings, on the protocol's vectors (pixels, or GIST):
  "similarity" (default; the paper's image-retrieval setup, the official ImageHashing/*.py): a fixed feature
             vector x (VGG-16 fc7 in the paper, the vectors here), one linear hash layer U = W x + c, and each
             batch split into halves paired item by item, i with i + N/2:
               L = mean_i (cos(b_i, b_{i+N/2}) - cos(x_i, x_{i+N/2}))^2
             the codes keep the features' cosine similarities. SGD (lr 1e-4, momentum 0.9, weight decay 5e-4),
             batch 32, 300 epochs with the rate x0.1 at epochs 120 and 240 (the CIFAR-10 scripts), gamma 6.
  "autoencoder" (the paper's MNIST auto-encoder, the official AutoEncoder/BiHalf.py; recipe ``autoencoder``):
             x -> 256 ReLU -> K -> bi-half -> 256 ReLU -> d sigmoid, trained on the binary cross-entropy
             reconstruction of x; Adam (lr 1e-3, weight decay 1e-5), batch 128, 100 epochs with the rate x0.1
             at epochs 60 and 80, gamma 1. Inputs must lie in [0, 1] (pixels).

Equation numbers are not cited: the paper's full text was not readable where this was written (only its
abstract, introduction and the official code), so the terms are named as the official code computes them.

Departures: the features are the protocol's vectors rather than VGG-16 fc7 (no pretrained weights offline; a
vectors method runs beside ITQ on pixels and GIST); batches are reshuffled index batches on the device, with a
trailing batch under half a batch dropped (``bench.deep.epoch_batches``; the bi-half ranking is noisy on tiny
batches); the auto-encoder reconstructs the [0, 1] pixels as they are, where the official MNIST script rounds
them to {0, 1} first (``binarize_targets`` restores that).
"""

from __future__ import annotations

import dataclasses
import typing

import torch
import torch.nn.functional as F
from torch import nn

from bench.deep import LossLog, batched, epoch_batches
from bench.errors import BenchError
from bench.hookspecs import hookimpl
from bench.method import FitContext, Method, binarize, setting


class _BiHalf(torch.autograd.Function):
    """The bi-half layer: half-half codes forward, straight-through plus gamma (U - B) / (N K) backward."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, gamma: float) -> torch.Tensor:
        b = half_half(u)
        ctx.save_for_backward(u, b)
        ctx.gamma = gamma
        return b

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        u, b = ctx.saved_tensors
        return grad + ctx.gamma * (u - b) / b.numel(), None


def half_half(u: torch.Tensor) -> torch.Tensor:
    """Per column of u (N, K): the floor(N/2) largest values -> +1, the rest -> -1 (ties by sort order)."""
    order = u.argsort(0, descending=True)
    ranked = torch.ones_like(u)
    ranked[u.shape[0] // 2 :] = -1.0
    return torch.empty_like(u).scatter_(0, order, ranked)


def bi_half(u: torch.Tensor, gamma: float) -> torch.Tensor:
    return _BiHalf.apply(u, gamma)


def similarity_loss(b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """mean_i (cos(b_i, b_{i+N/2}) - cos(x_i, x_{i+N/2}))^2 over the batch split into halves (the official
    ImageHashing scripts; an odd item out is left unpaired)."""
    half = b.shape[0] // 2
    code_cos = F.cosine_similarity(b[:half], b[half : 2 * half])
    feature_cos = F.cosine_similarity(x[:half], x[half : 2 * half])
    return F.mse_loss(code_cos, feature_cos)


class BiHalf(Method):
    name = "bihalf"
    paper = "Li & van Gemert, AAAI 2021"
    supervision = "none"
    input = "vectors"
    smoke = {"epochs": 8, "lr": 0.01}  # digits: 53 batches an epoch; a larger rate so 8 epochs move the layer
    recipes = {
        "cpu-reduced": {"epochs": 30, "lr_milestones": (12, 24)},  # CPU-only runs: a tenth of the schedule
        # the paper's MNIST auto-encoder (official AutoEncoder/BiHalf.py)
        "autoencoder": {
            "objective": "autoencoder",
            "gamma": 1.0,
            "optimizer": "adam",
            "lr": 1e-3,
            "weight_decay": 1e-5,
            "batch_size": 128,
            "epochs": 100,
            "lr_milestones": (60, 80),
        },
    }

    @dataclasses.dataclass(frozen=True)
    class Config:
        objective: typing.Literal["similarity", "autoencoder"] = "similarity"  # see the module docstring
        gamma: float = setting(6.0, at_least=0)  # the backward pull towards B (official image scripts: 6)
        hidden: int = 256  # the auto-encoder's hidden width, encoder and decoder (official: 256)
        binarize_targets: bool = False  # auto-encoder: reconstruct round(x), as the official MNIST script
        optimizer: typing.Literal["sgd", "adam"] = "sgd"
        lr: float = setting(1e-4, above=0)  # official CIFAR-10 / Flickr25k scripts
        momentum: float = setting(0.9, at_least=0, below=1)  # SGD only
        weight_decay: float = setting(5e-4, at_least=0)
        batch_size: int = setting(32, at_least=2)  # pairs are made inside a batch
        # the CIFAR-10 scripts (Flickr25k: 100 epochs, x0.1 at 60; MS-COCO: 150 epochs from lr 1e-3, x0.1 every 60)
        epochs: int = 300
        lr_milestones: tuple[int, ...] = (120, 240)  # epochs after which the rate is x0.1

    def fit(self, x, y=None, context=FitContext()):
        c, g = self.config, self.generator()
        if c.objective == "autoencoder" and (x.min() < 0 or x.max() > 1):
            raise BenchError(f"{self.name}: objective=autoencoder reconstructs inputs in [0, 1] (pixels), not these")
        self.encoder_, decoder = self._networks(x.shape[1])
        params = list(self.encoder_.parameters()) + (list(decoder.parameters()) if decoder is not None else [])
        opt = (
            torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
            if c.optimizer == "sgd"
            else torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        )
        schedule = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(c.lr_milestones), gamma=0.1)
        log, step = LossLog(self.name), 0
        for epoch in range(1, c.epochs + 1):
            for idx in epoch_batches(x.shape[0], c.batch_size, g, x.device):
                loss = self._loss(x[idx], decoder)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                log.add(loss=loss)
            schedule.step()
            log.close(epoch, c.epochs, epoch=epoch, iterations=step)
        self.encoder_.eval()
        self.training_ = {"epochs": c.epochs, "selection": "last epoch (fixed schedule)", "log": log.entries}
        return self

    def _networks(self, dim: int):
        """The hash function U(x) and, for the auto-encoder, the decoder of the codes (initialised from torch's
        global generator, which the runner seeds around fit)."""
        c, k = self.config, self.n_bits
        if c.objective == "similarity":
            return nn.Linear(dim, k).to(self.device), None
        encoder = nn.Sequential(nn.Linear(dim, c.hidden), nn.ReLU(), nn.Linear(c.hidden, k))
        decoder = nn.Sequential(nn.Linear(k, c.hidden), nn.ReLU(), nn.Linear(c.hidden, dim), nn.Sigmoid())
        return encoder.to(self.device), decoder.to(self.device)

    def _loss(self, x: torch.Tensor, decoder) -> torch.Tensor:
        """The objective on a batch: codes from the bi-half layer, then similarity or reconstruction."""
        b = bi_half(self.encoder_(x), self.config.gamma)
        if decoder is None:
            return similarity_loss(b, x)  # the image-retrieval setup's cosine-similarity loss
        target = x.round() if self.config.binarize_targets else x
        return F.binary_cross_entropy(decoder(b), target)  # the auto-encoder's reconstruction loss

    def encode(self, x):
        self.check_fitted("encoder_")
        with torch.no_grad():
            return binarize(batched(self.encoder_, x))


@hookimpl
def bench_methods():
    return [BiHalf]
