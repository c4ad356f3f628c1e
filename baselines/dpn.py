"""DPN: Fan, Ng, Ju, Zhang, Chan, "Deep Polarized Network for Supervised Learning of Accurate Binary Hashing
Codes", IJCAI 2020 (the authors' re-implementation: kamwoh/DPN, also in CISiPLab/cisip-FIRe).

Every class gets a target code t in {-1, +1}^K, fixed before training; the network's outputs v (backbone + a new
K-unit layer) are pushed to the far side of a margin m from zero, on the side of the item's target, bit by bit,
with the hinge-like polarization loss
    L_P = sum_k max(m - v_k t_k, 0)       (the polarization loss, Sec. 2; summed over bits, averaged over items)
which bounds the pairwise Hamming-distance losses of the same labels from above (the paper's theorem), so no
pairs are formed. Codes: sign(v).

Targets (``targets``): "bernoulli", each bit of each class drawn with probability 1/2 (the paper's random
assignment, which it shows suffices); "csq", CSQ's hash centres (Hadamard rows, else Bernoulli centres kept
apart; ``bench.centres.hash_centres``). Multi-hot labels (``multi_label``): "per_label" sums the polarization loss
against each of the item's labels' targets (the authors' re-implementation); "centroid" polarises towards the
sign of the sum of its labels' targets, ties at random (CSQ's rule, the DeepHash-pytorch port's).
Defaults: m = 1 (the authors' default); ``w_regularization`` 0 (the re-implementations offer lambda mean(v^2): the
FIRe one 0.1, the DPN one 0 with 1e-3 as a tip). Not implemented: the adaptive update of the targets from the
trained codes (DPN-A) and the ternary codes of outputs inside the margin (DPN-T), which the harness's {-1, +1}
codes cannot hold. Backbone and schedule are the shared ones of bench.deep.SupervisedConfig (from scratch by
default; the paper fine-tunes AlexNet/ResNet).
"""

from __future__ import annotations

import dataclasses
import typing

import torch

from bench.backbones import DeepHashMethod
from bench.centres import Centres, bernoulli_centres, centre_targets, centres_record, hash_centres, n_classes
from bench.deep import SUPERVISED_CPU_REDUCED, SupervisedConfig
from bench.hookspecs import hookimpl
from bench.method import FitContext, setting


def polarization(v: torch.Tensor, targets: torch.Tensor, margin: float) -> torch.Tensor:
    """sum_k max(m - v_k t_k, 0) per item, averaged over the items: v (n, K), targets (n, K) in {-1, +1}."""
    return torch.relu(margin - v * targets).sum(1).mean()


def polarization_per_label(v: torch.Tensor, y: torch.Tensor, codes: torch.Tensor, margin: float) -> torch.Tensor:
    """Multi-hot labels y (n, c): the polarization loss against each of the item's labels' codes (c, K), summed
    over its labels, averaged over the items."""
    per_class = torch.relu(margin - v[:, None, :] * codes[None]).sum(2)  # (n, c)
    return (per_class * y.to(v.dtype)).sum(1).mean()


class DPN(DeepHashMethod):
    name = "dpn"
    paper = "Fan et al., IJCAI 2020"
    supervision = "labels"  # pointwise: one target code per class
    recipes = {"cpu-reduced": SUPERVISED_CPU_REDUCED}

    @dataclasses.dataclass(frozen=True)
    class Config(SupervisedConfig):
        margin: float = setting(1.0, at_least=0)  # m (the authors' default)
        # "bernoulli": random bits per class (the paper); "csq": CSQ's hash centres
        targets: typing.Literal["bernoulli", "csq"] = "bernoulli"
        # multi-hot labels: "per_label" (the authors' re-implementation) or "centroid" (CSQ's, the port's)
        multi_label: typing.Literal["per_label", "centroid"] = "per_label"
        w_regularization: float = setting(0.0, at_least=0)  # lambda of mean(v^2) (the re-implementations' option)

    def class_codes(self, y, generator) -> Centres:
        if self.config.targets == "csq":
            return hash_centres(n_classes(y), self.n_bits, generator)
        return bernoulli_centres(n_classes(y), self.n_bits, generator)

    def batch_loss(self, y, generator):
        c = self.config
        self.centres_ = self.class_codes(y, generator)
        codes = self.centres_.codes.to(y.device)
        per_label = y.ndim == 2 and c.multi_label == "per_label"
        targets = None if per_label else centre_targets(y, codes, generator)

        def loss(v, idx, step):
            if per_label:
                polarized = polarization_per_label(v, y[idx], codes, c.margin)
            else:
                polarized = polarization(v, targets[idx], c.margin)
            regularization = (v**2).mean()
            return polarized + c.w_regularization * regularization, {
                "polarization": polarized,
                "regularization": regularization,
            }

        return loss

    def fit(self, x, y=None, context=FitContext()):
        super().fit(x, y, context)
        self.training_["targets"] = centres_record(self.centres_)
        return self


@hookimpl
def bench_methods():
    return [DPN]
