"""DH: Deep Hashing (Liong, Lu, Wang, Moulin, Zhou, CVPR 2015), unsupervised.

A small fully-connected tanh network on vectors (raw pixels or GIST) whose last layer has K units; codes are
sign(h). Its loss (the paper's Eq. 4, weights lambda1 = 100, lambda2 = lambda3 = 0.001; our lambda1 and lambda2
differ, see Config):
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
from bench.deep import LossLog, batched, epoch_batches, gram_deviation
from bench.errors import BenchError
from bench.hookspecs import hookimpl
from bench.method import FitContext, Method, binarize, setting


class DH(Method):
    name = "dh"
    paper = "Liong et al., CVPR 2015"
    supervision = "none"
    input = "vectors"
    smoke = {"epochs": 20}  # digits has 7 batches per epoch
    uses_validation = True  # chooses lambda1 (Config.lambda_variance)

    @dataclasses.dataclass(frozen=True)
    class Config:
        hidden: tuple[int, ...] = (60, 30)  # hidden widths before the K-unit code layer (DH: 60-30-K)
        # lambda1, chosen per run on the validation split carved from the training set (every candidate is fitted
        # from the same initial weights and the best validation mAP kept; without validation data, the first: DH's
        # 100). A choice because the right weight depends on the input's scale: DH's 100 collapses MNIST pixels at
        # 32 and 64 bits (most items share a few codes), while 30 collapses CIFAR-10 GIST to one code.
        lambda_variance: tuple[float, ...] = setting((100.0, 30.0, 10.0), at_least=0)
        # lambda2: DH's 0.001 balances a quantization term summed over the whole set; against per-batch means it
        # lets the weights grow until tanh saturates along near-random directions. 100 keeps each layer
        # near-orthonormal, so maximising the variance finds PCA-like directions.
        lambda_independence: float = setting(100.0, at_least=0)
        lambda_decay: float = setting(0.001, at_least=0)  # lambda3 (DH)
        epochs: int = 10
        batch_size: int = 256
        lr: float = setting(1e-3, above=0)

    def fit(self, x, y=None, context=FitContext()):
        validation = context.validation
        candidates = self.config.lambda_variance if validation is not None else self.config.lambda_variance[:1]
        if not candidates:
            raise BenchError(f"{self.name}: lambda_variance needs at least one value")
        _, self.mean_ = centre(x)
        best, scores, log = None, {}, []
        for lam in candidates:
            with torch.random.fork_rng(devices=[]):  # every candidate from the same initial weights
                self.net_, entries = self._fit_one(x - self.mean_, lam)
            log += entries
            scores[lam] = None if validation is None else round(validation.score(self.encode), 5)
            if best is None or (scores[lam] is not None and scores[lam] > scores[best[0]]):
                best = (lam, self.net_)
        self.net_ = best[1]
        self.training_ = {
            "lambda_variance_kept": best[0],
            "validation_map": scores,
            "selection": f"highest mAP on the validation split ({validation.describe()})"
            if validation is not None
            else "no validation: the first candidate (DH's value)",
            "log": log,
        }
        return self

    def _fit_one(self, centred, lambda_variance):
        c, g = self.config, self.generator()
        widths = [centred.shape[1], *c.hidden, self.n_bits]
        layers = []
        for a, b in zip(widths, widths[1:]):
            layers += [nn.Linear(a, b), nn.Tanh()]
        net = nn.Sequential(*layers).to(self.device)
        linears = [m for m in net if isinstance(m, nn.Linear)]
        opt = torch.optim.Adam(net.parameters(), lr=c.lr)
        log, step = LossLog(self.name), 0
        for epoch in range(1, c.epochs + 1):
            for idx in epoch_batches(centred.shape[0], c.batch_size, g, centred.device):
                h = net(centred[idx])  # the objective of Eq. 4, its terms as in the module docstring
                quantization = 0.5 * ((torch.sign(h).detach() - h) ** 2).sum(1).mean()
                variance = -0.5 * lambda_variance * ((h - h.mean(0)) ** 2).sum(1).mean()  # centred: see docstring
                independence = sum(gram_deviation(m.weight) for m in linears)
                decay = sum((m.weight**2).sum() + (m.bias**2).sum() for m in linears)
                loss = (
                    quantization + variance + 0.5 * c.lambda_independence * independence + 0.5 * c.lambda_decay * decay
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                log.add(loss=loss, quantization=quantization, variance=variance, independence=independence)
            log.close(step, c.epochs, lambda_variance=lambda_variance, epoch=epoch)
        return net, log.entries

    def encode(self, x):
        self.check_fitted("net_")
        with torch.no_grad():
            return binarize(batched(self.net_, x - self.mean_))


@hookimpl
def bench_methods():
    return [DH]
