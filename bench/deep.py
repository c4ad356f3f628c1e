"""Shared pieces of the deep methods, so each method file holds only its networks, losses and training loop.

Training reads minibatches straight from the device-resident uint8 tensors the harness gives ``fit`` and augments
on the device (no DataLoader, no PIL per step). Random draws come from the method's CPU generator and are moved to
the device, so a seed gives the same run on every device (up to float rounding).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import pickle
import typing
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from bench import progress
from bench.errors import BenchError
from bench.method import setting


class Diverged(BenchError):
    """A loss became NaN or inf: the run failed and nothing is recorded."""


def to_float(x: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """uint8 images (n, c, h, w) -> float32 in [-1, 1] (the tanh range of the generators), resized to size x size
    when given and different."""
    out = x.to(torch.float32).div_(127.5).sub_(1.0)
    if size is not None and tuple(out.shape[-2:]) != (size, size):
        out = F.interpolate(out, size=(size, size), mode="bilinear", align_corners=False)
    return out


def epoch_batches(n: int, batch_size: int, generator: torch.Generator, device) -> list[torch.Tensor]:
    """One epoch of shuffled index batches. A trailing batch smaller than half a batch is dropped (batch norm and
    batch statistics such as bit frequencies are noisy on tiny batches)."""
    order = torch.randperm(n, generator=generator).to(device)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < batch_size // 2:
        batches.pop()
    return batches


def random_affine(
    x: torch.Tensor, generator: torch.Generator, degrees: float = 10.0, translate: float = 0.1, flip: bool = False
) -> torch.Tensor:
    """A random rotation (uniform in +-degrees), translation (+-translate of the size) and optional horizontal
    flip per image, applied on the device with reflection padding."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * translate * 2  # grid units span [-1, 1]
    mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(n)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos * mirror, -sin, shift[:, 0]], 1), torch.stack([sin * mirror, cos, shift[:, 1]], 1)], 1
    )
    return _warp(x, theta)


def random_crop_flip(
    x: torch.Tensor, generator: torch.Generator, crop: float = 0.875, flip: bool = True
) -> torch.Tensor:
    """A random square crop of ``crop`` of each side (AlexNet's 224 of 256) at a random position, mirrored with
    probability 1/2 when ``flip``, and resized back to the input size: the popular repositories' RandomCrop +
    RandomHorizontalFlip, in one resampling of the whole batch on the device."""
    n = x.shape[0]
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (1 - crop)  # grid units: the crop stays inside
    mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(n)
    zero = torch.zeros(n)
    theta = torch.stack(
        [torch.stack([crop * mirror, zero, shift[:, 0]], 1), torch.stack([zero, crop * torch.ones(n), shift[:, 1]], 1)],
        1,
    )
    return _warp(x, theta)


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Every image rotated by the same angle (reflection padding), on the device."""
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])
    return _warp(x, theta.expand(x.shape[0], 2, 3))


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Images resampled through per-image affine maps theta (n, 2, 3), reflection padding."""
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)


def iteration_batches(n: int, batch_size: int, iterations: int, generator: torch.Generator, device):
    """``iterations`` shuffled index batches, reshuffled at every pass over the data (for schedules counted in
    solver iterations, as the Caffe papers give them)."""
    done = 0
    while done < iterations:
        for idx in epoch_batches(n, batch_size, generator, device):
            if done == iterations:
                return
            yield idx
            done += 1


def pair_weights(s: torch.Tensor, dissimilar: str = "balanced", exclude_self: bool = False) -> torch.Tensor:
    """Weights of the pairs of a batch (Cao et al. 2018 Eq. 7, HashNet): |S|/|S1| for similar pairs and |S|/|S0|
    for dissimilar ones ("balanced"), or 1 for dissimilar ones ("one", HashNet's and the HashGAN code's), so the
    few similar pairs are not drowned by the many dissimilar ones. ``exclude_self`` zeroes the diagonal (an item
    paired with itself teaches nothing). Counts are per batch."""
    s = s.to(torch.float32)
    mask = torch.ones_like(s)
    if exclude_self:
        mask.fill_diagonal_(0)
    total, similar = mask.sum(), (s * mask).sum()
    w_similar = total / similar.clamp(min=1)
    w_dissimilar = total / (total - similar).clamp(min=1) if dissimilar == "balanced" else torch.ones_like(total)
    return mask * torch.where(s > 0, w_similar, w_dissimilar)


def pairwise_likelihood(
    h_a: torch.Tensor,
    h_b: torch.Tensor,
    s: torch.Tensor,
    alpha: float,
    weights: torch.Tensor | None = None,
    cosine: bool = False,
) -> torch.Tensor:
    """The pairwise logistic loss of DHN, HashNet and HashGAN (Cao et al. Eq. 8-10):
    sum_ij w_ij [log(1 + exp(x_ij)) - s_ij x_ij] / sum_ij w_ij, with x_ij = alpha <h_a_i, h_b_j>, or
    alpha cos(h_a_i, h_b_j) when ``cosine`` (HashGAN's adaptive sigmoid on the cosine). softplus keeps it finite
    where HashNet's Caffe layer switches formulas at x > 15."""
    if cosine:
        h_a, h_b = F.normalize(h_a, dim=1), F.normalize(h_b, dim=1)
    x = alpha * h_a @ h_b.T
    loss = F.softplus(x) - s.to(x.dtype) * x
    if weights is None:
        return loss.mean()
    return (weights * loss).sum() / weights.sum().clamp(min=1e-12)


def sign(u: torch.Tensor) -> torch.Tensor:
    """sign(u) in {-1, +1} as float, sign(0) = +1 (the project's convention)."""
    return torch.where(u >= 0, 1.0, -1.0).to(u.dtype)


def log_cosh(u: torch.Tensor) -> torch.Tensor:
    """log cosh(u), written stably: |u| + softplus(-2|u|) - log 2."""
    u = u.abs()
    return u + F.softplus(-2 * u) - math.log(2.0)


def likelihood_to_stored(u: torch.Tensor, stored: torch.Tensor, s: torch.Tensor, scale: float) -> torch.Tensor:
    """mean over (i in the batch, j in the training set) of log(1 + e^Theta_ij) - s_ij Theta_ij, Theta_ij =
    scale u_i^T U_j with U the stored outputs (held fixed): the pairwise negative log-likelihood of DPSH's Eq. 3 /
    DSDH's Eq. 6 for the pairs of a batch. softplus keeps it finite for large |Theta|."""
    theta = scale * u @ stored.T
    return (F.softplus(theta) - s.to(theta.dtype) * theta).mean()


def batch_objective(
    u: torch.Tensor, stored: torch.Tensor, s: torch.Tensor, codes: torch.Tensor, eta: float, scale: float
) -> tuple[torch.Tensor, dict]:
    """The batch's share of J = sum_ij NLL_ij + eta sum_i ||b_i - u_i||^2 (DPSH Eq. 3, DSDH's network terms),
    divided by (batch x n): the pair sum counts each pair both ways, and the stored side is held fixed, hence
    the 2; the quantization is over the batch's items only, hence eta / n. Returns (loss, terms)."""
    likelihood = likelihood_to_stored(u, stored, s, scale)
    quantization = ((codes - u) ** 2).sum(1).mean()
    return 2 * likelihood + eta / stored.shape[0] * quantization, {
        "likelihood": likelihood,
        "quantization": quantization,
    }


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """The fields every deep method has: which ``bench.backbones`` network, and its initial weights. The papers
    fine-tune ImageNet-pretrained AlexNet or VGG-16 (later ones ResNet-50 or ViT-B/16); offline there are none, so
    the default is the small CNN from scratch, and records hold these fields so a table can say which was used."""

    backbone: typing.Literal["small_cnn", "alexnet", "vgg16", "resnet50", "vit_b_16"] = "small_cnn"
    weights: str = ""  # torchvision weights name (IMAGENET1K_V1) or a state-dict file; "" = random initialisation


@dataclasses.dataclass(frozen=True)
class SupervisedConfig(BackboneConfig):
    """The fields every supervised deep method shares (HashNet, DHN, DNNH, CNNH, and HashGAN's encoder), so they
    compare on the same backbone, optimiser and schedule. The papers fine-tune an ImageNet-pretrained AlexNet with
    SGD (momentum 0.9, weight decay 5e-4, batch 256, HashNet's 10,000 iterations with the rate halved every
    2,000, the new layer at 10x); offline there are no pretrained weights, so the default trains the small CNN
    from scratch, where the fine-tuning rates (1e-5..1e-4) do not move a random network: ``lr`` 0.01 and
    ``head_lr_mult`` 1 (every layer is new)."""

    iterations: int = 10_000  # HashNet's solvers
    batch_size: int = 256  # Cao et al. 4.1
    lr: float = setting(0.01, above=0)  # from scratch (see above); paper: cross-validated in 1e-5..1e-2 for fine-tuning
    lr_step: int = 2_000  # HashNet's solvers: the rate halves every 2,000 iterations
    lr_gamma: float = setting(0.5, above=0, at_most=1)  # the rate's factor every lr_step (1: constant)
    momentum: float = setting(0.9, at_least=0, below=1)
    weight_decay: float = setting(5e-4, at_least=0)
    head_lr_mult: float = setting(1.0, above=0)  # paper: 10 for the new layer on a pretrained trunk
    # random crop (224 of 256, the side's fraction; 1: no crop) and horizontal flip, as the papers' Caffe data layers
    crop: float = setting(0.875, above=0, at_most=1)
    flip: bool = True


# The reduced schedule of CPU-only runs (the "cpu-reduced" recipe of HashNet, DHN, DNNH and CNNH).
SUPERVISED_CPU_REDUCED = {"iterations": 500, "batch_size": 64}


def sgd(net, config: SupervisedConfig, head: tuple = ()):
    """SGD over the backbone and the new layer (at ``head_lr_mult`` x the rate), with the step schedule. ``head``:
    further new parameters of the loss (a classifier on the codes, learnable centres), trained as the new layer."""
    groups = [
        {"params": list(net.backbone.parameters()), "lr": config.lr},
        {"params": list(net.layer.parameters()) + list(head), "lr": config.lr * config.head_lr_mult},
    ]
    opt = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=config.lr_step, gamma=config.lr_gamma)


def sgd_stage(params, lr: float, step: int, momentum: float, decay: float):
    """Caffe's SGD solver with its "step" policy (lr x 0.1 every ``step`` iterations), as the DeepBit release's
    solvers, which UTH follows."""
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=decay)
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=step, gamma=0.1)


def train_hash_network(
    name: str,
    net,
    x: torch.Tensor,
    config: SupervisedConfig,
    generator: torch.Generator,
    batch_loss,
    log_every: int = 500,
) -> dict:
    """The training loop of the supervised deep baselines: ``config.iterations`` SGD steps on shuffled batches
    of the device-resident images, cropped and flipped on the device. ``batch_loss(outputs, idx, step)`` returns
    (loss, {term: value}) for the network's outputs on the batch of training indices ``idx``; a ``batch_loss``
    that is an ``nn.Module`` has its parameters trained with the new layer. Returns the log (mean terms every
    ``log_every`` steps); a non-finite loss raises Diverged."""
    head = tuple(batch_loss.parameters()) if isinstance(batch_loss, torch.nn.Module) else ()
    opt, schedule = sgd(net, config, head)
    net.train()
    log = LossLog(name)
    for step, idx in enumerate(
        iteration_batches(x.shape[0], config.batch_size, config.iterations, generator, x.device), 1
    ):
        inputs = net.backbone.augment(x[idx], generator, config.crop, config.flip)
        loss, terms = batch_loss(net(inputs), idx, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        log.add(loss=loss, **terms)
        if step % log_every == 0 or step == config.iterations:
            log.close(step, config.iterations, iteration=step)
    net.eval()
    return {"iterations": config.iterations, "selection": "last iteration (fixed schedule)", "log": log.entries}


class LossLog:
    """Running sums of a training loop's loss terms, averaged into one log entry at a time (one host sync per
    entry, which also checks that every term is finite)."""

    def __init__(self, method: str):
        self.method, self.entries, self._sums, self._count = method, [], {}, 0

    def add(self, **terms) -> None:
        for k, v in terms.items():
            self._sums[k] = self._sums.get(k, 0.0) + torch.as_tensor(v).detach()
        self._count += 1

    def close(self, step: int, total: int | None = None, **fields) -> dict:
        """Append and return the entry ``{**fields, term: mean since the last entry}``; raise Diverged if a term
        is not finite (``step`` names where). The entry is also reported as progress (step of ``total``)."""
        if self._sums:
            check_finite(self.method, step, **self._sums)
        terms = {k: round(float(v) / max(self._count, 1), 5) for k, v in self._sums.items()}
        entry = {**fields, **terms}
        self.entries.append(entry)
        self._sums, self._count = {}, 0
        progress.training_step(self.method, step, total, entry, list(terms))
        return entry


def check_finite(method: str, step: int, **losses: torch.Tensor) -> None:
    """Raise Diverged naming the first non-finite loss (one host sync per call: call it every few steps)."""
    values = torch.stack([v.detach().float() for v in losses.values()])
    if not torch.isfinite(values).all():
        bad = {k: float(v) for k, v in losses.items() if not math.isfinite(float(v))}
        raise Diverged(f"{method} diverged at step {step}: {bad}; nothing was stored")


@torch.no_grad()
def batched(fn, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """fn over x in batches (encoding a 60,000-image database at once can exhaust memory)."""
    return torch.cat([fn(part) for part in x.split(batch_size)])


def bit_entropy(p: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Elementwise binary entropy H(p) = -p log p - (1 - p) log(1 - p), in nats."""
    p = p.clamp(eps, 1 - eps)
    return -(p * p.log() + (1 - p) * (1 - p).log())


def gram_deviation(w: torch.Tensor) -> torch.Tensor:
    """||W W^T - I||^2, the independence term of DH and HashGAN, for a layer of at most as many units as inputs;
    for a wider one (e.g. 64 bits from 30 hidden units) W W^T has rank < K and cannot reach I, so its columns are
    made orthonormal instead."""
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    return ((gram - torch.eye(gram.shape[0], device=w.device)) ** 2).sum()


class Checkpoint:
    """Resumable training state in one file (the runner points long trainings at the cache folder, never at the
    results). Written atomically at the end of each epoch; a rerun of the same cell resumes from it."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None

    def load(self, device) -> dict | None:
        """The saved state, or None when there is none. A file that is not one (truncated by a full disk, say) is
        warned about and removed: the fit starts afresh."""
        if self.path is None or not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location=device, weights_only=False)
            if not isinstance(state, dict):
                raise ValueError(f"holds a {type(state).__name__}, not a training state")
        except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as error:
            warnings.warn(f"discarding unusable checkpoint {self.path} ({error}); training from scratch", stacklevel=2)
            self.path.unlink(missing_ok=True)
            return None
        return state

    def save(self, state: dict) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, self.path)


class BestOf:
    """Keeps the parameters of the epoch with the highest validation score (model selection on a split carved
    from the training set, never on the queries); without validation data the last epoch is kept."""

    def __init__(self):
        self.score, self.epoch, self.state = -math.inf, None, None

    def offer(self, epoch: int, score: float | None, modules: dict) -> None:
        if score is None or score > self.score:
            self.score = -math.inf if score is None else score
            self.epoch = epoch
            self.state = {k: copy.deepcopy(m.state_dict()) for k, m in modules.items()}

    def restore(self, modules: dict) -> None:
        for k, m in modules.items():
            m.load_state_dict(self.state[k])
