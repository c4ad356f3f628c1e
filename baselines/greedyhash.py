"""GreedyHash: Su, Zhang, Han, Tian, "Greedy Hash: Towards Fast Optimization for Accurate Hash Coding in CNN",
NeurIPS 2018 (official code: ssppp/GreedyHash, PyTorch).

The hash layer keeps the codes discrete while training: forward b = sgn(h), backward dL/dh = dL/db (the gradient
passed through unchanged, Sec. 3.2), so each step moves h greedily towards the best discrete solution; a penalty
keeps h near the codes, alpha || |h| - 1 ||_3^3 = alpha ||h - sgn(h)||_3^3 (the paper's p = 3), averaged over bits
and items as the release does. Codes: sgn(h).

Two methods, one loss L(B) each (Sec. 4):
  ``greedyhash`` (supervised, images): a backbone with a new K-unit layer h, and a linear classifier W (no bias)
    on the codes, L(B) = softmax cross-entropy of W b against the class ids. The paper has single-label data only;
    for multi-hot labels (NUS-WIDE, COCO) ``multi_label="bce"`` (default) takes a sigmoid binary cross-entropy per
    class (the FIRe re-implementation's choice), ``"first_label"`` the softmax on each item's first label (the
    DeepHash-pytorch port's argmax of the multi-hot row).
  ``greedyhash-unsupervised`` (vectors: fixed features, pixels or GIST; the paper fc7 features of a frozen VGG-16):
    one linear layer h = W x + c trained to keep the features' cosine similarities in the codes,
    L(B) = mean over pairs (i, j) of the batch of (cos(x_i, x_j) - cos(b_i, b_j))^2.

Defaults: alpha = 0.1 (the release's scripts). Supervised: the shared backbone and schedule of
bench.deep.SupervisedConfig (from scratch by default; the release fine-tunes an ImageNet AlexNet with SGD lr 1e-3,
batch 32, 50 epochs, the rate x0.1 after 30, and trains the classifier with it). Unsupervised: the release's
SGD (momentum 0.9, weight decay 5e-4), batch 32, 60 epochs.
Departures, each a Config switch: ``pairs="all"`` takes every pair of a batch, ``"halves"`` the release's pairs
(the batch's first half against its second half). The release's layer learns on VGG fc7 features; raw pixels and
GIST are another input, so by default (``normalise``) they are centred with the training mean and divided by the
training set's root-mean-square norm. Uncentred digits pixels are all alike in cosine (median 0.69, every pair
above 0.25) and their codes drift towards one pattern: mAP 0.30-0.36 at 32 bits on digits at the rates tried,
against 0.61-0.66 centred. The scale, which no cosine sees, sets the step of the linear layer, so one learning
rate fits pixels and GIST alike: ``lr`` 0.1 for these unit-scale inputs (the release's 1e-4 is for fc7 features,
far larger); ``normalise=False`` takes the vectors as given.
"""

from __future__ import annotations

import dataclasses
import typing

import torch
import torch.nn.functional as F
from torch import nn

from bench.backbones import DeepHashMethod
from bench.deep import SUPERVISED_CPU_REDUCED, LossLog, SupervisedConfig, batched, epoch_batches
from bench.hookspecs import hookimpl
from bench.method import FitContext, Method, binarize, setting


class StraightThroughSign(torch.autograd.Function):
    """GreedyHash's hash layer: forward sgn(h) (sgn(0) = +1, the harness's convention), backward the identity."""

    @staticmethod
    def forward(ctx, h):
        return torch.where(h >= 0, torch.ones_like(h), -torch.ones_like(h))

    @staticmethod
    def backward(ctx, grad):
        return grad


def greedy_sign(h: torch.Tensor) -> torch.Tensor:
    return StraightThroughSign.apply(h)


def code_penalty(h: torch.Tensor, power: float = 3.0) -> torch.Tensor:
    """|| |h| - 1 ||_p^p averaged over bits and items (Sec. 3.2, p = 3): how far h lies from its codes."""
    return ((h.abs() - 1).abs() ** power).mean()


def similarity_loss(features: torch.Tensor, b: torch.Tensor, pairs: str = "all") -> torch.Tensor:
    """The unsupervised L(B): (cos(x_i, x_j) - cos(b_i, b_j))^2 averaged over the pairs of a batch, every pair
    i != j ("all") or the first half against the second ("halves", the release)."""
    if pairs == "halves":
        half = len(b) // 2
        target = F.cosine_similarity(features[:half], features[half : 2 * half])
        return ((target - F.cosine_similarity(b[:half], b[half : 2 * half])) ** 2).mean()
    target = F.normalize(features, dim=1) @ F.normalize(features, dim=1).T
    codes = F.normalize(b, dim=1) @ F.normalize(b, dim=1).T
    off_diagonal = ~torch.eye(len(b), dtype=torch.bool, device=b.device)
    return ((target - codes)[off_diagonal] ** 2).mean()


def input_normalisation(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The training mean and the root-mean-square norm of the centred training vectors."""
    mean = x.mean(0)
    return mean, max(float(((x - mean) ** 2).sum(1).mean().sqrt()), 1e-12)


class CodeClassifier(nn.Module):
    """The supervised loss of a batch as a module, so the harness trains W with the new layer: cross-entropy of
    a linear classifier on the codes sgn(h) plus alpha times the code penalty."""

    def __init__(self, y: torch.Tensor, n_bits: int, config):
        super().__init__()
        self.y, self.config = y, config
        n_classes = y.shape[1] if y.ndim == 2 else int(y.max()) + 1
        self.classifier = nn.Linear(n_bits, n_classes, bias=False)

    def classification(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y.ndim == 1:
            return F.cross_entropy(logits, y)
        if self.config.multi_label == "bce":
            return F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))
        return F.cross_entropy(logits, y.argmax(1))  # the port: the first label of each row

    def forward(self, h, idx, step):
        b = greedy_sign(h)
        classification = self.classification(self.classifier(b), self.y[idx])  # L(B), Sec. 4.1
        penalty = code_penalty(h, self.config.penalty_power)
        return classification + self.config.alpha * penalty, {"classification": classification, "penalty": penalty}


class GreedyHash(DeepHashMethod):
    name = "greedyhash"
    paper = "Su et al., NeurIPS 2018"
    supervision = "labels"
    recipes = {"cpu-reduced": SUPERVISED_CPU_REDUCED}

    @dataclasses.dataclass(frozen=True)
    class Config(SupervisedConfig):
        alpha: float = setting(0.1, at_least=0)  # the penalty's weight (the release's 0.1)
        penalty_power: float = setting(3.0, above=0)  # p of || |h| - 1 ||_p^p (the paper: 3)
        # multi-hot labels: "bce", a sigmoid cross-entropy per class; "first_label", the port's softmax on argmax
        multi_label: typing.Literal["bce", "first_label"] = "bce"

    def batch_loss(self, y, generator):
        return CodeClassifier(y, self.n_bits, self.config).to(self.device)


class GreedyHashUnsupervised(Method):
    name = "greedyhash-unsupervised"
    paper = "Su et al., NeurIPS 2018"
    supervision = "none"
    input = "vectors"
    smoke = {"epochs": 8}  # digits: 53 batches of 32 per epoch

    @dataclasses.dataclass(frozen=True)
    class Config:
        alpha: float = setting(0.1, at_least=0)  # the penalty's weight (the release's 0.1)
        penalty_power: float = setting(3.0, above=0)  # p (the paper: 3)
        # "all": every pair of a batch; "halves": the release's first half against second half
        pairs: typing.Literal["all", "halves"] = "all"
        # centre the inputs and scale them to unit root-mean-square norm (see the module docstring); False: as given
        normalise: bool = True
        epochs: int = 60  # the release (300 at 16 bits)
        batch_size: int = 32
        lr: float = setting(0.1, above=0)  # for normalised inputs (the release: 1e-4 on VGG fc7 features)
        momentum: float = setting(0.9, at_least=0, below=1)
        weight_decay: float = setting(5e-4, at_least=0)

    def fit(self, x, y=None, context=FitContext()):
        c, g = self.config, self.generator()
        self.mean_, self.scale_ = input_normalisation(x) if c.normalise else (torch.zeros_like(x[0]), 1.0)
        x = (x - self.mean_) / self.scale_
        self.layer_ = nn.Linear(x.shape[1], self.n_bits).to(self.device)
        opt = torch.optim.SGD(self.layer_.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        log, step = LossLog(self.name), 0
        for epoch in range(1, c.epochs + 1):
            for idx in epoch_batches(x.shape[0], c.batch_size, g, x.device):
                loss, terms = self._loss(x[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                log.add(loss=loss, **terms)
            log.close(step, c.epochs, epoch=epoch)
        self.training_ = {"epochs": c.epochs, "selection": "last epoch (fixed schedule)", "log": log.entries}
        return self

    def _loss(self, features):
        c = self.config
        h = self.layer_(features)
        similarity = similarity_loss(features, greedy_sign(h), c.pairs)  # L(B), Sec. 4.2
        penalty = code_penalty(h, c.penalty_power)
        return similarity + c.alpha * penalty, {"similarity": similarity, "penalty": penalty}

    def encode(self, x):
        self.check_fitted("layer_")
        return binarize(batched(self.layer_, (x - self.mean_) / self.scale_))


@hookimpl
def bench_methods():
    return [GreedyHash, GreedyHashUnsupervised]
