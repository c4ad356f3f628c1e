"""Bi-half Net (baselines/bihalf.py) and CIBHash (baselines/cibhash.py): their layers and losses on hand-checkable
cases, and short seeded fits on digits that beat chance and an untrained network by stated margins."""

import math

import pytest
import torch

from baselines.bihalf import BiHalf, bi_half, half_half, similarity_loss
from baselines.cibhash import (
    CIBHash,
    bernoulli_kl,
    colour_jitter,
    nt_xent,
    random_blur,
    random_grey,
    random_resized_crop,
    rotate_hue,
)
from bench.data import PROTOCOLS, load_split
from bench.errors import BenchError
from bench.method import make_config, seeded
from bench.metrics import evaluate

DIGITS = next(p for p in PROTOCOLS if p.name == "digits")
CHANCE = 0.1  # ten balanced classes


def score(method, split) -> float:
    return evaluate(method.encode(split.x_query), method.encode(split.x_database), split.y_query, split.y_database)[
        "map"
    ]


@pytest.fixture(scope="module")
def pixels():
    return load_split(DIGITS, "pixels", "cpu")


@pytest.fixture(scope="module")
def images():
    return load_split(DIGITS, "images", "cpu")


# --------------------------------------------------------------------------------------------------------- Bi-half


def test_bi_half_codes_the_larger_half_of_each_bit_plus_one():
    u = torch.tensor([[0.3, -2.0], [0.1, 5.0], [0.9, 1.0], [-0.4, 0.0], [0.2, 3.0]])
    b = half_half(u)
    assert b.tolist() == [[1, -1], [-1, 1], [1, -1], [-1, -1], [-1, 1]]  # floor(5/2) = 2 items at +1 per bit
    assert (half_half(torch.randn(64, 16)).sum(0) == 0).all()  # an even batch: exactly half-half


def test_bi_half_gradient_is_straight_through_plus_gamma_times_u_minus_b_over_nk():
    u = torch.randn(6, 4, requires_grad=True)
    upstream = torch.randn(6, 4)
    for gamma in (0.0, 6.0):
        (grad,) = torch.autograd.grad(bi_half(u, gamma), u, upstream)
        expected = upstream + gamma * (u.detach() - half_half(u.detach())) / 24
        assert torch.allclose(grad, expected)  # gamma 0: the identity (straight-through)


def test_similarity_loss_is_zero_when_codes_keep_the_feature_cosines_and_grows_when_they_do_not():
    codes = torch.tensor([[1.0, 1, -1, -1], [-1.0, 1, 1, -1], [1.0, 1, -1, -1], [1.0, -1, 1, -1]])
    # halves pair item 0 with 2 (cos 1) and 1 with 3 (cos 0); features that agree, and features that do not
    agree = torch.tensor([[2.0, 0.0], [0.0, 3.0], [4.0, 0.0], [3.0, 0.0]])
    assert similarity_loss(codes, agree).item() == pytest.approx(0.0, abs=1e-6)
    disagree = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # cos 0 and cos 1
    assert similarity_loss(codes, disagree).item() == pytest.approx(1.0)  # ((1 - 0)^2 + (0 - 1)^2) / 2


@pytest.mark.parametrize("cls", [BiHalf], ids=lambda c: c.name)  # a cls parameter: its smoke fit's xdist group
def test_bihalf_regression_on_digits_beats_chance_and_its_untrained_layer(cls, pixels, fitted):
    fit = fitted(cls, 32)  # the smoke fit, seed 0
    with seeded(0):
        untrained = torch.nn.Linear(64, 32)  # the layer fit() starts from (the same global seed)
    with torch.no_grad():
        before = evaluate(
            torch.sign(untrained(pixels.x_query)),
            torch.sign(untrained(pixels.x_database)),
            pixels.y_query,
            pixels.y_database,
        )["map"]
    trained = fit.score()
    assert trained > CHANCE + 0.4 and trained > before + 0.15, (trained, before)
    assert trained == pytest.approx(0.65, abs=0.03)  # 0.637-0.657 over seeds 0-4
    codes = fit.method.encode(pixels.x_train).float()
    assert codes.mean(0).abs().max() < 0.3  # the bi-half training leaves near-balanced bits under sign(U)


def test_bihalf_autoencoder_objective_learns_and_refuses_inputs_outside_0_1(pixels):
    overrides = {**BiHalf.recipes["autoencoder"], "epochs": 5, "lr_milestones": (4,)}
    method = BiHalf(16, make_config(BiHalf, overrides), seed=0)
    with seeded(0):
        method.fit(pixels.x_train)
    assert score(method, pixels) > CHANCE + 0.3
    losses = [e["loss"] for e in method.training_["log"]]
    assert losses[-1] < losses[0]  # the reconstruction improves
    with pytest.raises(BenchError, match="in \\[0, 1\\]"):
        BiHalf(16, make_config(BiHalf, overrides), seed=0).fit(pixels.x_train * 2 - 1)


# --------------------------------------------------------------------------------------------------------- CIBHash


def test_nt_xent_hand_cases():
    a = torch.tensor([[1.0, 1, 1, 1], [1.0, -1, 1, -1]])
    # identical codes everywhere: every logit equal, the loss log(2N - 1)
    same = torch.ones(2, 4)
    assert nt_xent(same, same, 0.5).item() == pytest.approx(math.log(3))
    # each view's partner is its own code (cos 1), the other image orthogonal (cos 0): -log(e^2 / (e^2 + 2))
    assert nt_xent(a, a.clone(), 0.5).item() == pytest.approx(-math.log(math.e**2 / (math.e**2 + 2)))
    assert nt_xent(a, a.clone(), 0.5) < nt_xent(a, a.flip(0), 0.5)  # codes that agree across views cost less


def test_bernoulli_kl_closed_form_symmetry_and_stop_gradient():
    p, q = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.5, 0.25]])
    assert bernoulli_kl(p, p).item() == pytest.approx(0.0, abs=1e-6)
    assert bernoulli_kl(p, q).item() == pytest.approx(0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75))
    q = q.clone().requires_grad_()
    bernoulli_kl(p.clone().requires_grad_(), q, stop_gradient=True).backward()
    assert q.grad is None
    bernoulli_kl(p, q).backward()
    assert q.grad is not None


def test_codes_are_bernoulli_with_a_straight_through_gradient():
    method = CIBHash(8, seed=0)
    p = torch.tensor([0.1, 0.5, 0.9]).repeat(20_000, 1).requires_grad_()
    b = method.binary(p, torch.Generator().manual_seed(0))
    assert set(b.unique().tolist()) == {-1.0, 1.0}
    assert ((b + 1) / 2).mean(0).tolist() == pytest.approx([0.1, 0.5, 0.9], abs=0.01)  # P(b = +1) = p
    (grad,) = torch.autograd.grad(b, p, torch.ones_like(b) * 3)
    assert (grad == 3).all()  # db/dp = 1
    threshold = CIBHash(8, make_config(CIBHash, {"sampling": "threshold"}), seed=0)
    assert threshold.binary(torch.tensor([[0.2, 0.5, 0.7]]), torch.Generator()).tolist() == [[-1.0, 1.0, 1.0]]


def test_augmentations_keep_range_and_shape_and_their_identities(images):
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(6, 3, 12, 12, generator=g)
    crop = random_resized_crop(rgb, g, 32, 0.5, True)
    assert crop.shape == (6, 3, 32, 32) and crop.min() >= 0 and crop.max() <= 1
    assert torch.equal(colour_jitter(rgb, g, 0.0, 0.4, 0.4, 0.4, 0.1), rgb)  # probability 0: untouched
    assert torch.allclose(rotate_hue(rgb, torch.zeros(6)), rgb, atol=1e-5)
    assert torch.allclose(rotate_hue(rgb, torch.ones(6)), rgb, atol=1e-5)  # a full turn
    greyed = random_grey(rgb, g, 1.0)
    assert torch.equal(greyed[:, 0], greyed[:, 1]) and torch.equal(greyed[:, 1], greyed[:, 2])
    assert torch.equal(random_blur(rgb, g, 0.0, (0.1, 2.0)), rgb)
    flat = torch.full((2, 3, 8, 8), 0.3)
    assert torch.allclose(random_blur(flat, g, 1.0, (0.1, 2.0)), flat)  # normalised kernels
    grey_images = torch.rand(4, 1, 8, 8, generator=g)
    assert torch.equal(colour_jitter(grey_images, g, 1.0, 0.0, 0.0, 0.4, 0.1), grey_images)  # no colour to change
    method = CIBHash(8, seed=0)
    with seeded(0):
        method.net_ = method._network(images.x_train)
    first = method.augment(images.x_train[:5], torch.Generator().manual_seed(1))
    again = method.augment(images.x_train[:5], torch.Generator().manual_seed(1))
    assert first.shape == (5, 1, 32, 32) and torch.equal(first, again)  # the method's generator decides


@pytest.mark.parametrize("cls", [CIBHash], ids=lambda c: c.name)  # a cls parameter: its smoke fit's xdist group
def test_cibhash_regression_on_digits_beats_chance_and_its_untrained_network(cls, images, fitted):
    """The smoke config (one epoch): the paper's sampled codes, a linear head, the small CNN from scratch."""
    fit = fitted(cls, 32)  # seed 0
    method = fit.method
    untrained = CIBHash(32, make_config(CIBHash, CIBHash.smoke), seed=0)
    with seeded(0):
        untrained.net_ = untrained._network(images.x_train)  # the network fit() starts from
    trained, before = fit.score(), score(untrained, images)
    assert trained > CHANCE + 0.2 and trained > before + 0.15, (trained, before)  # 0.42-0.46 over seeds 0-4
    log = method.training_["log"]
    assert [e["epoch"] for e in log] == [1] and {"contrastive", "kl"} <= set(log[0])
