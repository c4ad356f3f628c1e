"""BRE: Binary Reconstructive Embeddings (Kulis & Darrell, NIPS 2009), supervised as in the KSH/Cao comparisons.

Hash functions h_p(x) = [sum_q W_pq k(x_pq, x) > 0] over t points x_pq per bit, drawn from n_base random
training points, with a linear kernel k on centred inputs (as the Cai toolbox wrapper). The objective over all
pairs of base points is sum_ij (d_M(i,j) - d_R(i,j))^2 with d_R = Hamming(h(x_i), h(x_j)) / n_bits and the target
d_M = 0 for pairs sharing a label, ``dissimilar_distance`` otherwise.
Optimised by exact coordinate descent: the objective is piecewise constant in one weight W_pq, changing only
where some h_p(x_i) flips, so sweep the weight over all its breakpoints and jump to the best interval. With
binary bits the objective is quadratic in the bit vector h_p, so all n + 1 intervals are scored at once:
O = const + (2 / K) f(h), f(h) = h.r - h^T X h, X = 1/K - 2 (d_M - d_R of the other bits), r = row sums of X,
and each flip in breakpoint order changes f by an amount read off a triangular cumulative sum.
"""

import dataclasses

import torch

from baselines._linear import centre
from bench.hookspecs import hookimpl
from bench.method import FitContext, Method, binarize, setting
from bench.metrics import relevance


def best_weight(z, kappa, w, x_mat, r, h):
    """The best value of one weight: z (n,) current projections, kappa (n,) the kernel column it multiplies,
    w its current value; x_mat, r the bit's quadratic objective; h (n,) the current bits (float 0/1).
    Returns (new weight, decrease of f(h) = h.r - h^T X h, new bits)."""
    moving = kappa != 0
    thresholds = torch.where(moving, w - z / torch.where(moving, kappa, torch.ones_like(kappa)), torch.inf)
    order = torch.argsort(thresholds)
    n_moving = int(moving.sum())
    order = order[:n_moving]
    start = torch.where(moving, (kappa < 0).to(h.dtype), h)  # bits when the weight goes to -infinity
    delta = 1 - 2 * start[order]  # +1 turns a bit on, -1 off, in sweep order
    f = lambda hh: hh @ r - hh @ x_mat @ hh  # noqa: E731
    xh = x_mat[order] @ start  # (X h_start) at the flipped items
    sub = x_mat[order][:, order] * delta[None, :]
    earlier = torch.tril(sub, diagonal=-1).sum(1)  # sum over items flipped before this one
    steps = delta * r[order] - 2 * delta * (xh + earlier) - x_mat[order, order]
    values = f(start) + torch.cat([torch.zeros(1, dtype=h.dtype, device=h.device), torch.cumsum(steps, 0)])
    best = int(torch.argmin(values))  # the objective is const + (2 / K) f
    t = thresholds[order]
    if best == 0:
        new_w = float(t[0]) - 1.0
    elif best == n_moving:
        new_w = float(t[-1]) + 1.0
    else:
        new_w = float(t[best - 1] + t[best]) / 2
    new_h = start.clone()
    new_h[order[:best]] = 1 - new_h[order[:best]]
    return new_w, float(f(h) - values[best]), new_h


class BRE(Method):
    name = "bre"
    paper = "Kulis & Darrell, NIPS 2009"
    supervision = "labels"
    input = "vectors"
    smoke = {"n_base": 200, "n_sweeps": 1}

    @dataclasses.dataclass(frozen=True)
    class Config:
        n_base: int = 1000  # base points whose pairs form the objective (Cai wrapper: 1,000)
        points_per_bit: int = 20  # t kernel points per hash function (Cai wrapper: hash_size 20)
        # target normalised Hamming distance of pairs sharing no label (similar pairs: 0)
        dissimilar_distance: float = setting(1.0, above=0, at_most=1)
        n_sweeps: int = 3  # passes over every weight; stops early when a pass improves nothing

    def fit(self, x, y=None, context=FitContext()):
        self.check_labels(y)
        g = self.generator()
        c, k_bits = self.config, self.n_bits
        centred, self.mean_ = centre(x)
        base = torch.randperm(x.shape[0], generator=g)[: c.n_base].to(x.device)
        xb = centred[base].to(torch.float64)
        n = xb.shape[0]
        target = torch.where(relevance(y[base], y[base]), 0.0, c.dissimilar_distance).to(torch.float64)
        points = torch.randint(0, n, (k_bits, c.points_per_bit), generator=g).to(x.device)
        self.points_ = xb[points]  # (K, t, d)
        kernel = torch.einsum("ktd,nd->knt", self.points_, xb)  # (K, n, t)
        w = 1e-3 * torch.randn(k_bits, c.points_per_bit, generator=g, dtype=torch.float64).to(x.device)
        z = torch.einsum("knt,kt->kn", kernel, w)
        h = (z >= 0).to(torch.float64)
        pair = lambda hp: (hp[:, None] - hp[None, :]) ** 2 / k_bits  # noqa: E731
        reconstructed = sum(pair(h[p]) for p in range(k_bits))
        for _ in range(c.n_sweeps):
            gained = 0.0
            for p in range(k_bits):
                others = reconstructed - pair(h[p])
                x_mat = 1.0 / k_bits - 2 * (target - others)
                r = x_mat.sum(1)
                for q in range(c.points_per_bit):
                    new_w, gain, new_h = best_weight(z[p], kernel[p, :, q], float(w[p, q]), x_mat, r, h[p])
                    if gain > 1e-9:
                        z[p] += (new_w - w[p, q]) * kernel[p, :, q]
                        w[p, q] = new_w
                        h[p] = (z[p] >= 0).to(torch.float64)
                        gained += gain
                reconstructed = others + pair(h[p])
            if gained <= 1e-9:
                break
        self.weights_ = w
        return self

    def encode(self, x):
        self.check_fitted("weights_")
        kernel = torch.einsum("ktd,nd->knt", self.points_, (x - self.mean_).to(torch.float64))
        return binarize(torch.einsum("knt,kt->nk", kernel, self.weights_))


@hookimpl
def bench_methods():
    return [BRE]
