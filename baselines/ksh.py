"""KSH: Supervised Hashing with Kernels (Liu, Wang, Ji, Jiang & Chang, CVPR 2012), as the authors' demo.

Kernel features: k(x) = exp(-||x - a||^2 / (2 sigma)) on n_anchors random training points, sigma = the mean
squared distance to the anchors, centred by the training mean. On a labelled subset of n_labelled points with
S in {-1,+1} (+1: share a label), fit codes whose inner products reproduce n_bits * S, greedily one bit at a
time: bit r minimises -y^T R y with y = sgn(K a) and residual R = n_bits S - sum of the previous y y^T.
Each bit starts from the spectral relaxation (top generalised eigenvector of (K^T R K, K^T K), scaled so that
a^T K^T K a = l), is refined on the smooth surrogate y = 2 sigmoid(K a) - 1 by accelerated gradient descent with
backtracking (at most ``max_iter`` steps), and the refined a is kept only if its binary objective is better.
Codes: sgn(k(x)^T A).
"""

import dataclasses

import torch

from baselines._kernel import pick_anchors, rbf
from bench.deep import sign
from bench.hookspecs import hookimpl
from bench.method import FitContext, Method, binarize, setting
from bench.metrics import relevance


def _smooth_cost(k_l: torch.Tensor, residual: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    y = 2 * torch.sigmoid(k_l @ a) - 1
    return -(y @ residual @ y)


def refine(k_l, residual, a, max_iter: int, tol: float):
    """Accelerated (Nesterov) gradient descent with backtracking on the smooth cost, as OptProjectionFast."""
    n_labelled = k_l.shape[0]
    step, prev, current = 1.0, a.clone(), a.clone()
    cost = float(_smooth_cost(k_l, residual, a))
    for t in range(1, max_iter + 1):
        probe = (current + (t - 2) / (t + 1) * (current - prev)).requires_grad_(True)
        f_probe = _smooth_cost(k_l, residual, probe)
        (grad,) = torch.autograd.grad(f_probe, probe)
        probe, f_probe = probe.detach(), float(f_probe.detach())
        while True:  # backtracking: halve the step until the quadratic upper bound holds
            candidate = probe - step * grad
            f_candidate = float(_smooth_cost(k_l, residual, candidate))
            if f_candidate <= f_probe - 0.5 * step * float(grad @ grad) or step < 1e-12:
                break
            step *= 0.5
        prev, current = current, candidate
        if abs(f_candidate - cost) / n_labelled <= tol:
            break
        cost = f_candidate
    return current


class KSH(Method):
    name = "ksh"
    paper = "Liu et al., CVPR 2012"
    supervision = "labels"
    input = "vectors"
    smoke = {"n_anchors": 100, "n_labelled": 300, "max_iter": 20}

    @dataclasses.dataclass(frozen=True)
    class Config:
        n_anchors: int = 300  # the demo's m = 300 anchors
        n_labelled: int = 2000  # the demo's l = 2,000 labelled points (S is l x l)
        max_iter: int = 500  # accelerated-gradient steps per bit (OptProjectionFast)
        tol: float = setting(1e-2, at_least=0)  # stop when |change of cost| / l falls below this (0: max_iter)

    def _kernel(self, x):
        return rbf(x, self.anchors_, 2 * self.width_) - self.kernel_mean_

    def fit(self, x, y=None, context=FitContext()):
        self.check_labels(y)
        g = self.generator()
        c = self.config
        self.anchors_ = pick_anchors(x, c.n_anchors, g)
        self.width_ = float(torch.cdist(x.to(torch.float64), self.anchors_).pow(2).mean())
        self.kernel_mean_ = 0.0
        features = self._kernel(x)
        self.kernel_mean_ = features.mean(0, keepdim=True)
        labelled = torch.randperm(x.shape[0], generator=g)[: c.n_labelled].to(x.device)
        k_l = features[labelled] - self.kernel_mean_
        n_labelled = k_l.shape[0]
        residual = self.n_bits * (2 * relevance(y[labelled], y[labelled]).to(torch.float64) - 1)
        gram = k_l.T @ k_l + 1e-6 * torch.eye(k_l.shape[1], dtype=torch.float64, device=x.device)
        chol = torch.linalg.cholesky(gram)
        projections = []
        for _ in range(self.n_bits):
            m = k_l.T @ residual @ k_l
            whitened = torch.linalg.solve_triangular(
                chol, torch.linalg.solve_triangular(chol, (m + m.T) / 2, upper=False).T, upper=False
            )
            _, vectors = torch.linalg.eigh((whitened + whitened.T) / 2)
            a = torch.linalg.solve_triangular(chol.T, vectors[:, -1:], upper=True)[:, 0]
            a = a * (n_labelled / (a @ gram @ a)).sqrt()
            spectral = sign(k_l @ a).to(torch.float64)
            refined_a = refine(k_l, residual, a, c.max_iter, c.tol)
            refined = sign(k_l @ refined_a).to(torch.float64)
            if refined @ residual @ refined > spectral @ residual @ spectral:
                a, spectral = refined_a, refined
            projections.append(a)
            residual = residual - torch.outer(spectral, spectral)
        self.projection_ = torch.stack(projections, 1)
        return self

    def encode(self, x):
        self.check_fitted("projection_")
        return binarize(self._kernel(x) @ self.projection_)


@hookimpl
def bench_methods():
    return [KSH]
