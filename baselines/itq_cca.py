"""ITQ-CCA: Iterative Quantization on CCA directions (Gong & Lazebnik, CVPR 2011; TPAMI 2013).

Supervised ITQ: instead of PCA, project the centred features on the top n_bits canonical directions between the
features X and the label matrix Y (one-hot or multi-hot), solving
  Cxy (Cyy + rho I)^-1 Cyx w = r^2 (Cxx + rho I) w,
scale each direction by its canonical correlation r (the paper: scaling "by their eigenvalues" works better),
then learn ITQ's rotation on the projected data. With C classes at most C - 1 correlations are non-zero, so
bits beyond that carry little (why its published numbers grow slowly with length).
"""

import dataclasses

import torch

from baselines._linear import ProjectionHash, centre, itq_rotation
from bench.errors import BenchError
from bench.hookspecs import hookimpl
from bench.method import FitContext, label_matrix, setting


class ITQCCA(ProjectionHash):
    name = "itq-cca"
    paper = "Gong & Lazebnik, CVPR 2011 (CCA-ITQ)"
    supervision = "labels"
    input = "vectors"
    smoke = {"n_iter": 5}

    @dataclasses.dataclass(frozen=True)
    class Config:
        # ridge on both covariances, the value of the reference code (> 0: constant pixels leave cov(x) singular)
        reg: float = setting(1e-4, above=0)
        n_iter: int = setting(50, at_least=0)  # ITQ iterations, as for unsupervised ITQ (0: one rotation update)

    def fit(self, x, y=None, context=FitContext()):
        self.check_labels(y)
        d = x.shape[1]
        if self.n_bits > d:
            raise BenchError(f"{self.name} needs n_bits <= the input dimension ({d}); got {self.n_bits}")
        centred, self.mean_ = centre(x)
        xs = centred.to(torch.float64)
        ys = label_matrix(y).to(torch.float64)
        ys = ys - ys.mean(0, keepdim=True)
        n = xs.shape[0]
        cxx = xs.T @ xs / n + self.config.reg * torch.eye(d, dtype=torch.float64, device=x.device)
        cyy = ys.T @ ys / n + self.config.reg * torch.eye(ys.shape[1], dtype=torch.float64, device=x.device)
        cxy = xs.T @ ys / n
        a = cxy @ torch.linalg.solve(cyy, cxy.T)
        chol = torch.linalg.cholesky(cxx)  # whiten: L^-1 A L^-T u = r^2 u, w = L^-T u
        m = torch.linalg.solve_triangular(chol, torch.linalg.solve_triangular(chol, a, upper=False).T, upper=False)
        eigenvalues, u = torch.linalg.eigh((m + m.T) / 2)
        top = torch.argsort(eigenvalues, descending=True)[: self.n_bits]
        w = torch.linalg.solve_triangular(chol.T, u[:, top], upper=True)
        w = w * eigenvalues[top].clamp(min=0).sqrt()  # scale by the canonical correlations
        v = xs @ w
        rotation = itq_rotation(v, self.config.n_iter, self.generator())
        self.projection_ = (w @ rotation).to(x.dtype)
        return self


@hookimpl
def bench_methods():
    return [ITQCCA]
