"""HashGAN, unsupervised: Dizaji, Zheng, Sadoghi, Lucey, Huang, "Unsupervised Deep Generative Adversarial Hashing
Network", CVPR 2018.

A generator G(z, b'), a discriminator D and a hash encoder E, where D and E share one trunk (two heads: real/fake
and K sigmoid units t). E learns from real images through the hashing loss (minimum-entropy, uniform-frequency,
consistent and independent bits), from the adversarial game through the shared trunk, and from synthetic images
through the collaborative loss ||E(G(z, b')) - b'||^2 that ties G's random binary input to E's code.
Codes are sign(t - 0.5). The epoch kept is chosen on a validation split carved from the training set.

Sources and choices (../shared/methods.md B.1, C.1-3): the poster gives the losses; the architecture is "similar
to Improved-GAN" (Salimans et al. 2016: MLP nets for grey digits, conv nets for colour images), all loss weights
1 except two chosen on validation (see Config), Adam 3e-4 with beta1 0.5 and batch 100 (Improved-GAN). The
poster's minimum-entropy term has a sign typo (it would maximise entropy); we minimise +H. The independence term
is the K x K Gram matrix of the hash layer (the public port formed the d x d one, which cannot reach I).
"""
from __future__ import annotations

import dataclasses
import math
import typing

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from bench.deep import (BestOf, Checkpoint, batched, bit_entropy, check_finite, epoch_batches, gram_deviation,
                        random_affine, to_float)
from bench.errors import BenchError
from bench.hookspecs import hookimpl
from bench.method import Method, binarize, config_dict

CONV_SIZE = 32  # the conv nets work on 32 x 32 images (CIFAR-10); other sizes are resized on the device


class GaussianNoise(nn.Module):
    """Additive Gaussian noise in training (Improved-GAN's discriminator regulariser)."""

    def __init__(self, sigma: float):
        super().__init__()
        self.sigma = sigma

    def forward(self, x):
        return x + self.sigma * torch.randn_like(x) if self.training and self.sigma > 0 else x


@torch.no_grad()
def data_dependent_init(net: nn.Module, batch: torch.Tensor, scale: float = 1.0) -> None:
    """Weight norm's data-dependent initialisation (Salimans & Kingma 2016; Improved-GAN's ``init_param``): one
    forward pass of ``batch`` sets, layer by layer from the input up, each weight-normed Linear/Conv2d's gain g and
    bias b so that its pre-activations on the batch have mean 0 and standard deviation ``scale`` per unit/channel.
    Each hook returns the rescaled output, so the layers above see the initialised ones below."""
    def hook(module, _inputs, out):
        g, b = module.parametrizations.weight.original0, module.bias
        shape = (1, -1) + (1,) * (out.dim() - 2)  # broadcast per unit (Linear) or per channel (Conv2d)
        direction = (out - b.view(shape)) / g.view(shape)  # x . v / ||v||: the pre-activation with g = 1, b = 0
        dims = [0] + list(range(2, out.dim()))
        mean, gain = direction.mean(dims), scale / (direction.std(dims) + 1e-8)
        g.copy_(gain.view_as(g))
        b.copy_(-mean * gain)
        return (direction - mean.view(shape)) * gain.view(shape)
    layers = [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and hasattr(m, "parametrizations")]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        net(batch)
    finally:
        for h in handles:
            h.remove()


class Heads(nn.Module):
    """The shared trunk with D's real/fake logit and E's K hash logits (poster Fig. 1: D and E share layers)."""

    def __init__(self, trunk: nn.Module, width: int, n_bits: int):
        super().__init__()
        self.trunk, self.real_fake, self.hash = trunk, nn.Linear(width, 1), nn.Linear(width, n_bits)
        self.clusters = None  # Config.cluster_head: a C-way softmax head on the same trunk

    def forward(self, x):
        h = self.trunk(x)
        return h, self.real_fake(h).squeeze(1), self.hash(h)


def mlp_nets(shape, n_in: int, n_bits: int):
    """Improved-GAN's MNIST nets on flattened images: G 500-500 softplus with batch norm; D/E trunk
    1000-500-250-250-250 ReLU with weight norm and additive noise (0.3 on the input, 0.5 on hidden layers)."""
    d = math.prod(shape)
    g = nn.Sequential(nn.Linear(n_in, 500), nn.BatchNorm1d(500), nn.Softplus(),
                      nn.Linear(500, 500), nn.BatchNorm1d(500), nn.Softplus(),
                      weight_norm(nn.Linear(500, d)), nn.Tanh(), nn.Unflatten(1, shape))
    layers, widths = [nn.Flatten(), GaussianNoise(0.3)], [d, 1000, 500, 250, 250, 250]
    for a, b in zip(widths, widths[1:]):
        layers += [weight_norm(nn.Linear(a, b)), nn.ReLU(), GaussianNoise(0.5)]
    return g, Heads(nn.Sequential(*layers[:-1]), 250, n_bits)


def improved_gan_conv_nets(channels: int, n_in: int, n_bits: int):
    """Improved-GAN's CIFAR-10 nets: G fc -> 4x4x512 -> deconv 256, 128, c (batch norm, ReLU, tanh); D/E trunk of
    weight-normed convs 96x3, 192x3 (stride 2 at the end of each), 192 3x3 valid, 192 1x1 x2, lReLU 0.2,
    dropout 0.2/0.5, global average pooling."""
    def up(a, b):
        return [nn.ConvTranspose2d(a, b, 5, 2, 2, output_padding=1), nn.BatchNorm2d(b), nn.ReLU()]
    g = nn.Sequential(nn.Linear(n_in, 4 * 4 * 512), nn.BatchNorm1d(4 * 4 * 512), nn.ReLU(),
                      nn.Unflatten(1, (512, 4, 4)), *up(512, 256), *up(256, 128),
                      weight_norm(nn.ConvTranspose2d(128, channels, 5, 2, 2, output_padding=1)), nn.Tanh())

    def conv(a, b, k=3, stride=1, pad=1):
        return [weight_norm(nn.Conv2d(a, b, k, stride, pad)), nn.LeakyReLU(0.2)]
    trunk = nn.Sequential(nn.Dropout(0.2), *conv(channels, 96), *conv(96, 96), *conv(96, 96, stride=2),
                          nn.Dropout(0.5), *conv(96, 192), *conv(192, 192), *conv(192, 192, stride=2),
                          nn.Dropout(0.5), *conv(192, 192, pad=0), *conv(192, 192, 1, pad=0),
                          *conv(192, 192, 1, pad=0), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return g, Heads(trunk, 192, n_bits)


def dcgan_nets(channels: int, n_in: int, n_bits: int):
    """A DCGAN pair at 32 x 32 (the public port's final choice, said to be more stable)."""
    def up(a, b):
        return [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.ReLU()]
    g = nn.Sequential(nn.Linear(n_in, 4 * 4 * 256), nn.BatchNorm1d(4 * 4 * 256), nn.ReLU(),
                      nn.Unflatten(1, (256, 4, 4)), *up(256, 128), *up(128, 64),
                      nn.ConvTranspose2d(64, channels, 4, 2, 1), nn.Tanh())
    trunk = nn.Sequential(nn.Conv2d(channels, 64, 4, 2, 1), nn.LeakyReLU(0.2),
                          nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
                          nn.Conv2d(128, 256, 4, 2, 1), nn.BatchNorm2d(256), nn.LeakyReLU(0.2), nn.Flatten())
    return g, Heads(trunk, 256 * 4 * 4, n_bits)


PER_BIT_WEIGHTS = ("w_entropy", "w_uniform", "w_consistent", "w_collaborative")  # their terms sum over the K bits


def weights_at(config: dict, n_bits: int) -> dict:
    """The loss weights (w_* fields of a config dict) as they train at ``n_bits`` (Config.weights_for_bits): above
    that length the per-bit ones times s = weights_for_bits / K, the K x K Gram term's times s^2."""
    limit = config["weights_for_bits"]
    s = limit / n_bits if limit and n_bits > limit else 1.0
    weights = {k: config[k] * s for k in PER_BIT_WEIGHTS} | {"w_independent": config["w_independent"] * s * s}
    return {k: float(f"{v:.12g}") for k, v in weights.items()}  # 12 digits: the same float however it was reached


class HashGANDizaji(Method):
    name = "hashgan-dizaji"
    paper = "Dizaji et al., CVPR 2018"
    supervision = "none"
    input = "images"
    uses_validation = True
    smoke = {"epochs": 8, "batch_size": 32}
    # noise_dim 0: G sees b' alone (an ablation); weights_for_bits 0: the weights as given at every length
    zero_allowed = frozenset({"noise_dim", "hash_warmup_epochs", "weights_for_bits"})

    # runs recorded before these fields existed: no data-dependent init, a constant collaborative weight, the
    # weights as given at every code length
    former_defaults = {"data_init": False, "collab_decay_start": 1.0, "weights_for_bits": 0}

    @classmethod
    def effective_config(cls, config: dict, n_bits: int) -> dict:
        """The weights as they train at ``n_bits`` (weights_for_bits folded in), so that a run of the default at
        64 bits and one given the halved weights by hand compare equal."""
        return {**config, **weights_at(config, n_bits), "weights_for_bits": 0}

    @dataclasses.dataclass(frozen=True)
    class Config:
        arch: typing.Literal["improved_gan", "dcgan"] = "improved_gan"  # full paper: "similar to Improved-GAN"
        generator_loss: typing.Literal["feature_matching", "minimax"] = "feature_matching"  # Improved-GAN's recipe
        collab: typing.Literal["l2", "triplet"] = "l2"  # poster: ||E(G(z)) - b'||^2; CVF abstract: a ranking loss
        collab_trains_generator: bool = True  # G must honour b' for the tie to mean anything (not stated)
        # False: E's head no longer learns to read b' from G's images; only G learns to make images that E codes
        # as b'. Why try it: on a trunk trained for 30 epochs (MNIST, 16 bits), a fresh hash head trained on top
        # with the hashing terms alone reached mAP 0.69 in 5 epochs, with the collaborative term as well 0.42. But
        # trained jointly from the start E needs it: 20.6 after 10 epochs against 56.0 (dizaji2018-ablation).
        collab_trains_encoder: bool = True
        use_gan: bool = True  # ablation "no GAN": E alone with the hashing loss
        w_adversarial: float = 1.0  # all weights 1: the full paper uses no loss weighting (methods.md B.1.2)
        # Two weights depart from "all 1", chosen on the validation split (MNIST, 16 bits, 10 epochs, 8 settings;
        # results/runs, issue note): with w_entropy = 1 every output saturates in the first epoch, before the codes
        # carry any structure (validation mAP 0.12, chance 0.10); 0.1 with a near-orthonormal hash layer
        # (w_independent = 100) reached 0.41 and was still rising. At 64 bits these weights can collapse: every t
        # sits at 0.5 from the first epochs (entropy term = K ln 2, collaborative = K/4), where the entropy term has
        # no gradient and the consistent and collaborative terms hold t there, so every code is the same: see
        # weights_for_bits.
        w_entropy: float = 0.1  # minimum-entropy bits
        w_uniform: float = 1.0  # uniform-frequency bits
        w_consistent: float = 1.0  # consistent bits
        w_independent: float = 100.0  # independent bits
        # With data_init, 0.3 stops the codes' late fall: at 1, from epoch 12 to 30 the trunk's features kept
        # improving while E's codes worsened, as the term ties them to whatever G makes of b' (issue note). MNIST,
        # 16 bits, 30 epochs, seeds 0-2: mAP 64.0 / 82.9 / 64.2 at 0.3, against 57.6 for seed 0 at 1
        # (dizaji2018-table1); letting the weight fade (collab_decay_start) does better at 1 or 0.3.
        w_collaborative: float = 1.0  # collaborative loss
        # The weights above hold for codes of up to this many bits. For longer codes the per-bit terms (entropy,
        # uniform, consistent, collaborative: sums over the K bits) are multiplied by weights_for_bits / K and the
        # K x K Gram term by its square, so that their push on the trunk shared with D, against the adversarial
        # loss, stays what it is at weights_for_bits. Why: with data_init, MNIST at 64 bits collapsed to one code
        # under the weights as given (mAP 10.0, chance); with the fading collaborative weight as well, 16/K (x1/4)
        # reached 87.8 / 90.6 (seeds 0-1), 32/K (x1/2) 94.7 / 89.3 / 89.7 (seeds 0-2; the paper: 93.9). 32: at 16
        # and 32 bits the weights as given reach the paper. 0: as given at every length (the paper's literal
        # reading).
        weights_for_bits: int = 32
        # From this fraction of the epochs on, w_collaborative falls linearly towards 0 at the end, as the rate
        # does under lr_decay_start. Why: E needs the term early (without it 17 after 10 epochs against 56), yet
        # late in training it pulls E's head away from the codes its trunk supports. With data_init, 0.34 (the
        # weight falls from epoch 12 to about 1/20 at epoch 30) gave MNIST 16-bit mAP 89.5 / 94.3 / 89.6 on seeds
        # 0-2, the paper's 91.1 on average (dizaji2018-table1); most of the gain comes in the last epochs, as the
        # weight nears 0. 1: constant (the paper gives no schedule; our runs before this default: 42.1 / 47.6 /
        # 23.9 mAP at 16 / 32 / 64 bits, with data_init false).
        collab_decay_start: float = 0.34
        # Improved-GAN's uniform noise size. With 10, G has less room for variation outside b', E's codes
        # hold more class information, and validation and test mAP rose at 16 bits on all 3 seeds
        # (dizaji2018-ablation, issue note); not yet the default: the paper-table cells were run at 100.
        noise_dim: int = 100
        epochs: int = 30  # at most (not published); the epoch kept is chosen on the validation split
        select_every: int = 1  # epochs between validation checks
        batch_size: int = 100  # Improved-GAN
        lr: float = 3e-4  # Improved-GAN (Adam)
        beta1: float = 0.5  # Improved-GAN (Adam)
        # From this fraction of the epochs on, the rate falls linearly towards 0 at the end (set per epoch). 1 keeps
        # it constant (Improved-GAN's MNIST script over its 300 epochs); its CIFAR-10 script decays over the last
        # third (2/3). Not published for HashGAN.
        lr_decay_start: float = 1.0
        # Improved-GAN starts its weight-normed D from a data-dependent initialisation (every layer's
        # pre-activations standardised on 500 training images; see data_dependent_init). Torch's default leaves the
        # MLP trunk's activations 13 times smaller at its top than at its first layer, so E's first outputs hardly
        # differ between images; with it, MNIST 16-bit mAP after 10 epochs rose from 37 to 57 (3 seeds,
        # dizaji2018-ablation). Improved-GAN's MNIST rate (3e-3) still collapses here.
        data_init: bool = True
        # Epochs of adversarial training alone before the hashing and collaborative terms join (the public port:
        # the first 10 % of its epochs), so that they start on features D has already learnt. 0: from the first
        # step (the paper says nothing of a warm-up). The epoch kept is chosen among the epochs after it.
        hash_warmup_epochs: int = 0
        # Improved-GAN encodes its test images with a running average of D's weights (a = a + 1e-4 (w - a) each
        # step, over 300 epochs). 0 encodes with the last weights; e.g. 0.999 encodes with an exponential moving
        # average of the shared trunk and both heads (torch's AveragedModel), which smooths the adversarial game's
        # step-to-step swings out of the codes. Off by default: the paper does not say.
        average_decay: float = 0.0
        # Consistent bits: how the perturbed copy x~ is made (not published). "affine": a small random rotation and
        # translation (the port's reading); "vat": the virtual adversarial step of IMSAT (Hu et al., ICML 2017),
        # whose hashing objective HashGAN's entropy, frequency and consistency terms restate: x~ = x + eps * the
        # unit direction along which E's outputs change most (one power iteration from a random direction).
        perturbation: typing.Literal["affine", "vat"] = "affine"
        # IMSAT sets eps per image to 0.25 x its distance to the 10th nearest neighbour; on MNIST's training set in
        # [-1, 1] that distance has median 10.3 (1,000 images), hence one fixed 2.5 (L2 over the image).
        vat_eps: float = 2.5
        vat_xi: float = 1.0  # size of the probe step that finds the direction
        augment_degrees: float = 10.0  # perturbation="affine": rotation (the port: +-10 degrees)
        augment_translate: float = 0.1  # and translation (the port: +-10 %)
        augment_flip: bool = False  # horizontal flips: wrong for digits; try on natural images
        triplet_margin: float = 1.0  # collab="triplet" only
        # Clustering protocols only. How the paper turns codes into clusters is not published (methods.md B.1.4):
        # by default the runner runs k-means on the codes, as for every method; True adds a softmax head with one
        # unit per cluster on the shared trunk, trained with the two hashing terms that carry over (confident
        # assignments: minimum entropy; balanced clusters: uniform frequency), the DEPICT/RIM objective of the
        # same first author, and clusters are its argmax.
        cluster_head: bool = False
        w_cluster: float = 1.0  # weight of that head's loss

        def __post_init__(self):  # checked when the config is made: bench run fails before loading any data
            name = HashGANDizaji.name
            if not 0 <= self.average_decay < 1:  # 1 would freeze the average at the first step; above 1 diverges
                raise BenchError(f"{name}: average_decay={self.average_decay} must be in [0, 1) (0: no average)")
            for field in ("lr_decay_start", "collab_decay_start"):
                if not 0 < getattr(self, field) <= 1:
                    raise BenchError(f"{name}: {field}={getattr(self, field)} must be in (0, 1] (1: no decay)")
            if self.hash_warmup_epochs and not (self.use_gan and self.hash_warmup_epochs < self.epochs):
                raise BenchError(f"{name}: hash_warmup_epochs={self.hash_warmup_epochs} needs use_gan=true and "
                                 f"must be below epochs={self.epochs} (0: no warm-up)")

    def _nets(self, shape):
        c = self.config
        n_in = c.noise_dim + self.n_bits
        if c.arch == "dcgan":
            return dcgan_nets(shape[0], n_in, self.n_bits)
        if shape[0] == 1:
            return mlp_nets(shape, n_in, self.n_bits)
        return improved_gan_conv_nets(shape[0], n_in, self.n_bits)

    def _images(self, x):
        """uint8 -> [-1, 1]; conv nets see 32 x 32."""
        conv = self.config.arch == "dcgan" or x.shape[1] != 1
        return to_float(x, CONV_SIZE if conv else None)

    def _sample_inputs(self, n, g):
        """z = [uniform noise; b'] with b' ~ Bernoulli(1/2)^K: G is conditioned on random binary codes."""
        noise = torch.rand(n, self.config.noise_dim, generator=g)
        bits = (torch.rand(n, self.n_bits, generator=g) < 0.5).float()
        return torch.cat([noise, bits], 1).to(self.device), bits.to(self.device)

    def _virtual_adversarial(self, real, g):
        """IMSAT's perturbed copy: real + vat_eps along the unit direction that most changes E's outputs t, found
        by one power iteration (VAT, Miyato et al.). The noise layers are off while probing, so the direction is
        the net's sensitivity, not a difference of two noise draws."""
        c = self.config

        def unit(v):  # each image's perturbation scaled to L2 norm 1
            return F.normalize(v.flatten(1), dim=1).view_as(v)
        self.heads_.eval()
        with torch.no_grad():
            t = self._bit_probabilities(real)
        probe = (c.vat_xi * unit(torch.randn(real.shape, generator=g).to(real.device))).requires_grad_()
        change = ((self._bit_probabilities(real + probe) - t) ** 2).sum()
        direction, = torch.autograd.grad(change, probe)
        self.heads_.train()
        return (real + c.vat_eps * unit(direction)).detach()

    def _bit_probabilities(self, images, heads=None):
        """E's sigmoid outputs t in [0, 1]^K for images already in [-1, 1] (see _images); ``heads``: the trained
        nets by default, or the averaged ones (see _encoder)."""
        return torch.sigmoid((self.heads_ if heads is None else heads)(images)[2])

    def _encoder(self):
        """The nets that encode: the weight average with ``average_decay``, the trained ones otherwise."""
        return self.average_.module if self.average_ is not None else self.heads_

    def _collaborative(self, t_fake, bits, g):
        """Eq. collaborative: the code E gives a synthetic image should be the binary input it was made from."""
        if self.config.collab == "l2":
            return ((t_fake - bits) ** 2).sum(1).mean()
        # Ranking reading of the CVF abstract: t_fake closer to its own b' than to another sample's b'.
        other = bits[torch.randperm(bits.shape[0], generator=g).to(bits.device)]
        pos, neg = ((t_fake - bits) ** 2).sum(1), ((t_fake - other) ** 2).sum(1)
        return F.relu(self.config.triplet_margin + pos - neg).mean()

    def _hashing_loss(self, t, t_aug):
        """The four hashing terms on E's sigmoid outputs t (n, K) of real images and t_aug of perturbed copies."""
        w = self.weights_
        entropy = bit_entropy(t).sum(1).mean()  # minimum-entropy bits: +H (the poster prints -H, a sign typo)
        uniform = -bit_entropy(t.mean(0)).sum()  # uniform-frequency bits: maximise H of each bit's frequency
        consistent = ((t - t_aug) ** 2).sum(1).mean()  # consistent bits: E(x) vs E(perturbed x)
        # independent bits on the hash layer (K, d): the K x K Gram matrix (the port's d x d form cannot reach I)
        independent = gram_deviation(self.heads_.hash.weight)
        terms = {"entropy": entropy, "uniform": uniform, "consistent": consistent, "independent": independent}
        total = (w["w_entropy"] * entropy + w["w_uniform"] * uniform + w["w_consistent"] * consistent
                 + w["w_independent"] * independent)
        return total, terms

    def fit(self, x, y=None, validation=None):
        c, g = self.config, self.generator()
        self.weights_ = weights_at(config_dict(c), self.n_bits)
        torch.manual_seed(self.seed)  # initialisation, dropout and noise layers
        shape = tuple(self._images(x[:1]).shape[1:])
        generator, heads = self._nets(shape)
        if c.cluster_head:
            if self.n_clusters is None:
                raise BenchError(f"{self.name}: cluster_head=true needs a clustering protocol (the number of "
                                 f"clusters); choices: digits-clustering, mnist, usps")
            heads.clusters = nn.Linear(heads.real_fake.in_features, self.n_clusters)
        self.generator_, self.heads_ = generator.to(self.device), heads.to(self.device)
        modules = {"generator": self.generator_, "heads": self.heads_}
        self.average_ = None
        if c.average_decay:  # the first update copies the weights, so the average does not start from zeros
            self.average_ = AveragedModel(self.heads_, multi_avg_fn=get_ema_multi_avg_fn(c.average_decay),
                                          use_buffers=True)
            modules["average"] = self.average_
        opt_de = torch.optim.Adam(self.heads_.parameters(), lr=c.lr, betas=(c.beta1, 0.999))
        opt_g = torch.optim.Adam(self.generator_.parameters(), lr=c.lr, betas=(c.beta1, 0.999))
        best, log, start = BestOf(), [], 0
        checkpoint = Checkpoint(self.checkpoint_path)
        if (state := checkpoint.load(self.device)) is not None:  # resume an interrupted run of this cell
            for k, m in modules.items():
                m.load_state_dict(state["modules"][k])
            opt_de.load_state_dict(state["opt_de"])
            opt_g.load_state_dict(state["opt_g"])
            g.set_state(state["rng"])
            torch.set_rng_state(state["torch_rng"])
            best.score, best.epoch, best.state, log, start = (state["best_score"], state["best_epoch"],
                                                              state["best_state"], state["log"], state["epoch"])
        elif c.data_init:  # Improved-GAN's init_param (a fresh run only): 500 training images, noise layers on
            first = torch.randperm(x.shape[0], generator=g)[:500].to(x.device)
            data_dependent_init(self.heads_.trunk.train(), self._images(x[first]))
        step = start * math.ceil(x.shape[0] / c.batch_size)
        for epoch in range(start, c.epochs):
            # from the epoch alone, so a resumed run gets the same rates and weights
            lr = c.lr * self._decay(epoch, c.lr_decay_start)
            w_collaborative = self.weights_["w_collaborative"] * self._decay(epoch, c.collab_decay_start)
            for group in opt_de.param_groups + opt_g.param_groups:
                group["lr"] = lr
            self.generator_.train()
            self.heads_.train()
            sums = {}
            batches = epoch_batches(x.shape[0], c.batch_size, g, x.device)
            hashing_on = epoch >= c.hash_warmup_epochs
            for idx in batches:
                real = self._images(x[idx])
                n = real.shape[0]
                # ---- D/E step: adversarial (D head) + hashing (E head, real images) + collaborative (fakes)
                feat_real, logit_real, hash_real = self.heads_(real)
                loss_de, terms = 0.0, {}
                if hashing_on:
                    perturbed = (self._virtual_adversarial(real, g) if c.perturbation == "vat" else
                                 random_affine(real, g, c.augment_degrees, c.augment_translate, c.augment_flip))
                    loss_de, terms = self._hashing_loss(torch.sigmoid(hash_real), self._bit_probabilities(perturbed))
                if c.cluster_head and hashing_on:  # confident (min H of each assignment), balanced (max H of mean)
                    p = F.softmax(self.heads_.clusters(feat_real), 1)
                    terms["cluster"] = ((-p * torch.log(p + 1e-8)).sum(1).mean()
                                        + (p.mean(0) * torch.log(p.mean(0) + 1e-8)).sum())
                    loss_de = loss_de + c.w_cluster * terms["cluster"]
                if c.use_gan:
                    z, bits = self._sample_inputs(n, g)
                    fake = self.generator_(z).detach()
                    _, logit_fake, hash_fake = self.heads_(fake)
                    adversarial = (F.binary_cross_entropy_with_logits(logit_real, torch.ones_like(logit_real))
                                   + F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake)))
                    loss_de = loss_de + c.w_adversarial * adversarial
                    terms["adversarial"] = adversarial
                    if hashing_on:
                        terms["collaborative"] = self._collaborative(torch.sigmoid(hash_fake), bits, g)
                        if c.collab_trains_encoder:
                            loss_de = loss_de + w_collaborative * terms["collaborative"]
                opt_de.zero_grad(set_to_none=True)
                loss_de.backward()
                opt_de.step()
                if self.average_ is not None:
                    self.average_.update_parameters(self.heads_)
                # ---- G step: fool D (feature matching or non-saturating minimax) and honour b'
                if c.use_gan:
                    z, bits = self._sample_inputs(n, g)
                    fake = self.generator_(z)
                    feat_fake, logit_fake, hash_fake = self.heads_(fake)
                    if c.generator_loss == "feature_matching":
                        with torch.no_grad():
                            feat_real = self.heads_(real)[0]
                        loss_g = ((feat_real.mean(0) - feat_fake.mean(0)) ** 2).sum()
                    else:
                        loss_g = F.binary_cross_entropy_with_logits(logit_fake, torch.ones_like(logit_fake))
                    if c.collab_trains_generator and hashing_on:
                        loss_g = loss_g + w_collaborative * self._collaborative(torch.sigmoid(hash_fake), bits, g)
                    opt_g.zero_grad(set_to_none=True)
                    loss_g.backward()
                    opt_g.step()
                    terms["generator"] = loss_g
                step += 1
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v.detach()
            check_finite(self.name, step, **sums)
            entry = {"epoch": epoch + 1, "lr": lr,
                     **({"w_collaborative": w_collaborative} if c.collab_decay_start < 1 and hashing_on else {}),
                     **{k: round(float(v) / len(batches), 5) for k, v in sums.items()}}
            checked = (epoch + 1) % c.select_every == 0 or epoch + 1 == c.epochs
            if hashing_on and validation is not None and checked:
                entry["validation_map"] = round(validation.score(self.encode), 5)
            if hashing_on and (validation is None or "validation_map" in entry):
                best.offer(epoch + 1, entry.get("validation_map"), modules)
            log.append(entry)
            checkpoint.save({"modules": {k: m.state_dict() for k, m in modules.items()},
                             "opt_de": opt_de.state_dict(), "opt_g": opt_g.state_dict(), "rng": g.get_state(),
                             "torch_rng": torch.get_rng_state(), "best_score": best.score,
                             "best_epoch": best.epoch, "best_state": best.state, "log": log, "epoch": epoch + 1})
        best.restore(modules)
        selection = (f"highest mAP on the validation split ({validation.describe()}), checked every "
                     f"{c.select_every} epoch(s)" if validation is not None else "last epoch (no validation)")
        if c.hash_warmup_epochs:
            selection += f", after {c.hash_warmup_epochs} adversarial-only epoch(s)"
        self.training_ = {"epochs_run": c.epochs, "kept_epoch": best.epoch, "resumed_from_epoch": start,
                          "selection": selection, "log": log}
        return self

    def _decay(self, epoch: int, start: float) -> float:
        """1 before ``start`` x epochs, then falling linearly to 1/(decayed epochs) at the last epoch."""
        epochs = self.config.epochs
        if start >= 1:
            return 1.0
        return min(1.0, (epochs - epoch) / (epochs * (1 - start)))

    @torch.no_grad()
    def _t(self, x):
        """E's sigmoid outputs t in [0, 1]^K."""
        self.check_fitted("heads_")
        heads = self._encoder().eval()
        return batched(lambda part: self._bit_probabilities(self._images(part), heads), x)

    def encode(self, x):
        return binarize(self._t(x), 0.5)  # b = sign(t - 0.5)

    @torch.no_grad()
    def cluster(self, x):
        """With ``cluster_head``: the argmax of the softmax head; otherwise None (k-means on the codes)."""
        if not self.config.cluster_head:
            return None
        self.check_fitted("heads_")
        heads = self._encoder().eval()
        return batched(lambda part: heads.clusters(heads(self._images(part))[0]).argmax(1), x)

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """n synthetic images in [-1, 1] from random binary inputs (for the sample grid figure)."""
        self.check_fitted("generator_")
        self.generator_.eval()
        z, _ = self._sample_inputs(n, torch.Generator().manual_seed(seed))
        return self.generator_(z)


@hookimpl
def bench_methods():
    return [HashGANDizaji]
