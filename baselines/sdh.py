"""SDH: Supervised Discrete Hashing (Shen, Shen, Liu & Shen, CVPR 2015), as the authors' SDH.m and demo.

Features phi(x): RBF on n_anchors random training points, width 2 sigma^2 (sigma = 0.4 "for normalized data":
rows are L2-normalised first), plus a constant 1. With labels Y (one-hot or multi-hot) solve
  min ||Y - B W||^2 + lambda ||W||^2 + nu ||B - phi(X) P||^2,  B in {-1,+1}^(n x n_bits)
by alternating: W = ridge(B -> Y, lambda) (G-step); P = ridge(phi(X) -> B, lambda_f) (F-step); B by discrete
cyclic coordinate descent, one bit column at a time, B_k = sgn(Q_k - B_{-k} W_{-k} W_k^T) with
Q = nu phi(X) P + Y W^T (B-step). Codes: sgn(phi(x) P). Starts from random codes.
"""

import dataclasses

import torch

from baselines._kernel import pick_anchors, rbf
from bench.deep import sign
from bench.hookspecs import hookimpl
from bench.method import FitContext, Method, binarize, label_matrix, setting


def ridge(a: torch.Tensor, b: torch.Tensor, lam: float) -> torch.Tensor:
    """argmin_W ||b - a W||^2 + lam ||W||^2."""
    eye = torch.eye(a.shape[1], dtype=a.dtype, device=a.device)
    return torch.linalg.solve(a.T @ a + lam * eye, a.T @ b)


class SDH(Method):
    name = "sdh"
    paper = "Shen et al., CVPR 2015"
    supervision = "labels"
    input = "vectors"
    smoke = {"n_anchors": 100, "outer_iter": 2}

    @dataclasses.dataclass(frozen=True)
    class Config:
        n_anchors: int = 1000  # the demo's 1,000 random anchors
        sigma: float = setting(0.4, above=0)  # the demo's RBF width "for normalized data"
        normalize: bool = True  # L2-normalise rows, which that sigma assumes
        lam: float = setting(1.0, above=0)  # ridge of the label regression W (G-step); > 0 keeps the solve regular
        nu: float = setting(1e-5, at_least=0)  # weight of the fit B ~ phi(X) P
        lam_f: float = setting(1e-2, above=0)  # ridge of the projection P (F-step)
        outer_iter: int = 5  # the demo's maxItr
        dcc_passes: int = 10  # passes of cyclic coordinate descent per B-step (stops early when B is stable)

    def _features(self, x):
        x = x.to(torch.float64)
        if self.config.normalize:
            x = torch.nn.functional.normalize(x, dim=1)
        phi = rbf(x, self.anchors_, 2 * self.config.sigma**2)
        return torch.cat([phi, torch.ones(phi.shape[0], 1, dtype=phi.dtype, device=phi.device)], 1)

    def fit(self, x, y=None, context=FitContext()):
        self.check_labels(y)
        g = self.generator()
        c = self.config
        xs = torch.nn.functional.normalize(x.to(torch.float64), dim=1) if c.normalize else x
        self.anchors_ = pick_anchors(xs, c.n_anchors, g)
        phi = self._features(x)
        labels = label_matrix(y).to(torch.float64)
        b = torch.randn(x.shape[0], self.n_bits, generator=g, dtype=torch.float64).sign().to(x.device)
        for _ in range(c.outer_iter):
            w = ridge(b, labels, c.lam)  # G-step
            p = ridge(phi, b, c.lam_f)  # F-step
            q = c.nu * (phi @ p) + labels @ w.T  # B-step: discrete cyclic coordinate descent
            for _ in range(c.dcc_passes):
                before = b.clone()
                for k in range(self.n_bits):
                    rest = torch.arange(self.n_bits, device=x.device) != k
                    b[:, k] = sign(q[:, k] - b[:, rest] @ (w[rest] @ w[k])).to(b.dtype)
                if torch.equal(b, before):
                    break
        self.projection_ = ridge(phi, b, c.lam_f)
        return self

    def encode(self, x):
        self.check_fitted("projection_")
        return binarize(self._features(x) @ self.projection_)


@hookimpl
def bench_methods():
    return [SDH]
