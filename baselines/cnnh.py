"""CNNH: Xia, Pan, Lai, Liu, Yan, "Supervised Hashing for Image Retrieval via Image Representation Learning",
AAAI 2014.

Two stages. Stage 1 learns approximate codes H in [-1, 1]^(n x K) of the training images from the pairwise
similarity S in {-1, +1}^(n x n) alone:  min ||S - H H^T / K||_F^2, by coordinate descent (a Newton step per
entry, clipped to [-1, 1]), then H = sign(H). Stage 2 trains the network to regress H (squared error). Codes: sign
of the network's outputs.

Departures from the paper: in a sweep the entries of one bit (a column of H) take their Newton steps together,
with an exact line search along the column's Newton direction, so every step lowers the error (the public port
updates one entry at a time and keeps a sweep only if it lowers the error; a column at once runs as matrix
products); the CNNH+ label outputs are not used; backbone and schedule are the shared ones of
bench.deep.SupervisedConfig (from scratch by default, Cao et al. used AlexNet).
"""

from __future__ import annotations

import dataclasses

import torch

from bench.backbones import DeepHashMethod
from bench.deep import SUPERVISED_CPU_REDUCED, SupervisedConfig, sign
from bench.hookspecs import hookimpl
from bench.method import FitContext
from bench.metrics import relevance


def _best_step(r2, ra, aa, ab, bb) -> float:
    """argmin over t in [0, 1] of ||R + t A + t^2 B||^2 = r2 + 2t ra + t^2 (aa + 2 rb) + 2t^3 ab + t^4 bb, given
    its coefficients (``aa`` already holds aa + 2 rb): a quartic, minimised at a root of its cubic derivative."""
    import numpy as np

    roots = np.roots([4 * bb, 6 * ab, 2 * aa, 2 * ra])
    candidates = [0.0, 1.0] + [float(t.real) for t in roots if abs(t.imag) < 1e-9 and 0 < t.real < 1]
    return min(candidates, key=lambda t: 2 * t * ra + t * t * aa + 2 * t**3 * ab + t**4 * bb)


def approximate_codes(s: torch.Tensor, n_bits: int, sweeps: int, generator: torch.Generator) -> tuple:
    """Stage 1: H in {-1, +1}^(n x K) with H H^T / K close to S (+-1), and the error after each sweep."""
    target = n_bits * s  # ||K S - H H^T||^2 has the same minimisers
    h = (torch.rand(s.shape[0], n_bits, generator=generator) * 2 - 1).to(s).double()
    residual = h @ h.T - target.double()
    errors = [float((residual**2).sum())]
    for _ in range(sweeps):
        for k in range(n_bits):
            col = h[:, k].clone()
            r_col = residual @ col
            grad = 4 * r_col  # d/dH_ik of ||R||^2, R = H H^T - K S
            hess = 4 * ((col**2).sum() + col**2 + residual.diagonal())
            newton = torch.where(hess > 0, grad / hess.clamp(min=1e-12), grad.sign())
            d = (col - newton).clamp(-1, 1) - col  # to the clipped Newton point; h + t d stays in [-1, 1]
            # exact line search along d: R(t) = R + t (d h^T + h d^T) + t^2 d d^T
            dh, dd = float(d @ col), float(d @ d)
            t = _best_step(
                0.0,
                float(2 * (d @ r_col)),
                2 * (dd * float(col @ col) + dh**2) + 2 * float(d @ (residual @ d)),
                2 * dh * dd,
                dd**2,
            )
            if t > 0:
                delta = t * d
                # R += delta h^T + h delta^T + delta delta^T, as two in-place rank-one updates (no n x n temporaries)
                residual.addr_(delta, col + delta).addr_(col, delta)
                h[:, k] = col + delta
        errors.append(float((residual**2).sum()))
    return sign(h).to(s.dtype), errors


class CNNH(DeepHashMethod):
    name = "cnnh"
    paper = "Xia et al., AAAI 2014"
    supervision = "pairs"
    recipes = {"cpu-reduced": SUPERVISED_CPU_REDUCED}
    # at the shared rate (0.01) stage 2's squared regression onto the codes is unsteady in a smoke fit (mAP
    # 0.19-0.38 over seeds); at half of it above 0.5
    smoke = {"iterations": 30, "batch_size": 64, "sweeps": 4, "lr": 0.005}

    @dataclasses.dataclass(frozen=True)
    class Config(SupervisedConfig):
        sweeps: int = 10  # stage-1 coordinate-descent sweeps (T = 10 in the public port)

    def batch_loss(self, y, generator):
        """Stage 1 here (the codes to regress), stage 2's loss returned."""
        s = relevance(y, y).to(torch.float32) * 2 - 1
        targets, self.stage1_errors_ = approximate_codes(s, self.n_bits, self.config.sweeps, generator)
        del s

        def loss(z, idx, step):
            return ((z - targets[idx]) ** 2).sum(1).mean(), {}

        return loss

    def fit(self, x, y=None, context=FitContext()):
        super().fit(x, y, context)
        self.training_["stage1_errors"] = [round(e, 1) for e in self.stage1_errors_]
        return self


@hookimpl
def bench_methods():
    return [CNNH]
