"""DPSH: Li, Wang, Kang, "Feature Learning based Deep Supervised Hashing with Pairwise Labels", IJCAI 2016
(arXiv 1511.03855; the authors' MatConvNet release, and their group's PyTorch port jiangqy/DPSH-pytorch).

A backbone with a new linear K-unit layer u = F(x) (the paper's W^T phi(x) + v), trained on the negative
log-likelihood of the pairwise labels with the codes relaxed to u, plus a quantization term (Eq. 3):
    J = sum_ij [log(1 + exp(Theta_ij)) - s_ij Theta_ij] + eta sum_i ||b_i - u_i||^2,
    Theta_ij = 1/2 u_i^T u_j,  b_i = sign(u_i)  (the B step, held fixed in the network step),
over every pair of the training set. As in the paper's gradient and the release, a batch's items are
paired with the whole training set, whose outputs u_j are stored (updated when their batch comes, 0 before:
a pair with an unseen item gives no gradient). The pair sum of J counts each pair both ways (Theta_ij and
Theta_ji), so the batch's share of J is, divided by (batch size x n),
    2 mean_ij [log(1 + e^Theta_ij) - s_ij Theta_ij] + (eta / n) mean_i ||b_i - u_i||^2,
whose gradient is the paper's dJ/du_i / (batch x n), the release's normalisation. eta weighs the quantization
against the sum over all n pairs of an item, as in J; n is the training set's size. Codes: sign(u).
Similarity: sharing at least one label (class ids or multi-hot).

Defaults: eta = 10, the paper's value for CIFAR-10 (100 for NUS-WIDE), chosen there on a validation set; SGD
without momentum, as the releases' solvers (MatConvNet's plain update; the PyTorch port's optim.SGD): pairing
with stored outputs is a delayed feedback, which momentum turns into an oscillation of the outputs' scale that
learns nothing from scratch.

Departures from the paper: backbone and schedule are the shared ones of bench.deep.SupervisedConfig (the paper
fine-tunes the pretrained CNN-F; from scratch by default), with its crop and flip (the paper's release resizes
without augmentation).
"""

from __future__ import annotations

import dataclasses

import torch

from bench.backbones import DeepHashMethod
from bench.deep import SUPERVISED_CPU_REDUCED, SupervisedConfig, batch_objective, sign
from bench.hookspecs import hookimpl
from bench.method import setting
from bench.metrics import relevance


class DPSH(DeepHashMethod):
    name = "dpsh"
    paper = "Li et al., IJCAI 2016"
    supervision = "pairs"
    recipes = {"cpu-reduced": SUPERVISED_CPU_REDUCED}
    # the loss is averaged over batch x n pairs, so plain SGD at the shared rate moves little in a smoke fit; at 40
    # steps mAP ranged 0.28-0.46 over seeds, at 80 above 0.47
    smoke = {"iterations": 80, "batch_size": 32, "lr": 0.2}

    @dataclasses.dataclass(frozen=True)
    class Config(SupervisedConfig):
        # the quantization's weight eta (Eq. 3): the paper's CIFAR-10 value (100 on NUS-WIDE)
        eta: float = setting(10.0, at_least=0)
        inner_product_scale: float = setting(0.5, above=0)  # Theta = 1/2 u_i^T u_j (Eq. 1, 3)
        # plain SGD, as both releases: with momentum the stored outputs' delayed feedback oscillates and nothing
        # is learnt (digits, 32 bits: mAP 0.10 after 500 iterations at 0.9; 0.39 after 60 at 0)
        momentum: float = 0.0

    def batch_loss(self, y, generator):
        c = self.config
        # U: every training item's latest output (the release's U), paired with each batch
        self.outputs_ = torch.zeros(y.shape[0], self.n_bits, device=y.device)

        def loss(u, idx, step):
            self.outputs_[idx] = u.detach()  # the batch's pairs among themselves use their current outputs
            s = relevance(y[idx], y)
            # Eq. 3: pairwise likelihood on Theta = 1/2 u^T u, plus eta ||b - u||^2 with b = sign(u) fixed
            return batch_objective(u, self.outputs_, s, sign(u).detach(), c.eta, c.inner_product_scale)

        return loss


@hookimpl
def bench_methods():
    return [DPSH]
