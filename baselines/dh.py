"""DH: Deep Hashing (Liong, Lu, Wang, Moulin, Zhou, CVPR 2015), unsupervised.

A small fully-connected tanh network on vectors (raw pixels or GIST) whose last layer has K units; codes are
sign(h). Its loss (the paper's Eq. 4, weights lambda1 = 100, lambda2 = lambda3 = 0.001; our lambda2 differs, see Config):
    1/2 ||B - H||^2                     quantization, with B = sign(H) held fixed in each step
  - lambda1 / 2 * tr(H H^T) / n         bit variance: spread the outputs (balanced, informative bits); we centre
                                        H over the batch (the variance the paper names), since the uncentred
                                        trace is maximised by giving every item the same saturated code
  + lambda2 / 2 * sum_m ||W_m W_m^T - I||^2    independence of each layer's units
  + lambda3 / 2 * sum_m (||W_m||^2 + ||c_m||^2)  weight decay
The paper optimises the whole training set by gradient descent; we take minibatches with Adam and average the
quantization term over the batch as the variance term is, so one weight setting works for any batch and set size.
Inputs are centred with the training mean.
"""
import dataclasses

import torch
from torch import nn

from baselines._linear import centre
from bench.deep import batched, check_finite, epoch_batches, gram_deviation
from bench.hookspecs import hookimpl
from bench.method import Method, binarize


class DH(Method):
    name = "dh"
    paper = "Liong et al., CVPR 2015"
    supervision = "none"
    input = "vectors"
    smoke = {"epochs": 5}

    @dataclasses.dataclass(frozen=True)
    class Config:
        hidden: tuple[int, ...] = (60, 30)  # hidden widths before the K-unit code layer (DH: 60-30-K)
        lambda_variance: float = 100.0  # lambda1 (DH)
        # lambda2: DH's 0.001 balances a quantization term summed over the whole set; with per-batch means it lets
        # the weights grow until tanh saturates along near-random directions (MNIST 16 bits: mAP 0.15). 100 keeps
        # each layer near-orthonormal, so maximising variance finds PCA-like directions (mAP 0.42; sweep in the
        # issue note).
        lambda_independence: float = 100.0
        lambda_decay: float = 0.001  # lambda3 (DH)
        epochs: int = 10
        batch_size: int = 256
        lr: float = 1e-3

    def fit(self, x, y=None):
        c, g = self.config, self.generator()
        torch.manual_seed(self.seed)
        centred, self.mean_ = centre(x)
        widths = [x.shape[1], *c.hidden, self.n_bits]
        layers = []
        for a, b in zip(widths, widths[1:]):
            layers += [nn.Linear(a, b), nn.Tanh()]
        self.net_ = nn.Sequential(*layers).to(self.device)
        linears = [m for m in self.net_ if isinstance(m, nn.Linear)]
        opt = torch.optim.Adam(self.net_.parameters(), lr=c.lr)
        step = 0
        for _ in range(c.epochs):
            for idx in epoch_batches(x.shape[0], c.batch_size, g, x.device):
                h = self.net_(centred[idx])
                quantization = 0.5 * ((torch.sign(h).detach() - h) ** 2).sum(1).mean()
                variance = -0.5 * c.lambda_variance * ((h - h.mean(0)) ** 2).sum(1).mean()  # centred: see docstring
                independence = sum(gram_deviation(m.weight) for m in linears)
                decay = sum((m.weight ** 2).sum() + (m.bias ** 2).sum() for m in linears)
                loss = quantization + variance + 0.5 * c.lambda_independence * independence \
                    + 0.5 * c.lambda_decay * decay
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
            check_finite(self.name, step, loss=loss)
        return self

    def encode(self, x):
        self.check_fitted("net_")
        with torch.no_grad():
            return binarize(batched(self.net_, x - self.mean_))


@hookimpl
def bench_methods():
    return [DH]
