"""CIBHash: Zexuan Qiu, Qinliang Su, Zijing Ou, Jianxing Yu, Changyou Chen, "Unsupervised Hashing with
Contrastive Information Bottleneck", IJCAI 2021 (arXiv 2105.06138; official PyTorch code: qiuzx2/CIBHash).

Two random augmentations v1, v2 of each image of a batch go through one network: a backbone, a hash head
f (here 1024 ReLU units, then K) and a sigmoid, p = sigmoid(f(v)), the probabilities of the K bits. The codes are
stochastic binary (the paper's Eq. 11): b = sign(p - u), u ~ Uniform(0, 1) elementwise (b_k = +1 with
probability p_k), with the straight-through gradient db/dp = 1. The loss of a batch of N images (2N views):
    (1 / 2N) sum_i [l(b_i^1, b_i^2) + l(b_i^2, b_i^1)]          contrastive: NT-Xent on the codes, with
        l(a, c) = -log( exp(cos(a, c) / tau) / sum_{z != a} exp(cos(a, z) / tau) )   over the other 2N - 1 views
  + beta / 2 * mean_i [KL(p(b | v_i^1) || p(b | v_i^2)) + KL(p(b | v_i^2) || p(b | v_i^1))]
                                                                the information bottleneck's I(B; V) term
    with KL between products of Bernoullis, sum_k p_k log(p_k / q_k) + (1 - p_k) log((1 - p_k) / (1 - q_k)).
The contrastive term maximises a lower bound of I(B; Y) between the two views' codes, the KL term bounds the
superfluous information I(B; V), the trade-off weighted by beta. Codes of new images: sign(p - 1/2).

Defaults as the official code's: tau 0.3, beta 0.001, Adam lr 1e-3 (there on the head alone; here on every
trainable layer), batch 64, 60 epochs. Augmentations as its training transforms: a random resized crop (area
0.5..1 of the image, aspect ratio 3/4..4/3) to the backbone's input size and a horizontal flip, colour jitter
(brightness, contrast, saturation 0.4, hue 0.1) with probability 0.7, greyscale with probability 0.2 and a 3 x 3
Gaussian blur (sigma 0.1..2) with probability 0.5; here on the device, batched, from the method's generator.

Departures, each a Config switch where the paper and the official code differ (the paper is the default):
- ``sampling``: the paper samples b (Eq. 11); the official code thresholds, b = sign(p - 1/2), in training too
  ("threshold").
- ``kl_stop_gradient``: the official code holds the second argument of each KL fixed (detached); the paper's
  objective differentiates both.
- The backbone: the paper and code keep an ImageNet-pretrained VGG-16 frozen and train the head; offline there are
  no pretrained weights, so by default the small CNN (bench.backbones) trains from scratch with the head (a
  frozen random trunk leaves the contrastive loss random features). ``backbone=vgg16 weights=IMAGENET1K_V1
  freeze_backbone=true`` is the paper's setup.
- The official script keeps the best of epochs 20, 40, 60 by mAP on labelled held-out images (and trains at
  least 80 epochs at 16 bits); an unsupervised method here keeps its last epoch (``--set epochs=80`` for the
  16-bit schedule).
- Colour jitter applies brightness, contrast, saturation, hue in this fixed order (torchvision: a random order
  per image), hue as a rotation in YIQ space (torchvision: a shift in HSV); a crop whose sides would leave the
  image is clamped to it (torchvision: redrawn, up to 10 times). Grey images get brightness and contrast only.

Equation numbers: Eq. 11 (the stochastic binary layer) is as the paper numbers it (issue 3 of the official
repository quotes it); the other terms are named, not numbered, as the paper's full text was not readable where
this was written.
"""

from __future__ import annotations

import dataclasses
import math
import typing

import torch
import torch.nn.functional as F
from torch import nn

from bench.backbones import DeepHashMethod
from bench.deep import BackboneConfig, LossLog, epoch_batches, to_float
from bench.hookspecs import hookimpl
from bench.method import FitContext, binarize, setting

# ITU-R 601 luma, as torchvision's rgb_to_grayscale
LUMA = (0.299, 0.587, 0.114)
# RGB <-> YIQ (hue is the angle of the (I, Q) chroma plane)
RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


class CIBHash(DeepHashMethod):
    name = "cibhash"
    paper = "Qiu et al., IJCAI 2021"
    supervision = "none"
    activation = "sigmoid"
    # digits: 53 batches of 32 an epoch. The linear head, as the 1024-unit one under the paper's sampling collapses
    # there from scratch to one code for every image: while the codes do not yet tell images apart, their sampling
    # noise only raises the contrastive loss, and saturating every bit the same way for all images removes it.
    # lr: at Adam's 1e-3 the one epoch's mAP ranged 0.28-0.47 over seeds, at 5e-4 0.42-0.46.
    smoke = {"epochs": 1, "batch_size": 32, "hidden": 0, "lr": 5e-4}
    recipes = {"cpu-reduced": {"epochs": 6}}  # CPU-only runs: a tenth of the epochs

    @dataclasses.dataclass(frozen=True)
    class Config(BackboneConfig):  # paper: VGG-16 with ImageNet weights, frozen
        freeze_backbone: bool = False  # from scratch the trunk must learn (see the module docstring)
        hidden: int = setting(1024, at_least=0)  # the head's hidden ReLU layer (official 4096-1024-K); 0: linear
        temperature: float = setting(0.3, above=0)  # tau (official default; its grid: 0.2, 0.3, 0.4)
        beta: float = setting(0.001, at_least=0)  # the KL weight (official ``weight``)
        sampling: typing.Literal["bernoulli", "threshold"] = "bernoulli"  # Eq. 11; official: "threshold"
        kl_stop_gradient: bool = False  # official: the KL's second argument detached
        epochs: int = 60  # official default
        batch_size: int = setting(64, at_least=2)  # official default; NT-Xent needs negatives
        lr: float = setting(1e-3, above=0)  # Adam, official default
        crop_scale: float = setting(0.5, above=0, at_most=1)  # the crop's least area fraction (RandomResizedCrop)
        flip: bool = True
        jitter_probability: float = setting(0.7, at_least=0, at_most=1)
        brightness: float = setting(0.4, at_least=0, at_most=1)  # factors drawn from 1 +- this
        contrast: float = setting(0.4, at_least=0, at_most=1)
        saturation: float = setting(0.4, at_least=0, at_most=1)
        hue: float = setting(0.1, at_least=0, at_most=0.5)  # a shift of +- this of the colour circle
        grey_probability: float = setting(0.2, at_least=0, at_most=1)
        blur_probability: float = setting(0.5, at_least=0, at_most=1)
        blur_sigma: tuple[float, ...] = setting((0.1, 2.0), above=0)  # (least, most) sigma of the 3 x 3 blur

    def fit(self, x, y=None, context=FitContext()):
        c, g = self.config, self.generator()
        self.net_ = self._network(x)
        opt = torch.optim.Adam(self.net_.trainable(), lr=c.lr)
        log, step = LossLog(self.name), 0
        for epoch in range(1, c.epochs + 1):
            self.net_.train()
            for idx in epoch_batches(x.shape[0], c.batch_size, g, x.device):
                loss, terms = self._loss(x[idx], g)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                log.add(loss=loss, **terms)
            log.close(epoch, c.epochs, epoch=epoch, iterations=step)
        self.net_.eval()
        self.training_ = {"epochs": c.epochs, "selection": "last epoch (fixed schedule)", "log": log.entries}
        return self

    def _network(self, x):
        """The backbone with the hash head: HashNetwork's K-unit layer, preceded by ``hidden`` ReLU units."""
        net = self.network(x)
        if self.config.hidden:
            net.layer = nn.Sequential(
                nn.Linear(net.backbone.dim, self.config.hidden), nn.ReLU(), nn.Linear(self.config.hidden, self.n_bits)
            ).to(self.device)
        return net

    def _loss(self, images: torch.Tensor, g: torch.Generator):
        """The objective on a batch of uint8 images: two views, their bit probabilities and codes, the contrastive
        and KL terms."""
        c = self.config
        p1, p2 = (self.net_(self.net_.backbone.prepare(self.augment(images, g))) for _ in range(2))
        b1, b2 = self.binary(p1, g), self.binary(p2, g)
        terms = {
            "contrastive": nt_xent(b1, b2, c.temperature),
            "kl": 0.5 * (bernoulli_kl(p1, p2, c.kl_stop_gradient) + bernoulli_kl(p2, p1, c.kl_stop_gradient)),
        }
        return terms["contrastive"] + c.beta * terms["kl"], terms

    def binary(self, p: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Codes in {-1, +1} from bit probabilities, with the straight-through gradient db/dp = 1 (Eq. 11, or
        the official code's threshold at 1/2)."""
        u = torch.rand(p.shape, generator=g).to(p) if self.config.sampling == "bernoulli" else torch.full_like(p, 0.5)
        b = torch.where(p >= u, 1.0, -1.0)
        return b + p - p.detach()

    def augment(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """One random view of each uint8 image, as float images in [-1, 1] at the backbone's input size."""
        c = self.config
        v = (to_float(images) + 1) / 2  # [0, 1], where the colour transforms are defined
        v = random_resized_crop(v, g, self.net_.backbone.size, c.crop_scale, c.flip)
        v = colour_jitter(v, g, c.jitter_probability, c.brightness, c.contrast, c.saturation, c.hue)
        v = random_grey(v, g, c.grey_probability)
        v = random_blur(v, g, c.blur_probability, c.blur_sigma)
        return v * 2 - 1

    def encode(self, x):
        self.check_fitted("net_")
        return binarize(self.net_.outputs(x), 0.5)


def nt_xent(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """NT-Xent (SimCLR) between the two views' codes: each of the 2N views is classified to its partner among
    the other 2N - 1 by cosine similarity / tau; the mean cross-entropy."""
    z = F.normalize(torch.cat([a, b]), dim=1)
    n = a.shape[0]
    logits = (z @ z.T / tau).fill_diagonal_(-math.inf)
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, partner)


def bernoulli_kl(p: torch.Tensor, q: torch.Tensor, stop_gradient: bool = False, eps: float = 1e-7) -> torch.Tensor:
    """KL(Bern(p) || Bern(q)) summed over the bits, averaged over the batch; ``stop_gradient`` holds q fixed."""
    q = q.detach() if stop_gradient else q
    p, q = p.clamp(eps, 1 - eps), q.clamp(eps, 1 - eps)
    return (p * (p.log() - q.log()) + (1 - p) * ((1 - p).log() - (1 - q).log())).sum(1).mean()


def random_resized_crop(x: torch.Tensor, g: torch.Generator, size: int, scale: float, flip: bool) -> torch.Tensor:
    """Per image a crop of area fraction U(scale, 1) and aspect ratio log-uniform in [3/4, 4/3] (sides clamped
    to the image) at a random position, mirrored with probability 1/2 when ``flip``, resampled to size x size."""
    n = x.shape[0]
    area = scale + (1 - scale) * torch.rand(n, generator=g)
    ratio = torch.exp(math.log(3 / 4) + math.log(16 / 9) * torch.rand(n, generator=g))
    w, h = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)  # fractions of the sides
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * torch.stack([1 - w, 1 - h], 1)  # grid units: inside
    mirror = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0) if flip else torch.ones(n)
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([w * mirror, zero, shift[:, 0]], 1), torch.stack([zero, h, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x), [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def grey(x: torch.Tensor) -> torch.Tensor:
    """Luma (n, 1, h, w) of RGB images in [0, 1]; grey images as they are."""
    if x.shape[1] == 1:
        return x
    return (x * torch.tensor(LUMA, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)


def colour_jitter(
    x: torch.Tensor, g: torch.Generator, p: float, brightness: float, contrast: float, saturation: float, hue: float
) -> torch.Tensor:
    """With probability p per image: brightness (scale), contrast (blend with the mean luma), saturation (blend
    with the luma) by factors U(1 - s, 1 + s), and a hue rotation by U(-hue, hue) of the colour circle."""
    n = x.shape[0]
    apply = (torch.rand(n, generator=g) < p).to(x).view(n, 1, 1, 1)

    def factor(strength):
        return (1 + strength * (torch.rand(n, generator=g) * 2 - 1)).to(x).view(n, 1, 1, 1)

    def blend(image, other, f):
        return (other + f * (image - other)).clamp(0, 1)

    out = (x * factor(brightness)).clamp(0, 1)
    out = blend(out, grey(out).mean((1, 2, 3), keepdim=True), factor(contrast))
    if x.shape[1] == 3:
        out = blend(out, grey(out), factor(saturation))
        out = rotate_hue(out, (torch.rand(n, generator=g) * 2 - 1) * hue)
    return apply * out + (1 - apply) * x


def rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """RGB images rotated in the YIQ chroma plane by ``turns`` (n,) of a full circle each, clamped to [0, 1]."""
    to_yiq = torch.tensor(RGB_TO_YIQ, device=x.device)
    angle = (turns * 2 * math.pi).to(x)
    cos, sin, one, zero = angle.cos(), angle.sin(), torch.ones_like(angle), torch.zeros_like(angle)
    rotation = torch.stack(
        [torch.stack([one, zero, zero], 1), torch.stack([zero, cos, -sin], 1), torch.stack([zero, sin, cos], 1)], 1
    )
    m = torch.linalg.inv(to_yiq) @ rotation @ to_yiq  # (n, 3, 3) in RGB
    return torch.einsum("nij,njhw->nihw", m, x).clamp(0, 1)


def random_grey(x: torch.Tensor, g: torch.Generator, p: float) -> torch.Tensor:
    """With probability p per image, its luma in every channel (RGB only)."""
    n = x.shape[0]
    apply = (torch.rand(n, generator=g) < p).to(x).view(n, 1, 1, 1)
    if x.shape[1] == 1:
        return x
    return apply * grey(x).expand_as(x) + (1 - apply) * x


def random_blur(x: torch.Tensor, g: torch.Generator, p: float, sigma: tuple[float, ...]) -> torch.Tensor:
    """With probability p per image, a 3 x 3 Gaussian blur of sigma U(sigma[0], sigma[-1]) (reflected edges)."""
    n, ch = x.shape[:2]
    apply = torch.rand(n, generator=g) < p
    s = (sigma[0] + (sigma[-1] - sigma[0]) * torch.rand(n, generator=g)).to(x)
    taps = torch.exp(-torch.tensor([1.0, 0.0, 1.0], device=x.device).view(1, 3) / (2 * s.view(n, 1) ** 2))
    taps = taps / taps.sum(1, keepdim=True)
    taps = torch.where(apply.to(x.device).view(n, 1), taps, torch.tensor([0.0, 1.0, 0.0], device=x.device))
    kernel = (taps.view(n, 3, 1) * taps.view(n, 1, 3)).repeat_interleave(ch, 0).unsqueeze(1)  # (n * ch, 1, 3, 3)
    padded = F.pad(x.reshape(1, n * ch, *x.shape[2:]), (1, 1, 1, 1), mode="reflect")
    return F.conv2d(padded, kernel, groups=n * ch).view_as(x)


@hookimpl
def bench_methods():
    return [CIBHash]
