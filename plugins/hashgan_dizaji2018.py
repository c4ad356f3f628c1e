"""HashGAN, unsupervised: Ghasedi Dizaji, Zheng, Sadoughi Nourabadi, Yang, Deng, Huang, "Unsupervised Deep
Generative Adversarial Hashing Network", CVPR 2018.

A generator G(z, b'), a discriminator D and a hash encoder E, where D and E share one trunk (two heads: real/fake
and K sigmoid units t). E learns from real images through the hashing loss (minimum-entropy, uniform-frequency,
consistent and independent bits), from the adversarial game through the shared trunk, and from synthetic images
through the collaborative loss ||E(G(z, b')) - b'||^2 that ties G's random binary input to E's code.
Codes are sign(t - 0.5). The epoch kept is chosen on a validation split carved from the training set.

The paper publishes neither its nets nor its schedule. The nets are Improved-GAN's, which it names as similar
(Salimans et al. 2016: MLPs for grey digits, conv nets for colour images), with Adam 3e-4, beta1 0.5, batch 100.
docs/hashgan-dizaji2018.md describes the losses, every departure from the paper and the runs behind the defaults
that are not the paper's.
The poster's minimum-entropy term has a sign typo (it would maximise entropy); we minimise +H. The independence
term is the K x K Gram matrix of the hash layer (the public port formed the d x d one, which cannot reach I).
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

from bench.deep import (
    BestOf,
    Checkpoint,
    LossLog,
    batched,
    bit_entropy,
    epoch_batches,
    gram_deviation,
    random_affine,
    to_float,
)
from bench.errors import BenchError
from bench.hookspecs import hookimpl
from bench.method import FitContext, Method, binarize, config_dict, setting

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
    g = nn.Sequential(
        nn.Linear(n_in, 500),
        nn.BatchNorm1d(500),
        nn.Softplus(),
        nn.Linear(500, 500),
        nn.BatchNorm1d(500),
        nn.Softplus(),
        weight_norm(nn.Linear(500, d)),
        nn.Tanh(),
        nn.Unflatten(1, shape),
    )
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

    g = nn.Sequential(
        nn.Linear(n_in, 4 * 4 * 512),
        nn.BatchNorm1d(4 * 4 * 512),
        nn.ReLU(),
        nn.Unflatten(1, (512, 4, 4)),
        *up(512, 256),
        *up(256, 128),
        weight_norm(nn.ConvTranspose2d(128, channels, 5, 2, 2, output_padding=1)),
        nn.Tanh(),
    )

    def conv(a, b, k=3, stride=1, pad=1):
        return [weight_norm(nn.Conv2d(a, b, k, stride, pad)), nn.LeakyReLU(0.2)]

    trunk = nn.Sequential(
        nn.Dropout(0.2),
        *conv(channels, 96),
        *conv(96, 96),
        *conv(96, 96, stride=2),
        nn.Dropout(0.5),
        *conv(96, 192),
        *conv(192, 192),
        *conv(192, 192, stride=2),
        nn.Dropout(0.5),
        *conv(192, 192, pad=0),
        *conv(192, 192, 1, pad=0),
        *conv(192, 192, 1, pad=0),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return g, Heads(trunk, 192, n_bits)


def dcgan_nets(channels: int, n_in: int, n_bits: int):
    """A DCGAN pair at 32 x 32 (the public port's final choice, said to be more stable)."""

    def up(a, b):
        return [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.ReLU()]

    g = nn.Sequential(
        nn.Linear(n_in, 4 * 4 * 256),
        nn.BatchNorm1d(4 * 4 * 256),
        nn.ReLU(),
        nn.Unflatten(1, (256, 4, 4)),
        *up(256, 128),
        *up(128, 64),
        nn.ConvTranspose2d(64, channels, 4, 2, 1),
        nn.Tanh(),
    )
    trunk = nn.Sequential(
        nn.Conv2d(channels, 64, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, 4, 2, 1),
        nn.BatchNorm2d(128),
        nn.LeakyReLU(0.2),
        nn.Conv2d(128, 256, 4, 2, 1),
        nn.BatchNorm2d(256),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
    )
    return g, Heads(trunk, 256 * 4 * 4, n_bits)


PER_BIT_WEIGHTS = ("w_entropy", "w_uniform", "w_consistent", "w_collaborative")  # their terms sum over the K bits


def weights_at(config: dict, n_bits: int) -> dict:
    """The loss weights (w_* fields of a config dict) as they train at ``n_bits`` (Config.weights_for_bits): above
    that length the per-bit ones times s = weights_for_bits / K, the K x K Gram term's times s^2."""
    limit = config["weights_for_bits"]
    s = limit / n_bits if limit and n_bits > limit else 1.0
    weights = {k: config[k] * s for k in PER_BIT_WEIGHTS} | {"w_independent": config["w_independent"] * s * s}
    return {k: float(f"{v:.12g}") for k, v in weights.items()}  # 12 digits: the same float however it was reached


# The recipe before data-dependent init, the fading collaborative weight and the code-length weights became the
# default: torch's initialisation, a constant collaborative weight, the weights as given at every code length.
FIRST_RECIPE = {"data_init": False, "collab_decay_start": 1.0, "weights_for_bits": 0}


class EpochPlan(typing.NamedTuple):
    """One epoch's schedule, computed from the epoch number alone so that a resumed run gets the same one."""

    lr: float
    w_collaborative: float
    hashing_on: bool  # past hash_warmup_epochs: the hashing and collaborative terms train


@dataclasses.dataclass
class TrainingState:
    """What a fit carries from batch to batch, and saves at the end of each epoch."""

    rng: torch.Generator  # the method's generator: batch order, G's inputs, perturbations
    modules: dict  # name -> module: what a checkpoint and the best epoch keep
    opt_de: torch.optim.Optimizer  # the shared D/E trunk and its heads
    opt_g: torch.optim.Optimizer
    log: LossLog
    best: BestOf = dataclasses.field(default_factory=BestOf)
    start: int = 0  # the first epoch this fit runs (> 0 when resumed from a checkpoint)
    step: int = 0  # batches trained, to say where a loss diverged


class HashGANDizaji(Method):
    name = "hashgan-dizaji"
    paper = "Dizaji et al., CVPR 2018"
    supervision = "none"
    input = "images"
    uses_validation = True
    smoke = {"epochs": 3, "batch_size": 64}
    recipes = {
        "first-recipe": FIRST_RECIPE,  # the first runs, kept in the tables as history
        "ablation": {**FIRST_RECIPE, "epochs": 10},  # the base of the dizaji2018-ablation table (one change a row)
        "cpu-reduced": {"epochs": 10},  # the reduced schedule of CPU-only runs
        "50-epochs": {"epochs": 50},  # 64 bits, where the validation mAP was still rising at epoch 30
        "300-epochs": {"epochs": 300},  # USPS clustering: 30 epochs of its 2,007 images are only 630 steps
        "dcgan-5-epochs": {**FIRST_RECIPE, "arch": "dcgan", "epochs": 5},  # the CIFAR-10 CPU runs, DCGAN pair
    }

    @classmethod
    def resolve_config(cls, config, n_bits: int):
        """The weights as they train at ``n_bits`` (see weights_for_bits), with weights_for_bits 0 ("the weights
        as given"), so resolving twice changes nothing and a record stores the weights that trained."""
        return dataclasses.replace(config, **weights_at(config_dict(config), n_bits), weights_for_bits=0)

    @dataclasses.dataclass(frozen=True)
    class Config:
        arch: typing.Literal["improved_gan", "dcgan"] = "improved_gan"  # the full paper: "similar to Improved-GAN"
        generator_loss: typing.Literal["feature_matching", "minimax"] = "feature_matching"  # Improved-GAN's recipe
        collab: typing.Literal["l2", "triplet"] = "l2"  # poster: ||E(G(z)) - b'||^2; CVF abstract: a ranking loss
        collab_trains_generator: bool = True  # G must honour b' for the tie to mean anything (not stated)
        # False: only G learns from the collaborative term, for when it pulls E's codes away from what the trunk
        # supports (E needs it while the trunk is young: docs/hashgan-dizaji2018.md)
        collab_trains_encoder: bool = True
        use_gan: bool = True  # ablation "no GAN": E alone with the hashing loss
        w_adversarial: float = setting(1.0, at_least=0)  # the full paper weights every term 1
        # Two weights depart from "all 1", chosen on the validation split: with w_entropy 1 every output saturates
        # before the codes carry any structure; a near-orthonormal hash layer (w_independent 100) helps
        w_entropy: float = setting(0.1, at_least=0)  # minimum-entropy bits
        w_uniform: float = setting(1.0, at_least=0)  # uniform-frequency bits
        w_consistent: float = setting(1.0, at_least=0)  # consistent bits
        w_independent: float = setting(100.0, at_least=0)  # independent bits
        w_collaborative: float = setting(1.0, at_least=0)  # collaborative loss (see collab_decay_start)
        # The weights above hold for codes of up to this many bits; longer codes scale the per-bit terms by
        # weights_for_bits / K and the K x K Gram term by its square, so that the hashing loss presses on the trunk
        # shared with D as at this length (as given, 64-bit codes can collapse to one code). 0: as given.
        weights_for_bits: int = setting(32, at_least=0)
        # From this fraction of the epochs on, w_collaborative falls linearly towards 0 at the end (as the rate
        # under lr_decay_start): E needs the term early, but late it ties E's codes to whatever G makes of b'.
        # 1: constant (the paper gives no schedule)
        collab_decay_start: float = setting(0.34, above=0, at_most=1)
        # Improved-GAN's uniform noise beside b' (10 did better at 16 bits: see the docs page); 0: G sees b' alone
        noise_dim: int = setting(100, at_least=0)
        epochs: int = 30  # at most (not published); the epoch kept is chosen on the validation split
        select_every: int = 1  # epochs between validation checks
        batch_size: int = 100  # Improved-GAN
        lr: float = setting(3e-4, at_least=0)  # Improved-GAN (Adam); 0 freezes every net (the initial trunk kept)
        beta1: float = setting(0.5, at_least=0, below=1)  # Improved-GAN (Adam)
        # From this fraction of the epochs on, the rate falls linearly towards 0 at the end (not published for
        # HashGAN). 1: constant, as Improved-GAN's MNIST script; its CIFAR-10 script decays over the last third
        lr_decay_start: float = setting(1.0, above=0, at_most=1)
        # Improved-GAN's data-dependent init of the weight-normed D/E trunk (see data_dependent_init): from torch's
        # default the MLP trunk's activations shrink layer by layer, so E's first outputs hardly differ by image
        data_init: bool = True
        # Epochs of adversarial training alone before the hashing and collaborative terms join, so that they start
        # on features D has learnt (the public port: the first 10 %). 0: from the first step, as far as the paper says
        hash_warmup_epochs: int = setting(0, at_least=0)
        # > 0: encode with an exponential moving average of D/E's weights (Improved-GAN encodes with one), which
        # smooths the adversarial game's step-to-step swings out of the codes. 0: the last weights (not published)
        average_decay: float = setting(0.0, at_least=0, below=1)  # 1 would freeze the average at the first step
        # How the perturbed copy for consistent bits is made (not published). "affine": a small random rotation and
        # translation (the public port); "vat": IMSAT's virtual adversarial step (Hu et al., ICML 2017), whose
        # objective HashGAN's entropy, frequency and consistency terms restate
        perturbation: typing.Literal["affine", "vat"] = "affine"
        # IMSAT: a quarter of each image's distance to its 10th nearest neighbour, about 10 on MNIST in [-1, 1] (L2)
        vat_eps: float = setting(2.5, at_least=0)
        vat_xi: float = setting(1.0, above=0)  # size of the probe step that finds the direction (0: no direction)
        # perturbation="affine": rotation (the port: +-10 degrees)
        augment_degrees: float = setting(10.0, at_least=0, at_most=180)
        augment_translate: float = setting(0.1, at_least=0, at_most=1)  # and translation (the port: +-10 % of the size)
        augment_flip: bool = False  # horizontal flips: wrong for digits; try on natural images
        triplet_margin: float = setting(1.0, at_least=0)  # collab="triplet" only
        # Clustering protocols only; the paper does not say how it clusters. False: the runner's k-means on the
        # codes, as for every method. True: a softmax head, one unit per cluster, on the shared trunk, trained for
        # confident and balanced assignments (the RIM/DEPICT objective of the same first author); clusters = argmax
        cluster_head: bool = False
        w_cluster: float = setting(1.0, at_least=0)  # weight of that head's loss

        def __post_init__(self):  # checked when the config is made: bench run fails before loading any data
            name = HashGANDizaji.name
            if self.hash_warmup_epochs and not (self.use_gan and self.hash_warmup_epochs < self.epochs):
                raise BenchError(
                    f"{name}: hash_warmup_epochs={self.hash_warmup_epochs} needs use_gan=true and "
                    f"must be below epochs={self.epochs} (0: no warm-up)"
                )

    # ---- training: fit and its steps (every step reads ``config_``, the config as it trains at n_bits)

    def fit(self, x, y=None, context=FitContext()):
        """Train on the images ``x`` (no labels) and keep the epoch with the best mAP on ``context.validation``
        (the last epoch without one), resuming from ``context.checkpoint`` when it holds an interrupted run."""
        self.config_ = type(self).resolve_config(self.config, self.n_bits)
        state = self._build(x, context.n_clusters)
        checkpoint = Checkpoint(context.checkpoint)
        self._resume_or_initialise(state, checkpoint, x)
        for epoch in range(state.start, self.config_.epochs):
            entry = self._epoch(state, x, epoch)
            self._keep_best(state, epoch, entry, context.validation)
            checkpoint.save(self._checkpoint(state, epoch + 1))
        state.best.restore(state.modules)
        self.training_ = self._training_record(state, context.validation)
        return self

    def _build(self, x, n_clusters: int | None) -> TrainingState:
        """G and the D/E trunk with its heads (and the cluster head), the weight average, Adam for each side."""
        c = self.config_
        generator, heads = self._nets(tuple(self._images(x[:1]).shape[1:]))
        if c.cluster_head:
            if n_clusters is None:
                raise BenchError(
                    f"{self.name}: cluster_head=true needs a clustering protocol (the number of "
                    f"clusters); choices: digits-clustering, mnist, usps"
                )
            heads.clusters = nn.Linear(heads.real_fake.in_features, n_clusters)
        self.generator_, self.heads_ = generator.to(self.device), heads.to(self.device)
        modules = {"generator": self.generator_, "heads": self.heads_}
        self.average_ = None
        if c.average_decay:  # the first update copies the weights, so the average does not start from zeros
            self.average_ = modules["average"] = AveragedModel(
                self.heads_, multi_avg_fn=get_ema_multi_avg_fn(c.average_decay), use_buffers=True
            )

        def adam(net):
            return torch.optim.Adam(net.parameters(), lr=c.lr, betas=(c.beta1, 0.999))

        return TrainingState(self.generator(), modules, adam(self.heads_), adam(self.generator_), LossLog(self.name))

    def _resume_or_initialise(self, state: TrainingState, checkpoint: Checkpoint, x) -> None:
        """Continue an interrupted run of this cell from its checkpoint, or start afresh: with data_init, from
        Improved-GAN's data-dependent init of the trunk on 500 training images (noise layers on)."""
        if (saved := checkpoint.load(self.device)) is not None:
            for k, m in state.modules.items():
                m.load_state_dict(saved["modules"][k])
            state.opt_de.load_state_dict(saved["opt_de"])
            state.opt_g.load_state_dict(saved["opt_g"])
            state.rng.set_state(saved["rng"])
            torch.set_rng_state(saved["torch_rng"])
            state.best.score, state.best.epoch, state.best.state = (
                saved["best_score"],
                saved["best_epoch"],
                saved["best_state"],
            )
            state.log.entries, state.start = saved["log"], saved["epoch"]
        elif self.config_.data_init:
            first = torch.randperm(x.shape[0], generator=state.rng)[:500].to(x.device)
            data_dependent_init(self.heads_.trunk.train(), self._images(x[first]))
        state.step = state.start * math.ceil(x.shape[0] / self.config_.batch_size)

    def _plan(self, epoch: int) -> EpochPlan:
        c = self.config_
        return EpochPlan(
            lr=c.lr * self._decay(epoch, c.lr_decay_start),
            w_collaborative=c.w_collaborative * self._decay(epoch, c.collab_decay_start),
            hashing_on=epoch >= c.hash_warmup_epochs,
        )

    def _decay(self, epoch: int, start: float) -> float:
        """1 before ``start`` x epochs, then falling linearly to 1/(decayed epochs) at the last epoch."""
        epochs = self.config_.epochs
        if start >= 1:
            return 1.0
        return min(1.0, (epochs - epoch) / (epochs * (1 - start)))

    def _epoch(self, state: TrainingState, x, epoch: int) -> dict:
        """One pass over ``x`` in shuffled batches, a D/E step then a G step on each; returns the log entry."""
        c, plan = self.config_, self._plan(epoch)
        for group in state.opt_de.param_groups + state.opt_g.param_groups:
            group["lr"] = plan.lr
        self.generator_.train()
        self.heads_.train()
        for idx in epoch_batches(x.shape[0], c.batch_size, state.rng, x.device):
            real = self._images(x[idx])
            terms = self._discriminator_encoder_step(state, real, plan)
            if c.use_gan:
                terms["generator"] = self._generator_step(state, real, plan)
            state.step += 1
            state.log.add(**terms)
        fields = {"epoch": epoch + 1, "lr": plan.lr}
        if c.collab_decay_start < 1 and plan.hashing_on:
            fields["w_collaborative"] = plan.w_collaborative
        return state.log.close(state.step, c.epochs, **fields)

    def _discriminator_encoder_step(self, state: TrainingState, real, plan: EpochPlan) -> dict:
        """One Adam step of the shared trunk and its heads: the adversarial loss (D), the hashing loss on real
        images and the collaborative loss on synthetic ones (E), and the cluster head's loss. Returns the terms."""
        c = self.config_
        features, logit_real, hash_real = self.heads_(real)
        loss, terms = 0.0, {}
        if plan.hashing_on:
            perturbed = self._perturbed(real, state.rng)
            loss, terms = self._hashing_loss(torch.sigmoid(hash_real), self._bit_probabilities(perturbed))
            if c.cluster_head:
                terms["cluster"] = self._cluster_loss(features)
                loss = loss + c.w_cluster * terms["cluster"]
        if c.use_gan:
            z, bits = self._sample_inputs(real.shape[0], state.rng)
            _, logit_fake, hash_fake = self.heads_(self.generator_(z).detach())
            terms["adversarial"] = self._adversarial(logit_real, logit_fake)
            loss = loss + c.w_adversarial * terms["adversarial"]
            if plan.hashing_on:
                terms["collaborative"] = self._collaborative(torch.sigmoid(hash_fake), bits, state.rng)
                if c.collab_trains_encoder:
                    loss = loss + plan.w_collaborative * terms["collaborative"]
        state.opt_de.zero_grad(set_to_none=True)
        loss.backward()
        state.opt_de.step()
        if self.average_ is not None:
            self.average_.update_parameters(self.heads_)
        return terms

    def _generator_step(self, state: TrainingState, real, plan: EpochPlan) -> torch.Tensor:
        """One Adam step of G: fool D (feature matching or the non-saturating minimax loss) and honour b' (the
        collaborative loss). Returns G's loss."""
        c = self.config_
        z, bits = self._sample_inputs(real.shape[0], state.rng)
        features_fake, logit_fake, hash_fake = self.heads_(self.generator_(z))
        if c.generator_loss == "feature_matching":  # Salimans et al. 2016, Sec. 3.1: ||E f(x) - E f(G(z))||^2
            with torch.no_grad():
                features_real = self.heads_(real)[0]
            loss = ((features_real.mean(0) - features_fake.mean(0)) ** 2).sum()
        else:  # Goodfellow et al. 2014: G maximises log D(G(z)) instead of minimising log(1 - D(G(z)))
            loss = F.binary_cross_entropy_with_logits(logit_fake, torch.ones_like(logit_fake))
        if c.collab_trains_generator and plan.hashing_on:
            loss = loss + plan.w_collaborative * self._collaborative(torch.sigmoid(hash_fake), bits, state.rng)
        state.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        state.opt_g.step()
        return loss

    def _keep_best(self, state: TrainingState, epoch: int, entry: dict, validation) -> None:
        """Score the epoch on the validation split every select_every epochs (and at the last) and keep the best
        one; without validation, the last. Warm-up epochs are never kept: their codes have not trained."""
        c = self.config_
        if not self._plan(epoch).hashing_on:
            return
        checked = (epoch + 1) % c.select_every == 0 or epoch + 1 == c.epochs
        if validation is not None and checked:
            entry["validation_map"] = round(validation.score(self.encode), 5)
        if validation is None or checked:
            state.best.offer(epoch + 1, entry.get("validation_map"), state.modules)

    def _checkpoint(self, state: TrainingState, epochs_done: int) -> dict:
        """Everything a rerun needs to continue where this one stopped, the random states included."""
        return {
            "modules": {k: m.state_dict() for k, m in state.modules.items()},
            "opt_de": state.opt_de.state_dict(),
            "opt_g": state.opt_g.state_dict(),
            "rng": state.rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "best_score": state.best.score,
            "best_epoch": state.best.epoch,
            "best_state": state.best.state,
            "log": state.log.entries,
            "epoch": epochs_done,
        }

    def _training_record(self, state: TrainingState, validation) -> dict:
        c = self.config_
        selection = (
            f"highest mAP on the validation split ({validation.describe()}), checked every {c.select_every} epoch(s)"
            if validation is not None
            else "last epoch (no validation)"
        )
        if c.hash_warmup_epochs:
            selection += f", after {c.hash_warmup_epochs} adversarial-only epoch(s)"
        return {
            "epochs_run": c.epochs,
            "kept_epoch": state.best.epoch,
            "resumed_from_epoch": state.start,
            "selection": selection,
            "log": state.log.entries,
        }

    # ---- the nets and the losses

    def _nets(self, shape):
        c = self.config_
        n_in = c.noise_dim + self.n_bits
        if c.arch == "dcgan":
            return dcgan_nets(shape[0], n_in, self.n_bits)
        if shape[0] == 1:
            return mlp_nets(shape, n_in, self.n_bits)
        return improved_gan_conv_nets(shape[0], n_in, self.n_bits)

    def _images(self, x):
        """uint8 -> [-1, 1]; conv nets see 32 x 32."""
        conv = self.config_.arch == "dcgan" or x.shape[1] != 1
        return to_float(x, CONV_SIZE if conv else None)

    def _sample_inputs(self, n, g):
        """z = [uniform noise; b'] with b' ~ Bernoulli(1/2)^K: G is conditioned on random binary codes."""
        noise = torch.rand(n, self.config_.noise_dim, generator=g)
        bits = (torch.rand(n, self.n_bits, generator=g) < 0.5).float()
        return torch.cat([noise, bits], 1).to(self.device), bits.to(self.device)

    def _perturbed(self, real, g):
        """The perturbed copy x~ that consistent bits compare E's outputs on (perturbation)."""
        c = self.config_
        if c.perturbation == "vat":
            return self._virtual_adversarial(real, g)
        return random_affine(real, g, c.augment_degrees, c.augment_translate, c.augment_flip)

    def _virtual_adversarial(self, real, g):
        """IMSAT's perturbed copy: real + vat_eps along the unit direction that most changes E's outputs t, found
        by one power iteration (VAT, Miyato et al.). The noise layers are off while probing, so the direction is
        the net's sensitivity, not a difference of two noise draws."""
        c = self.config_

        def unit(v):  # each image's perturbation scaled to L2 norm 1
            return F.normalize(v.flatten(1), dim=1).view_as(v)

        self.heads_.eval()
        with torch.no_grad():
            t = self._bit_probabilities(real)
        probe = (c.vat_xi * unit(torch.randn(real.shape, generator=g).to(real.device))).requires_grad_()
        change = ((self._bit_probabilities(real + probe) - t) ** 2).sum()
        (direction,) = torch.autograd.grad(change, probe)
        self.heads_.train()
        return (real + c.vat_eps * unit(direction)).detach()

    def _bit_probabilities(self, images, heads=None):
        """E's sigmoid outputs t in [0, 1]^K for images already in [-1, 1] (see _images); ``heads``: the trained
        nets by default, or the averaged ones (see _encoder)."""
        return torch.sigmoid((self.heads_ if heads is None else heads)(images)[2])

    def _encoder(self):
        """The nets that encode: the weight average with ``average_decay``, the trained ones otherwise."""
        return self.average_.module if self.average_ is not None else self.heads_

    @staticmethod
    def _adversarial(logit_real, logit_fake):
        """The adversarial loss (poster): D maximises E_x[log D(x)] + E_z[log(1 - D(G(z)))], i.e. minimises the
        binary cross-entropy of real images against 1 and synthetic ones against 0."""
        return F.binary_cross_entropy_with_logits(
            logit_real, torch.ones_like(logit_real)
        ) + F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake))

    def _hashing_loss(self, t, t_aug):
        """The hashing loss (poster): its four terms on E's sigmoid outputs t (n, K) of real images and t_aug of
        their perturbed copies. Returns the weighted sum and the terms."""
        c = self.config_
        entropy = bit_entropy(t).sum(1).mean()  # minimum entropy bits: +H (the poster prints -H, a sign typo)
        uniform = -bit_entropy(t.mean(0)).sum()  # uniform frequency bits: sum_k f_k log f_k + (1-f_k) log(1-f_k)
        consistent = ((t - t_aug) ** 2).sum(1).mean()  # consistent bits: ||t_i - t~_i||^2
        # independent bits: ||W W^T - I||^2 with the hash layer's W (K, d), the K x K form (the port's d x d form
        # cannot reach I)
        independent = gram_deviation(self.heads_.hash.weight)
        terms = {"entropy": entropy, "uniform": uniform, "consistent": consistent, "independent": independent}
        total = (
            c.w_entropy * entropy + c.w_uniform * uniform + c.w_consistent * consistent + c.w_independent * independent
        )
        return total, terms

    def _collaborative(self, t_fake, bits, g):
        """The collaborative loss (poster): ||E(G(z)) - b'||^2, the code E gives a synthetic image should be the
        binary input it was made from."""
        if self.config_.collab == "l2":
            return ((t_fake - bits) ** 2).sum(1).mean()
        # Ranking reading of the CVF abstract: t_fake closer to its own b' than to another sample's b'.
        other = bits[torch.randperm(bits.shape[0], generator=g).to(bits.device)]
        pos, neg = ((t_fake - bits) ** 2).sum(1), ((t_fake - other) ** 2).sum(1)
        return F.relu(self.config_.triplet_margin + pos - neg).mean()

    def _cluster_loss(self, features):
        """cluster_head's objective on the softmax p over clusters: confident assignments (minimum entropy of each
        p_i) and balanced clusters (maximum entropy of the mean p), the hashing loss's first two terms."""
        p = F.softmax(self.heads_.clusters(features), 1)
        return (-p * torch.log(p + 1e-8)).sum(1).mean() + (p.mean(0) * torch.log(p.mean(0) + 1e-8)).sum()

    # ---- after fit

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
