"""DSDH: Li, Sun, He, Tan, "Deep Supervised Discrete Hashing", NeurIPS 2017 (arXiv 1705.10999; the authors'
MatConvNet release liqi-casia/DSDH-HashingCode, which forks DPSH's).

A backbone with a new linear K-unit layer u = F(x), discrete codes B in {-1, +1}^(n x K) of the training set
and a linear classifier W (K x C) on the codes, for labels Y (one-hot class ids or multi-hot rows), minimising
(Eq. 6, with the l2 classification loss)
    J = sum_ij [log(1 + exp(Theta_ij)) - s_ij Theta_ij] + mu sum_i ||y_i - W^T b_i||^2 + nu ||W||_F^2
        + eta sum_i ||b_i - u_i||^2,          Theta_ij = 1/2 u_i^T u_j,
by alternating, at every iteration:
  - the network step, on the batch: the likelihood of the batch's pairs with every training item (the stored
    outputs U of the others, as in DPSH) and eta ||b_i - u_i||^2 with B fixed; the batch's share of J divided by
    (batch x n) (``bench.deep.batch_objective``);
  - the W step, in closed form: W = (B^T B + nu/mu I)^(-1) B^T Y (a ridge regression of the labels on the codes);
  - the B step, bit by bit by discrete cyclic coordinate descent: with P = Y W^T + (eta/mu) U, B minimises
    ||B W||^2 - 2 tr(P^T B), and for bit k, with B', W' the others, B_k = sign(P_k - B' W' w_k) (w_k the k-th
    row of W), sweeping the bits until none changes (at most ``dcc_sweeps`` sweeps).
The iteration runs W, B, then the network (each step's outputs first refresh U). U starts as the initial network's
outputs on the training set and B = sign(U). Codes of new images: sign(F(x)).

Defaults (the release's, setup.m and its ridge call): mu = 1, nu = 0.1 (its ridge nu/mu = 0.1), eta = 55, at
most 10 DCC sweeps; SGD without momentum, as the release's solver (see baselines.dpsh: with momentum the stored
outputs oscillate).

Departures from the paper: ``update_scope`` = "training_set" (default) runs the W and B steps over the whole
training set, as the paper writes them; "batch" restricts both to the batch's items, as the release does (it
also recomputes W from sign(U) of the batch and starts DCC from zeros; here from the stored codes). The initial
U, B come from a forward pass of the initial network (the release starts U at 0). Backbone and schedule are the
shared ones of bench.deep.SupervisedConfig (the paper fine-tunes the pretrained CNN-F; from scratch by default).
"""

from __future__ import annotations

import dataclasses
import typing

import torch

from bench.backbones import DeepHashMethod
from bench.deep import SUPERVISED_CPU_REDUCED, SupervisedConfig, batch_objective, sign, train_hash_network
from bench.hookspecs import hookimpl
from bench.method import FitContext, label_matrix, setting
from bench.metrics import relevance


def w_step(codes: torch.Tensor, labels: torch.Tensor, ridge: float) -> torch.Tensor:
    """argmin_W ||Y - B W||^2 + ridge ||W||^2 = (B^T B + ridge I)^(-1) B^T Y: (K, C)."""
    k = codes.shape[1]
    gram = codes.T @ codes + ridge * torch.eye(k, device=codes.device, dtype=codes.dtype)
    return torch.linalg.solve(gram, codes.T @ labels)


def b_step(codes: torch.Tensor, target: torch.Tensor, w: torch.Tensor, sweeps: int) -> tuple[torch.Tensor, int]:
    """Discrete cyclic coordinate descent on min_B ||B W||^2 - 2 tr(P^T B) over B in {-1, +1}^(n x K), from
    ``codes``, ``target`` = P: each bit in turn set to its exact minimiser given the others, until a sweep changes
    nothing (at most ``sweeps``). Returns (the new codes, the sweeps run)."""
    b = codes.clone()
    gram = w @ w.T  # (W W^T)_kl = w_k . w_l
    done = 0
    while done < sweeps:
        before = b.clone()
        for k in range(b.shape[1]):
            # B' W' w_k = B (W w_k) - b_k (w_k . w_k): every bit's contribution but bit k's own
            others = b @ gram[:, k] - b[:, k] * gram[k, k]
            b[:, k] = sign(target[:, k] - others)
        done += 1
        if torch.equal(b, before):
            break
    return b, done


class DSDH(DeepHashMethod):
    name = "dsdh"
    paper = "Li et al., NeurIPS 2017"
    supervision = "labels"  # a classifier of the labels on the codes, and pairs from the labels
    recipes = {"cpu-reduced": SUPERVISED_CPU_REDUCED}
    # eta weighs ||b - u||^2 against an item's n pairs; on the 1,697 digits the paper's 55 holds the outputs to
    # the initial codes for long, so the smoke fit (80 steps) weighs it less and steps further
    smoke = {"iterations": 80, "batch_size": 32, "lr": 0.1, "eta": 10.0}

    @dataclasses.dataclass(frozen=True)
    class Config(SupervisedConfig):
        mu: float = setting(1.0, above=0)  # the classification term's weight (release: 1)
        nu: float = setting(0.1, above=0)  # ||W||_F^2's weight (release: the ridge nu/mu = 0.1)
        eta: float = setting(55.0, at_least=0)  # ||b - u||^2's weight (release: setup.m, eta = 55)
        inner_product_scale: float = setting(0.5, above=0)  # Theta = 1/2 u_i^T u_j
        dcc_sweeps: int = 10  # DCC sweeps over the bits at most (the release's 10, stopping once none changes)
        # plain SGD, as the release (MatConvNet's update) and DPSH: momentum and the stored outputs oscillate
        momentum: float = 0.0
        # the W and B steps over the whole training set (the paper) or the batch's items only (the release)
        update_scope: typing.Literal["training_set", "batch"] = "training_set"

    def fit(self, x, y=None, context=FitContext()):
        y = self.check_labels(y)
        g = self.generator()
        self.net_ = self.network(x)
        self.outputs_ = self.net_.outputs(x)  # U: the initial network's outputs, refreshed batch by batch
        self.codes_ = sign(self.outputs_)  # B (W, self.classifier_, comes with each iteration's W step)
        self.training_ = train_hash_network(self.name, self.net_, x, self.config, g, self.batch_loss(y, g))
        return self

    def batch_loss(self, y, generator):
        c, labels = self.config, label_matrix(y)

        def loss(u, idx, step):
            self.outputs_[idx] = u.detach()
            rows = idx if c.update_scope == "batch" else slice(None)
            # the W step, closed form (the minimiser of mu ||Y - B W||^2 + nu ||W||^2)
            self.classifier_ = w_step(self.codes_[rows], labels[rows], c.nu / c.mu)
            # the B step by DCC: P = Y W^T + (eta / mu) U
            target = labels[rows] @ self.classifier_.T + c.eta / c.mu * self.outputs_[rows]
            self.codes_[rows], sweeps = b_step(self.codes_[rows], target, self.classifier_, c.dcc_sweeps)
            # the network step (Eq. 6's terms in u): pairwise likelihood with every training item + eta ||b - u||^2
            s = relevance(y[idx], y)
            total, terms = batch_objective(u, self.outputs_, s, self.codes_[idx], c.eta, c.inner_product_scale)
            # mu ||y_i - W^T b_i||^2 of the batch (Eq. 6's classification term; no gradient to the network)
            classification = ((labels[idx] - self.codes_[idx] @ self.classifier_) ** 2).sum(1).mean()
            return total, {**terms, "classification": classification, "dcc_sweeps": sweeps}

        return loss


@hookimpl
def bench_methods():
    return [DSDH]
