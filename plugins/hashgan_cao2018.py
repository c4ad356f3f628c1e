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

Ablations (Table 2) are Config switches: HashGAN-B ``--set binarize=false`` (rank by the real-valued outputs),
-Q ``--set beta=0``, -C ``--set cosine=false`` (inner-product cross-entropy, DHN/HashNet's), -G
``--set use_gan=false`` (no PC-WGAN: F on the real images only).

The authors' code differs from the paper (methods.md B.2.4): the variant ``hashgan-cao2018-official`` has its
choices as defaults (labels as v, two stages with G frozen in the second, no quantization loss, weight 1 for
dissimilar pairs, a cosine pair classifier, Adam, and ranking by the real-valued outputs), each one a switch of
this Config, so ``--set`` moves between the two one difference at a time.

Unpublished values (alpha, beta, lambda, iterations) and the backbone: see Config. The GAN nets are WGAN-GP's CIFAR
ResNets at 32 x 32 (the code's CIFAR choice; the paper says 64 x 64); other sizes are resized on the device.
"""
from __future__ import annotations

import dataclasses
import typing

import torch
import torch.nn.functional as F
from torch import nn

from bench.backbones import DeepHashMethod
from bench.deep import (SupervisedConfig, check_finite, iteration_batches, pair_weights,
                        pairwise_likelihood, random_crop_flip, sgd, to_float)
from bench.hookspecs import hookimpl
from bench.method import binarize, label_matrix, similarity
from bench.metrics import REAL_DISTANCE

GAN_SIZE = 32


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
        self.out = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, channels, 3, padding=1),
                                 nn.Tanh())

    def forward(self, inputs):
        return self.out(self.blocks(self.fc(inputs).view(-1, self.width, 4, 4)))


class Critic(nn.Module):
    """D and C on one trunk (WGAN-GP's CIFAR critic: down, down, plain, plain; no normalisation): the
    Wasserstein critic value and the pair classifier's features z."""

    def __init__(self, channels: int, width: int, pair_dim: int):
        super().__init__()
        self.trunk = nn.Sequential(ResBlock(channels, width, "down", norm=False, first=True),
                                   ResBlock(width, width, "down", norm=False),
                                   ResBlock(width, width, None, norm=False), ResBlock(width, width, None, norm=False),
                                   nn.ReLU())
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


def cosine_quantization(h: torch.Tensor) -> torch.Tensor:
    """Eq. 9-10: mean_i cos(|h_i|, 1) = sum_k |h_ik| / (sqrt(K) ||h_i||); 1 when every |h_ik| is equal."""
    return (h.abs().sum(1) / (h.shape[1] ** 0.5 * h.norm(dim=1).clamp(min=1e-12))).mean()


class HashGANCao(DeepHashMethod):
    name = "hashgan-cao2018"
    paper = "Cao et al., CVPR 2018"
    supervision = "pairs"
    activation = "tanh"  # F: tanh K-layer (Sec. 3.3)
    uses_unlabelled = True
    smoke = {"iterations": 60, "batch_size": 32, "gan_width": 16, "n_critic": 1, "gan_iterations": 10}
    zero_allowed = frozenset({"gan_iterations"})  # 0: no GAN-only stage before F (the joint default)

    @dataclasses.dataclass(frozen=True)
    class Config(SupervisedConfig):
        # hash encoder F (Eq. 7-10). alpha, beta and lambda are not published; alpha as the authors' CIFAR config.
        alpha: float = 10.0  # adaptive sigmoid sigma(alpha cos)
        beta: float = 0.1  # cosine quantization weight (unpublished; HashGAN-Q: 0)
        cosine: bool = True  # False: HashGAN-C, the inner-product cross-entropy (alpha / K <h_i, h_j>)
        binarize: bool = True  # False: HashGAN-B, rank by the real-valued outputs
        dissimilar_weight: typing.Literal["balanced", "one"] = "balanced"  # Eq. 7: |S|/|S0| (code: 1)
        # Weight of the (real, synthetic) pairs in L_F: not in the paper; the code's second step uses 0.1. With 1
        # a young generator's images pulled F to one code (CIFAR-10, 200 iterations: mAP 0.11; 0.1: 0.17, as
        # without the GAN).
        fake_pair_weight: float = 0.1
        encoder_optimizer: typing.Literal["sgd", "adam"] = "sgd"  # paper: SGD (SupervisedConfig); code: Adam
        # PC-WGAN (Eq. 1-5)
        use_gan: bool = True  # False: HashGAN-G (lambda = 0, no synthetic images)
        lam: float = 1.0  # lambda of Eq. 11 (unpublished)
        embedding: typing.Literal["learned", "labels"] = "learned"  # V of Eq. 3 (paper) or the labels (code)
        embedding_dim: int = 32  # V = 32 (paper 4.1)
        noise_dim: int = 32  # u in R^V (paper 3.1)
        pair_classifier: typing.Literal["inner_product", "cosine"] = "inner_product"  # C = sigmoid(z~^T z);
        # the code uses the alpha-scaled cosine on a tanh head
        schedule: typing.Literal["joint", "two_stage"] = "joint"  # Eq. 11 (paper); code: GAN first, then F
        gan_iterations: int = 0  # two_stage: the GAN's own iterations before F (code: 100,000)
        gan_width: int = 128  # channels of the WGAN-GP ResNets
        n_critic: int = 5  # critic steps per generator step (WGAN-GP)
        gradient_penalty: float = 10.0  # gamma (paper)
        gan_lr: float = 1e-4  # WGAN-GP's Adam (beta1 0, beta2 0.9), linear decay to 0
        use_unlabelled: bool = True  # unlabelled images (the database) enter the GAN with v = 0

    @property
    def ranking_distance(self) -> str:
        return "hamming" if self.config.binarize else REAL_DISTANCE

    # ------------------------------------------------------------------------------------------ the pieces
    def _embedding(self, y, g):
        """V (n, dim) >= 0 for the labelled training items: Eq. 3's fit, or the label vectors (the code)."""
        c = self.config
        if c.embedding == "labels":
            return label_matrix(y)
        return fit_embedding(similarity(y, y).to(torch.float32), c.embedding_dim, g)

    def _fake(self, v, g):
        """G(v, u), u ~ N(0, 1)."""
        u = torch.randn(v.shape[0], self.config.noise_dim, generator=g).to(v)
        return self.generator_(torch.cat([v, u], 1))

    def _pair_loss(self, z_fake, z_real, s):
        """C's cross-entropy over (synthetic i, real j) pairs (Eq. 4-5)."""
        c = self.config
        if c.pair_classifier == "cosine":
            return pairwise_likelihood(torch.tanh(z_fake), torch.tanh(z_real), s, c.alpha, cosine=True)
        return pairwise_likelihood(z_fake, z_real, s, 1.0)

    def _encoder_loss(self, h_real, h_fake, s):
        """L_F (Eq. 10) over real-real pairs and, with synthetic images, real-synthetic pairs (the code's pair
        sets, methods.md C.8); weights Eq. 7; minus beta times the cosine quantization of every output."""
        c = self.config
        alpha = c.alpha if c.cosine else c.alpha / self.n_bits  # -C: HashNet's scale on inner products
        w = pair_weights(s, c.dissimilar_weight, exclude_self=True)
        loss = pairwise_likelihood(h_real, h_real, s, alpha, w, cosine=c.cosine)
        terms = {"likelihood_real": loss}
        outputs = h_real
        if h_fake is not None:
            # The real side is held fixed (the code's stop-gradient): synthetic images are pulled toward the real
            # codes, never the real codes toward synthetic images. Without it the untrained generator's images
            # dragged every real code to one point (CIFAR-10, 200 iterations: mAP 0.11 vs 0.17 without the GAN).
            terms["likelihood_synthetic"] = pairwise_likelihood(
                h_real.detach(), h_fake, s, alpha, pair_weights(s, c.dissimilar_weight), cosine=c.cosine)
            loss = loss + c.fake_pair_weight * terms["likelihood_synthetic"]
            outputs = torch.cat([h_real, h_fake])
        terms["quantization"] = cosine_quantization(outputs)
        return loss - c.beta * terms["quantization"], terms

    def _critic_step(self, x_real, v_real, x_unlabelled, s, g, opt_d):
        """One critic step: Wasserstein distance with gradient penalty (Eq. 4) plus C's pair cross-entropy."""
        c = self.config
        with torch.no_grad():
            fake = self._fake(v_real, g)
            fake_u = self._fake(torch.zeros(len(x_unlabelled), v_real.shape[1], device=v_real.device), g) \
                if x_unlabelled is not None else None
        real_all = x_real if x_unlabelled is None else torch.cat([x_real, x_unlabelled])
        fake_all = fake if fake_u is None else torch.cat([fake, fake_u])
        d_real, z_real = self.critic_(real_all)
        d_fake, z_fake = self.critic_(fake_all)
        eps = torch.rand(len(real_all), 1, 1, 1, generator=g).to(real_all)
        mixed = (eps * real_all + (1 - eps) * fake_all).requires_grad_(True)
        grad = torch.autograd.grad(self.critic_(mixed)[0].sum(), mixed, create_graph=True)[0]
        penalty = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
        n = len(x_real)
        wasserstein = d_fake.mean() - d_real.mean()
        pair = self._pair_loss(z_fake[:n], z_real[:n].detach(), s)
        loss = c.lam * (wasserstein + c.gradient_penalty * penalty + pair)
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        opt_d.step()
        return {"wasserstein": -wasserstein.detach(), "penalty": penalty.detach(), "pair_d": pair.detach()}

    # ------------------------------------------------------------------------------------------ training
    def fit(self, x, y=None, unlabelled=None):
        c, y = self.config, self.check_labels(y)
        g = self.generator()
        channels = x.shape[1]
        self.net_ = self.network(x)
        if c.encoder_optimizer == "sgd":
            opt_f, schedule_f = sgd(self.net_, c)
        else:  # the code: Adam 1e-4 (0, 0.9), linear decay to 0
            opt_f = torch.optim.Adam(self.net_.parameters(), lr=c.lr, betas=(0.0, 0.9))
            schedule_f = torch.optim.lr_scheduler.LambdaLR(opt_f, lambda t: max(0.0, 1 - t / c.iterations))
        unlabelled = unlabelled if (c.use_gan and c.use_unlabelled) else None
        log, sums = [], {}
        if c.use_gan:
            self.train_labels_ = y
            v = self._embedding(y, g).to(self.device)
            self.v_ = nn.Parameter(v) if c.embedding == "learned" else v
            self.generator_ = Generator(v.shape[1] + c.noise_dim, channels, c.gan_width).to(self.device)
            self.critic_ = Critic(channels, c.gan_width, c.embedding_dim).to(self.device)
            g_params = list(self.generator_.parameters()) + ([self.v_] if c.embedding == "learned" else [])
            total = c.gan_iterations + (c.iterations if c.schedule == "joint" else 0)
            decay = lambda t: max(0.0, 1 - t / max(total, 1))  # noqa: E731 (WGAN-GP's linear decay)
            opt_g = torch.optim.Adam(g_params, lr=c.gan_lr, betas=(0.0, 0.9))
            opt_d = torch.optim.Adam(self.critic_.parameters(), lr=c.gan_lr, betas=(0.0, 0.9))
            schedules_gan = [torch.optim.lr_scheduler.LambdaLR(o, decay) for o in (opt_g, opt_d)]

        def draw(n_items, size):
            return torch.randint(n_items, (size,), generator=g).to(self.device)

        def gan_step(idx):
            """n_critic critic steps, then G/V's loss (Eq. 5): -D(G(v, u)) + sum (s - v^T v)^2 + C's loss."""
            terms = {}
            for _ in range(c.n_critic):
                b = draw(len(x), len(idx))
                xu = to_float(unlabelled[draw(len(unlabelled), len(idx))], GAN_SIZE) if unlabelled is not None \
                    else None
                s_b = similarity(y[b], y[b])
                terms = self._critic_step(to_float(x[b], GAN_SIZE), self._v(b), xu, s_b, g, opt_d)
            v_b = self._v(idx)
            fake = self._fake(v_b, g)
            d_fake, z_fake = self.critic_(fake)
            with torch.no_grad():
                z_real = self.critic_(to_float(x[idx], GAN_SIZE))[1]
            s = similarity(y[idx], y[idx])
            pair = self._pair_loss(z_fake, z_real, s)
            embedding = ((s.float() - v_b @ v_b.T) ** 2).mean() if c.embedding == "learned" else torch.zeros(())
            loss_g = c.lam * (-d_fake.mean() + embedding + pair)
            return fake, loss_g, terms | {"generator": -d_fake.mean().detach(), "pair_g": pair.detach(),
                                          "embedding": embedding.detach()}

        def finish(step, terms, last, every=100):
            """Accumulate the terms; every ``every`` steps and at the last, check them and log their means."""
            for k, value in terms.items():
                sums[k] = sums.get(k, 0.0) + torch.as_tensor(value).detach()
            if step % every == 0 or step == last:
                check_finite(self.name, step, **sums)
                log.append({"iteration": step, **{k: round(float(v) / ((step - 1) % every + 1), 5)
                                                  for k, v in sums.items()}})
                sums.clear()

        # ---- two_stage (the code): the GAN alone first, then F with G frozen
        if c.use_gan and c.schedule == "two_stage":
            self.generator_.train()
            self.critic_.train()
            for step, idx in enumerate(iteration_batches(len(x), c.batch_size, c.gan_iterations, g, self.device), 1):
                _, loss_g, terms = gan_step(idx)
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                self._project()
                for sch in schedules_gan:
                    sch.step()
                finish(step, {"stage": torch.tensor(1.0), **terms}, c.gan_iterations)
        # ---- F (and, in the joint schedule, the GAN step by step)
        joint = c.use_gan and c.schedule == "joint"
        self.net_.train()
        if joint:
            self.generator_.train()
            self.critic_.train()
        for step, idx in enumerate(iteration_batches(len(x), c.batch_size, c.iterations, g, self.device), 1):
            inputs = random_crop_flip(self.net_.backbone.prepare(x[idx]), g, c.crop, c.flip)
            h_real = self.net_(inputs)
            terms, h_fake, loss_g = {}, None, 0.0
            if joint:
                fake, loss_g, terms = gan_step(idx)  # G gets L_F's gradient through the synthetic images
            elif c.use_gan:
                with torch.no_grad():
                    self.generator_.eval()
                    fake = self._fake(self._v(idx), g)
            if c.use_gan:
                fake_inputs = random_crop_flip(self.net_.backbone.prepare(fake), g, c.crop, c.flip)
                h_fake = self.net_(fake_inputs)
            loss_f, f_terms = self._encoder_loss(h_real, h_fake, similarity(y[idx], y[idx]))
            opt_f.zero_grad(set_to_none=True)
            if joint:
                opt_g.zero_grad(set_to_none=True)
            (loss_f + loss_g).backward()
            opt_f.step()
            schedule_f.step()
            if joint:
                opt_g.step()
                self._project()
                for sch in schedules_gan:
                    sch.step()
            finish(step, {"loss_f": loss_f, **f_terms, **terms}, c.iterations)
        if c.use_gan:
            self.generator_.eval()
            self._recalibrate(x)
        self.net_.eval()
        self.training_ = {"iterations": c.iterations, "gan_iterations": c.gan_iterations if c.use_gan else 0,
                          "selection": "last iteration (fixed schedule)",
                          "unlabelled_images": 0 if unlabelled is None else int(len(unlabelled)), "log": log}
        return self

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

    def _v(self, idx):
        return self.v_[idx]

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

    @dataclasses.dataclass(frozen=True)
    class Config(HashGANCao.Config):
        """The authors' TensorFlow code (thuml/HashGAN, methods.md B.2.4) as defaults."""
        embedding: typing.Literal["learned", "labels"] = "labels"  # labels overwrite the first noise entries
        beta: float = 0.0  # no quantization loss
        dissimilar_weight: typing.Literal["balanced", "one"] = "one"
        pair_classifier: typing.Literal["inner_product", "cosine"] = "cosine"  # tanh head, alpha-scaled cosine
        schedule: typing.Literal["joint", "two_stage"] = "two_stage"
        gan_iterations: int = 100_000  # step 1 (cifar_step_1.yaml)
        iterations: int = 10_000  # step 2
        batch_size: int = 128  # step 2: 128 real + 128 synthetic
        encoder_optimizer: typing.Literal["sgd", "adam"] = "adam"
        lr: float = 1e-4  # Adam (0, 0.9) with linear decay
        weight_decay: float = 0.0
        binarize: bool = False  # mAP on the tanh outputs


@hookimpl
def bench_methods():
    return [HashGANCao, HashGANCaoOfficial]
