"""HashGAN with a pair conditional Wasserstein GAN: Cao, Liu, Long, Wang, "HashGAN: Deep Learning to Hash with
Pair Conditional Wasserstein GAN", CVPR 2018 (official TensorFlow code: thuml/HashGAN).

Three parts, trained jointly (Eq. 11: min_{D,C} L_F + lambda L_{D,C}; min_{G,V} L_F + lambda L_{G,V}; min_F L_F):
- a similarity embedding V: non-negative v_i in R^32 with v_i^T v_j close to s_ij (Eq. 3), fitted to the
  training pairs first (symmetric NMF) and refined with G; unlabelled images get v = 0;
- PC-WGAN: a generator G(v, u) and a Wasserstein critic D with gradient penalty (gamma = 10, Eq. 1-2) whose trunk
  also carries a pair classifier C(x~_i, x_j) = sigmoid(z~_i^T z_j), trained by cross-entropy on (synthetic,
  real) pairs (Eq. 4-5), so synthetic images keep the pairwise similarity of the v they were made from;
- a hash encoder F (a backbone with a K-unit tanh layer) trained on real and synthetic images with the weighted
  cosine cross-entropy (Eq. 7-8, adaptive sigmoid alpha) and the cosine quantization loss (Eq. 9-10, beta).
Codes are sgn(F(x)).

Training (``fit``) in named steps: the similarity embedding (``fit_embedding``), the nets and their optimisers
(``_build_gan``, ``_optimisers``), the critic step (``_critic_loss``), the generator step (``_generator_loss``,
``_synthetic_batch``), the encoder step (``_encoder_loss``), one gradient step (``_step``) and the two schedules
(``_gan_stage``, ``_encoder_stage``).

Ablations (Table 2) are Config switches: HashGAN-B ``--set binarize=false`` (rank by the real-valued outputs),
-Q ``--set beta=0``, -C ``--set cosine=false`` (inner-product cross-entropy, DHN/HashNet's), -G
``--set use_gan=false`` (no PC-WGAN: F on the real images only).

The authors' code differs from the paper: the variant ``hashgan-cao2018-official`` has its choices as defaults
(labels as v, two stages with G frozen in the second, no quantization loss, weight 1 for dissimilar pairs, a
cosine pair classifier, Adam, and ranking by the real-valued outputs), each one a switch of this Config, so
``--set`` moves between the two one difference at a time.

Unpublished values (alpha, beta, lambda, iterations) and the backbone: see Config. The GAN nets are WGAN-GP's CIFAR
ResNets at 32 x 32 (the code's CIFAR choice; the paper says 64 x 64); other sizes are resized on the device.
The reader's page, with the equations, the schedules, the code's differences and ours: docs/hashgan-cao2018.md.
"""

from __future__ import annotations

import dataclasses
import typing

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from bench.backbones import DeepHashMethod
from bench.deep import (
    SUPERVISED_CPU_REDUCED,
    LossLog,
    SupervisedConfig,
    iteration_batches,
    pair_weights,
    pairwise_likelihood,
    sgd,
    to_float,
)
from bench.hookspecs import hookimpl
from bench.method import FitContext, binarize, label_matrix, setting
from bench.metrics import REAL_DISTANCE, relevance

GAN_SIZE = 32
LOG_EVERY = 100  # a log entry (and one finiteness check, one host sync) every 100 iterations and at the last
# The reduced schedule of CPU-only runs: the supervised deep methods' (500 iterations of batch 64), with GAN nets
# of width 16 and one critic step.
CPU_REDUCED = {**SUPERVISED_CPU_REDUCED, "gan_width": 16, "n_critic": 1}


class ResBlock(nn.Module):
    """WGAN-GP's residual block: two 3x3 convs (batch norm in G only), up- or down-sampling, 1x1 shortcut."""

    def __init__(self, a: int, b: int, resample: str | None, norm: bool, first: bool = False):
        super().__init__()
        self.resample, self.first = resample, first
        self.bn1 = nn.BatchNorm2d(a) if norm else nn.Identity()
        self.bn2 = nn.BatchNorm2d(b) if norm else nn.Identity()
        self.conv1, self.conv2 = nn.Conv2d(a, b, 3, padding=1), nn.Conv2d(b, b, 3, padding=1)
        self.shortcut = nn.Conv2d(a, b, 1) if (a != b or resample) else nn.Identity()

    def _resample(self, x):
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return F.avg_pool2d(x, 2) if self.resample == "down" else x

    def forward(self, x):
        h = x if self.first else F.relu(self.bn1(x))  # the critic's first block starts on the image itself
        if self.resample == "up":
            h = self._resample(h)
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        if self.resample == "down":
            h = self._resample(h)
        return h + self.shortcut(self._resample(x))


class Generator(nn.Module):
    """G(v, u): [v; u] -> 4x4xW -> three up-sampling residual blocks -> 32 x 32 image in [-1, 1]."""

    def __init__(self, n_in: int, channels: int, width: int):
        super().__init__()
        self.width = width
        self.fc = nn.Linear(n_in, 4 * 4 * width)
        self.blocks = nn.Sequential(*[ResBlock(width, width, "up", norm=True) for _ in range(3)])
        self.out = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, channels, 3, padding=1), nn.Tanh())

    def forward(self, inputs):
        return self.out(self.blocks(self.fc(inputs).view(-1, self.width, 4, 4)))


class Critic(nn.Module):
    """D and C on one trunk (WGAN-GP's CIFAR critic: down, down, plain, plain; no normalisation): the
    Wasserstein critic value and the pair classifier's features z."""

    def __init__(self, channels: int, width: int, pair_dim: int):
        super().__init__()
        self.trunk = nn.Sequential(
            ResBlock(channels, width, "down", norm=False, first=True),
            ResBlock(width, width, "down", norm=False),
            ResBlock(width, width, None, norm=False),
            ResBlock(width, width, None, norm=False),
            nn.ReLU(),
        )
        self.critic, self.pair = nn.Linear(width, 1), nn.Linear(width, pair_dim)

    def forward(self, x):
        h = self.trunk(x).mean((2, 3))
        return self.critic(h).squeeze(1), self.pair(h)


def fit_embedding(s: torch.Tensor, dim: int, generator: torch.Generator, iterations: int = 300) -> torch.Tensor:
    """Eq. 3: non-negative V (n, dim) minimising sum_ij (s_ij - v_i^T v_j)^2, by the multiplicative updates of
    symmetric NMF (Ding et al.), V <- V * (1/2 + 1/2 (S V) / (V V^T V)), which keep V >= 0."""
    v = torch.rand(s.shape[0], dim, generator=generator).to(s) * (float(s.mean()) / dim) ** 0.5 * 2
    for _ in range(iterations):
        v = v * (0.5 + 0.5 * (s @ v) / (v @ (v.T @ v)).clamp(min=1e-12))
    return v


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Eq. 1 (and 4), third term: E[(||grad D(x^)|| - 1)^2] at x^ drawn uniformly on the segments between paired
    real and synthetic images (WGAN-GP's soft Lipschitz constraint)."""
    eps = torch.rand(len(real), 1, 1, 1, generator=g).to(real)
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    grad = torch.autograd.grad(critic(mixed)[0].sum(), mixed, create_graph=True)[0]
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def cosine_quantization(h: torch.Tensor) -> torch.Tensor:
    """Eq. 9-10: mean_i cos(|h_i|, 1) = sum_k |h_ik| / (sqrt(K) ||h_i||); 1 when every |h_ik| is equal."""
    return (h.abs().sum(1) / (h.shape[1] ** 0.5 * h.norm(dim=1).clamp(min=1e-12))).mean()


def linear_decay(total: int):
    """WGAN-GP's (and the authors' code's) learning-rate factor: 1 at the start, falling linearly to 0 at ``total``."""
    return lambda t: max(0.0, 1 - t / max(total, 1))


def log_due(step: int, last: int) -> bool:
    return step % LOG_EVERY == 0 or step == last


@dataclasses.dataclass
class Optimisers:
    """The optimisers of Eq. 11's three minimisations with their schedules: F's, and G/V's and D/C's (None without
    the GAN; the two GAN schedules decay together, one step per generator step)."""

    encoder: torch.optim.Optimizer
    encoder_schedule: LRScheduler
    generator: torch.optim.Optimizer | None = None
    critic: torch.optim.Optimizer | None = None
    gan_schedules: tuple = ()


class HashGANCao(DeepHashMethod):
    name = "hashgan-cao2018"
    paper = "Cao et al., CVPR 2018"
    supervision = "pairs"
    activation = "tanh"  # F: tanh K-layer (Sec. 3.3)
    uses_unlabelled = True
    # lr: at the shared 0.01 a smoke fit's mAP ranged 0.17-0.51 over seeds, at 0.003 0.31-0.45
    smoke = {"iterations": 15, "batch_size": 32, "gan_width": 8, "n_critic": 1, "gan_iterations": 5, "lr": 0.003}
    recipes = {"cpu-reduced": CPU_REDUCED}

    @dataclasses.dataclass(frozen=True)
    class Config(SupervisedConfig):
        # hash encoder F (Eq. 7-10). alpha, beta and lambda are not published; alpha as the authors' CIFAR config.
        alpha: float = setting(10.0, above=0)  # adaptive sigmoid sigma(alpha cos)
        beta: float = setting(0.1, at_least=0)  # cosine quantization weight (unpublished; HashGAN-Q: 0)
        cosine: bool = True  # False: HashGAN-C, the inner-product cross-entropy (alpha / K <h_i, h_j>)
        binarize: bool = True  # False: HashGAN-B, rank by the real-valued outputs
        dissimilar_weight: typing.Literal["balanced", "one"] = "balanced"  # Eq. 7: |S|/|S0| (code: 1)
        # Weight of the (real, synthetic) pairs in L_F: not in the paper; the code's second stage uses 0.1. A
        # young generator's images are far from real ones, and at weight 1 they pulled F toward a single code.
        fake_pair_weight: float = setting(0.1, at_least=0)
        encoder_optimizer: typing.Literal["sgd", "adam"] = "sgd"  # paper: SGD (SupervisedConfig); code: Adam
        # PC-WGAN (Eq. 1-5)
        use_gan: bool = True  # False: HashGAN-G (lambda = 0, no synthetic images)
        lam: float = setting(1.0, at_least=0)  # lambda of Eq. 11 (unpublished)
        embedding: typing.Literal["learned", "labels"] = "learned"  # V of Eq. 3 (paper) or the labels (code)
        embedding_dim: int = 32  # V = 32 (paper 4.1)
        noise_dim: int = 32  # u in R^V (paper 3.1)
        pair_classifier: typing.Literal["inner_product", "cosine"] = "inner_product"  # C = sigmoid(z~^T z);
        # the code uses the alpha-scaled cosine on a tanh head
        schedule: typing.Literal["joint", "two_stage"] = "joint"  # Eq. 11 (paper); code: GAN first, then F
        # two_stage: the GAN's own iterations before F (code: 100,000); 0: no GAN-only stage (the joint default)
        gan_iterations: int = setting(0, at_least=0)
        gan_width: int = 128  # channels of the WGAN-GP ResNets
        n_critic: int = 5  # critic steps per generator step (WGAN-GP)
        gradient_penalty: float = setting(10.0, at_least=0)  # gamma (paper)
        gan_lr: float = setting(1e-4, above=0)  # WGAN-GP's Adam (beta1 0, beta2 0.9), linear decay to 0
        use_unlabelled: bool = True  # unlabelled images (the database) enter the GAN with v = 0

    @property
    def ranking_distance(self) -> str:
        return "hamming" if self.config.binarize else REAL_DISTANCE

    # ------------------------------------------------------------------------------------------ training
    def fit(self, x, y=None, context: FitContext = FitContext()):
        """Eq. 11 on the labelled images ``x``, ``y``, with ``context.unlabelled`` (the database, no labels) in
        the GAN: the code's GAN-only stage first when ``schedule`` is two_stage, then F's iterations."""
        c, y = self.config, self.check_labels(y)
        g = self.generator()
        self.net_ = self.network(x)
        if c.use_gan:
            self._build_gan(x, y, g)
        opt = self._optimisers()
        unlabelled = context.unlabelled if (c.use_gan and c.use_unlabelled) else None
        log = LossLog(self.name)
        if c.use_gan and c.schedule == "two_stage":
            self._gan_stage(x, y, unlabelled, opt, g, log)
        self._encoder_stage(x, y, unlabelled, opt, g, log)
        if c.use_gan:
            self.generator_.eval()
            self._recalibrate(x)
        self.net_.eval()
        self.training_ = {
            "iterations": c.iterations,
            "gan_iterations": c.gan_iterations if c.use_gan else 0,
            "selection": "last iteration (fixed schedule)",
            "unlabelled_images": 0 if unlabelled is None else len(unlabelled),
            "log": log.entries,
        }
        return self

    # ---- the nets and their optimisers
    def _similarity_embedding(self, y, g):
        """V (n, dim) >= 0 for the labelled training items: Eq. 3's fit, or the label vectors (the code, an exact
        solution of Eq. 3 for single-label data, where one-hot v_i^T v_j = s_ij)."""
        c = self.config
        if c.embedding == "labels":
            return label_matrix(y)
        return fit_embedding(relevance(y, y).to(torch.float32), c.embedding_dim, g)

    def _build_gan(self, x, y, g):
        """PC-WGAN's players for images like ``x``: V (a parameter of G's side when learned), G and D/C."""
        c = self.config
        self.train_labels_ = y
        v = self._similarity_embedding(y, g).to(self.device)
        self.v_ = nn.Parameter(v) if c.embedding == "learned" else v
        self.generator_ = Generator(v.shape[1] + c.noise_dim, x.shape[1], c.gan_width).to(self.device)
        self.critic_ = Critic(x.shape[1], c.gan_width, c.embedding_dim).to(self.device)

    def _optimisers(self) -> Optimisers:
        """F: the paper's SGD (SupervisedConfig's schedule) or the code's Adam 1e-4 (0, 0.9) decaying linearly to 0
        over F's iterations; G/V and D/C: WGAN-GP's Adam, decaying over every iteration that steps G."""
        c = self.config
        if c.encoder_optimizer == "sgd":
            encoder, encoder_schedule = sgd(self.net_, c)
        else:
            encoder = torch.optim.Adam(self.net_.parameters(), lr=c.lr, betas=(0.0, 0.9))
            encoder_schedule = LambdaLR(encoder, linear_decay(c.iterations))
        if not c.use_gan:
            return Optimisers(encoder, encoder_schedule)
        g_params = list(self.generator_.parameters()) + ([self.v_] if c.embedding == "learned" else [])
        generator = torch.optim.Adam(g_params, lr=c.gan_lr, betas=(0.0, 0.9))
        critic = torch.optim.Adam(self.critic_.parameters(), lr=c.gan_lr, betas=(0.0, 0.9))
        total = c.gan_iterations + (c.iterations if c.schedule == "joint" else 0)
        schedules = tuple(LambdaLR(o, linear_decay(total)) for o in (generator, critic))
        return Optimisers(encoder, encoder_schedule, generator, critic, schedules)

    # ---- the schedules
    def _gan_stage(self, x, y, unlabelled, opt, g, log):
        """The code's first stage: ``gan_iterations`` of the PC-WGAN alone (n_critic critic steps, then one step
        of G and V per batch); F is untouched."""
        c = self.config
        self.generator_.train()
        self.critic_.train()
        for step, idx in enumerate(iteration_batches(len(x), c.batch_size, c.gan_iterations, g, self.device), 1):
            critic_terms = self._critic_steps(x, y, unlabelled, len(idx), opt.critic, g)
            _, loss_g, generator_terms = self._generator_loss(x, idx, relevance(y[idx], y[idx]), g)
            self._step(loss_g, opt, encoder=False, generator=True)
            log.add(**critic_terms, **generator_terms)
            if log_due(step, c.gan_iterations):
                log.close(step, c.gan_iterations, iteration=step, stage="gan")

    def _encoder_stage(self, x, y, unlabelled, opt, g, log):
        """F's ``iterations``. Joint (Eq. 11, the paper): each batch also takes the critic steps and one step of G
        and V, which get L_F's gradient through the synthetic images. Two-stage (the code): G frozen, in eval
        mode, only synthesises F's second half of the batch. Without the GAN: F on real images only."""
        c = self.config
        joint = c.use_gan and c.schedule == "joint"
        self.net_.train()
        if c.use_gan:
            self.generator_.train(joint)
        if joint:
            self.critic_.train()
        for step, idx in enumerate(iteration_batches(len(x), c.batch_size, c.iterations, g, self.device), 1):
            s = relevance(y[idx], y[idx])
            h_real = self._encode_augmented(x[idx], g)
            fake, loss_g, gan_terms = (
                self._synthetic_batch(x, y, idx, s, unlabelled, opt, g) if c.use_gan else (None, 0.0, {})
            )
            h_fake = None if fake is None else self._encode_augmented(fake, g)
            loss_f, encoder_terms = self._encoder_loss(h_real, h_fake, s)
            self._step(loss_f + loss_g, opt, encoder=True, generator=joint)
            log.add(loss_f=loss_f, **encoder_terms, **gan_terms)
            if log_due(step, c.iterations):
                log.close(step, c.iterations, iteration=step)

    def _synthetic_batch(self, x, y, idx, s, unlabelled, opt, g):
        """(G(v_i, u_i) for the batch ``idx``, G/V's loss, its terms). Joint: after the critic steps, and with
        G/V's loss, so that G also gets L_F's gradient through these images; two-stage: from the frozen G."""
        if self.config.schedule == "two_stage":
            with torch.no_grad():
                return self._fake(self.v_[idx], g), 0.0, {}
        critic_terms = self._critic_steps(x, y, unlabelled, len(idx), opt.critic, g)
        fake, loss_g, generator_terms = self._generator_loss(x, idx, s, g)
        return fake, loss_g, critic_terms | generator_terms

    def _step(self, loss, opt: Optimisers, encoder: bool, generator: bool):
        """One gradient step of ``loss`` for F and/or G and V (V then projected back to >= 0, Eq. 3's constraint),
        each with its schedule."""
        if encoder:
            opt.encoder.zero_grad(set_to_none=True)
        if generator:
            opt.generator.zero_grad(set_to_none=True)
        loss.backward()
        if encoder:
            opt.encoder.step()
            opt.encoder_schedule.step()
        if generator:
            opt.generator.step()
            self._project()
            for schedule in opt.gan_schedules:
                schedule.step()

    # ---- the critic step (Eq. 4)
    def _critic_steps(self, x, y, unlabelled, batch_size, opt_critic, g) -> dict:
        """WGAN-GP's ``n_critic`` steps of D and C, each on a fresh batch of labelled images and as many unlabelled
        ones; the terms of the last."""
        c = self.config
        for _ in range(c.n_critic):
            b = self._draw(len(x), batch_size, g)
            x_unlabelled = (
                None
                if unlabelled is None
                else to_float(unlabelled[self._draw(len(unlabelled), batch_size, g)], GAN_SIZE)
            )
            loss, terms = self._critic_loss(
                to_float(x[b], GAN_SIZE), self.v_[b], x_unlabelled, relevance(y[b], y[b]), g
            )
            opt_critic.zero_grad(set_to_none=True)
            loss.backward()
            opt_critic.step()
        return terms

    def _critic_loss(self, x_real, v_real, x_unlabelled, s, g):
        """lambda L_{D,C} (Eq. 4, 11) on real images (labelled, then unlabelled) and as many synthetic ones
        G(v, u), G(0, u): the Wasserstein estimate, the gradient penalty, and C's cross-entropy on the labelled
        (synthetic i, real j) pairs."""
        c = self.config
        with torch.no_grad():
            fake = self._fake(v_real, g)
            if x_unlabelled is not None:  # unlabelled images: v = 0 (paper 3.1)
                zeros = torch.zeros(len(x_unlabelled), v_real.shape[1], device=v_real.device)
                fake, x_real = torch.cat([fake, self._fake(zeros, g)]), torch.cat([x_real, x_unlabelled])
        d_real, z_real = self.critic_(x_real)
        d_fake, z_fake = self.critic_(fake)
        wasserstein = d_fake.mean() - d_real.mean()  # Eq. 4, row 1 (minus the Wasserstein estimate)
        penalty = gradient_penalty(self.critic_, x_real, fake, g)  # Eq. 4, row 2
        n = len(v_real)
        pair = self._pair_loss(z_fake[:n], z_real[:n].detach(), s)  # Eq. 4, rows 3-4 (real side: the code's)
        loss = c.lam * (wasserstein + c.gradient_penalty * penalty + pair)
        return loss, {"wasserstein": -wasserstein.detach(), "penalty": penalty.detach(), "pair_d": pair.detach()}

    def _pair_loss(self, z_fake, z_real, s):
        """C's cross-entropy over (synthetic i, real j) pairs (Eq. 4-5, rows 3-4): C = sigmoid(z~_i^T z_j) (paper)
        or sigmoid(alpha cos) on tanh features (the code)."""
        c = self.config
        if c.pair_classifier == "cosine":
            return pairwise_likelihood(torch.tanh(z_fake), torch.tanh(z_real), s, c.alpha, cosine=True)
        return pairwise_likelihood(z_fake, z_real, s, 1.0)

    # ---- the generator step (Eq. 5)
    def _generator_loss(self, x, idx, s, g):
        """lambda L_{G,V} (Eq. 5, 11) on the batch ``idx``: fool D, fit V to the pairs, and make C find the pairs
        in (G(v_i, u_i), x_j). Returns the synthetic images too, so F's loss can reach G through them."""
        c = self.config
        v = self.v_[idx]
        fake = self._fake(v, g)
        d_fake, z_fake = self.critic_(fake)
        with torch.no_grad():
            z_real = self.critic_(to_float(x[idx], GAN_SIZE))[1]
        adversarial = -d_fake.mean()  # Eq. 5, row 1, first term
        if c.embedding == "learned":
            embedding = ((s.float() - v @ v.T) ** 2).mean()  # Eq. 5, row 1, second term (Eq. 3's L_V)
        else:
            embedding = torch.zeros((), device=v.device)  # the labels are fixed
        pair = self._pair_loss(z_fake, z_real, s)  # Eq. 5, rows 2-3
        loss = c.lam * (adversarial + embedding + pair)
        return fake, loss, {"generator": adversarial.detach(), "pair_g": pair.detach(), "embedding": embedding.detach()}

    def _fake(self, v, g):
        """G(v, u), u ~ N(0, 1)."""
        u = torch.randn(v.shape[0], self.config.noise_dim, generator=g).to(v)
        return self.generator_(torch.cat([v, u], 1))

    # ---- the encoder step (Eq. 6-10)
    def _encode_augmented(self, images, g):
        """F on a randomly cropped and flipped batch (real uint8 images or synthetic ones in [-1, 1])."""
        c = self.config
        return self.net_(self.net_.backbone.augment(images, g, c.crop, c.flip))

    def _encoder_loss(self, h_real, h_fake, s):
        """L_F (Eq. 10) over real-real pairs and, with synthetic images, real-synthetic pairs (never
        synthetic-synthetic: the code's pair sets), weighted by Eq. 7, minus beta times the cosine quantization
        of every output (Eq. 9-10)."""
        c = self.config
        alpha = c.alpha if c.cosine else c.alpha / self.n_bits  # -C: HashNet's scale on inner products
        w = pair_weights(s, c.dissimilar_weight, exclude_self=True)  # Eq. 7
        loss = pairwise_likelihood(h_real, h_real, s, alpha, w, cosine=c.cosine)  # Eq. 8 / 10, rows 1-2
        terms = {"likelihood_real": loss}
        outputs = h_real
        if h_fake is not None:
            # The real side is held fixed (the code's stop-gradient): synthetic images are pulled toward the real
            # codes, never the real codes toward imperfect synthetic images.
            terms["likelihood_synthetic"] = pairwise_likelihood(  # Eq. 8 / 10, rows 1-2
                h_real.detach(), h_fake, s, alpha, pair_weights(s, c.dissimilar_weight), cosine=c.cosine
            )
            loss = loss + c.fake_pair_weight * terms["likelihood_synthetic"]
            outputs = torch.cat([h_real, h_fake])
        terms["quantization"] = cosine_quantization(outputs)  # Eq. 9 / 10, row 3
        return loss - c.beta * terms["quantization"], terms

    # ---- helpers
    def _draw(self, n_items, size, g):
        """``size`` random indices below ``n_items`` (with replacement), on the device."""
        return torch.randint(n_items, (size,), generator=g).to(self.device)

    @torch.no_grad()
    def _recalibrate(self, x, batch_size: int = 500):
        """Batch-norm statistics of F re-estimated on the real training images: during training they also
        averaged the synthetic batches, which are not what F encodes at test time."""
        norms = [m for m in self.net_.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the pass
        self.net_.train()
        for part in x.split(batch_size):
            self.net_(self.net_.backbone.prepare(part))

    @torch.no_grad()
    def _project(self):
        """V stays non-negative (Eq. 3's constraint) after each gradient step."""
        if isinstance(getattr(self, "v_", None), nn.Parameter):
            self.v_.clamp_(min=0)

    def encode(self, x):
        self.check_fitted("net_")
        h = self.net_.outputs(x)
        return binarize(h) if self.config.binarize else h

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, classes: torch.Tensor | None = None) -> torch.Tensor:
        """n synthetic images in [-1, 1]; with ``classes`` (n,) from the v of training items of those classes
        (per-class grids, Figure 6), else from random training items' v."""
        self.check_fitted("generator_")
        g = torch.Generator().manual_seed(seed)
        pool = self.v_.detach()
        if classes is None:
            v = pool[torch.randint(len(pool), (n,), generator=g).to(pool.device)]
        else:
            members = label_matrix(self.train_labels_) > 0  # (n, classes): multi-hot as it is
            v = torch.stack([pool[torch.nonzero(members[:, k]).squeeze(1)[0]] for k in classes.tolist()])
        self.generator_.eval()
        return self._fake(v, g)


class HashGANCaoOfficial(HashGANCao):
    name = "hashgan-cao2018-official"
    smoke = HashGANCao.smoke
    recipes = {"cpu-reduced": {**CPU_REDUCED, "gan_iterations": 500}}  # and 500 of the GAN-only first stage

    @dataclasses.dataclass(frozen=True)
    class Config(HashGANCao.Config):
        """The authors' TensorFlow code (thuml/HashGAN; docs/hashgan-cao2018.md) as defaults."""

        embedding: typing.Literal["learned", "labels"] = "labels"  # labels overwrite the first noise entries
        beta: float = 0.0  # no quantization loss
        dissimilar_weight: typing.Literal["balanced", "one"] = "one"
        pair_classifier: typing.Literal["inner_product", "cosine"] = "cosine"  # tanh head, alpha-scaled cosine
        schedule: typing.Literal["joint", "two_stage"] = "two_stage"
        gan_iterations: int = 100_000  # stage 1 (cifar_step_1.yaml)
        iterations: int = 10_000  # stage 2
        batch_size: int = 128  # stage 2: 128 real + 128 synthetic
        encoder_optimizer: typing.Literal["sgd", "adam"] = "adam"
        lr: float = 1e-4  # Adam (0, 0.9) with linear decay
        weight_decay: float = 0.0
        binarize: bool = False  # mAP on the tanh outputs


@hookimpl
def bench_methods():
    return [HashGANCao, HashGANCaoOfficial]
