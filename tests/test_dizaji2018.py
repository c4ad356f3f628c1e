"""HashGAN (Dizaji et al. 2018): the losses, the training loop's options, checkpoints and the recipes."""

import dataclasses
import math

import pytest
import torch

from bench.data import PROTOCOLS, load_split
from bench.deep import Diverged
from bench.errors import BenchError
from bench.method import FitContext, binarize, make_config, seeded
from bench.runner import Cell, run_cell
from plugins.hashgan_dizaji2018 import HashGANDizaji, data_dependent_init, weights_at

DIGITS = next(p for p in PROTOCOLS if p.name == "digits")


@pytest.fixture(scope="module")
def images():
    return load_split(DIGITS, "images", "cpu")


@pytest.fixture(autouse=True)
def fixed_global_rng_one_thread():
    """Module initialisation and the noise layers draw from torch's global generator (the runner seeds it around
    fit): seeded here so that no test's outcome depends on which tests ran before it. One thread: these nets are
    tiny, and the evaluator's parallel kernel leaves OpenMP at every core, where a busy machine makes each
    training step spin (tens of times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with seeded(0):
            yield
    finally:
        torch.set_num_threads(threads)


def smoke(n_bits=16, **overrides):
    return HashGANDizaji(n_bits, make_config(HashGANDizaji, {**HashGANDizaji.smoke, **overrides}), seed=0)


def test_hashgan_hashing_terms_have_the_intended_signs_and_shapes(images):
    m = smoke(8, epochs=1).fit(images.x_train[:64])
    with torch.no_grad():
        torch.nn.init.orthogonal_(m.heads_.hash.weight)  # rows orthonormal: W W^T = I (K x K)
        half = torch.full((4, 8), 0.5)
        sure = torch.tensor([[1.0, 0.0] * 4, [0.0, 1.0] * 4] * 2)
        _, t_half = m._hashing_loss(half, half)
        _, t_sure = m._hashing_loss(sure, sure)
    assert float(t_half["independent"]) < 1e-8  # the K x K form can reach zero (the port's d x d form cannot)
    assert float(t_sure["entropy"]) < float(t_half["entropy"])  # minimising +H makes bits confident
    assert float(t_half["uniform"]) == pytest.approx(-8 * math.log(2), abs=1e-5)  # balanced bits: lowest value
    assert float(t_sure["consistent"]) == 0.0


def test_hashgan_records_its_selection_and_resumes_from_a_checkpoint(images, tmp_path):
    val = images.validation(max_database=200)
    x = images.x_train[:64]
    ck = tmp_path / "ck.pt"
    with seeded(0):
        first = smoke(epochs=2).fit(x, context=FitContext(validation=val, checkpoint=ck))
    with seeded(0):
        resumed = smoke(epochs=3).fit(x, context=FitContext(validation=val, checkpoint=ck))
    log = resumed.training_["log"]
    assert [e["epoch"] for e in log] == [1, 2, 3] and log[:2] == first.training_["log"]
    assert (first.training_["resumed_from_epoch"], resumed.training_["resumed_from_epoch"]) == (0, 2)
    assert resumed.training_["kept_epoch"] == max(log, key=lambda e: e["validation_map"])["epoch"]
    assert "validation split" in resumed.training_["selection"]


def test_hashgan_divergence_fails_the_run_and_stores_nothing(results_dir):
    cell = Cell(
        "hashgan-dizaji",
        "digits",
        8,
        0,
        overrides=(("epochs", 1), ("batch_size", 512), ("lr", 1e30), ("w_independent", 1e30)),
    )
    with pytest.raises(Diverged):
        run_cell(cell, results_dir=results_dir)
    assert not list(results_dir.glob("runs/*.json"))


def test_hashgan_run_record_says_which_epoch_was_kept(results_dir):
    record, _ = run_cell(
        Cell("hashgan-dizaji", "digits", 8, 0, overrides=(("epochs", 2), ("batch_size", 512))), results_dir=results_dir
    )
    assert record["training"]["kept_epoch"] in (1, 2) and len(record["training"]["log"]) == 2
    asked = make_config(HashGANDizaji, {"epochs": 2, "batch_size": 512})
    assert record["config"] == dataclasses.asdict(HashGANDizaji.resolve_config(asked, 8))  # what trained


def test_hashgan_no_gan_ablation_and_options_run(images):
    x = images.x_train[:64]
    for over in (
        {"use_gan": False},
        {"arch": "dcgan"},
        {"collab": "triplet", "generator_loss": "minimax"},
        {"perturbation": "vat"},
    ):
        codes = smoke(8, epochs=1, **over).fit(x).encode(images.x_query)
        assert codes.shape == (images.x_query.shape[0], 8)


def test_hashgan_cluster_head_needs_a_number_of_clusters_and_clusters_with_its_argmax(images):
    x = images.x_train[:64]
    with pytest.raises(BenchError, match="cluster_head=true needs a clustering protocol.*digits-clustering"):
        smoke(8, epochs=1, cluster_head=True).fit(x)
    m = smoke(8, epochs=1, cluster_head=True).fit(x, context=FitContext(n_clusters=7))
    assert "cluster" in m.training_["log"][0]
    ids = m.cluster(images.x_query)
    assert ids.shape == (len(images.x_query),) and 0 <= int(ids.min()) and int(ids.max()) < 7
    assert smoke(8, epochs=1).fit(x).cluster(images.x_query) is None  # off: the runner's k-means on the codes


def test_hashgan_virtual_adversarial_copy_has_size_eps_and_moves_codes_more_than_a_random_step(images):
    m = smoke(8, epochs=1, perturbation="vat", vat_eps=1.0).fit(images.x_train[:64])
    real = m._images(images.x_train[:64])
    adversarial = m._virtual_adversarial(real, torch.Generator().manual_seed(1))
    assert m.heads_.training  # the probe switched the noise layers off and back on
    steps = (adversarial - real).flatten(1).norm(dim=1)
    assert torch.allclose(steps, torch.ones_like(steps), atol=1e-4)
    random = torch.randn(real.shape, generator=torch.Generator().manual_seed(2))
    random = real + random / random.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    m.heads_.eval()
    with torch.no_grad():
        t = torch.sigmoid(m.heads_(real)[2])
        moved = [float(((torch.sigmoid(m.heads_(v)[2]) - t) ** 2).sum()) for v in (adversarial, random)]
    assert moved[0] > 3 * moved[1]


def test_hashgan_weight_average_encodes_and_resumes_exactly(images, tmp_path):
    x = images.x_train[:64]
    # a constant collaborative weight: a decay's schedule follows the epoch count, which the resumed run changes
    with seeded(0):
        straight = smoke(8, epochs=3, average_decay=0.9, collab_decay_start=1.0).fit(x)
    trained, averaged = straight.heads_.hash.weight, straight.average_.module.hash.weight
    assert not torch.allclose(trained, averaged)  # the average lags the trained weights
    heads = straight.average_.module.eval()
    with torch.no_grad():
        t = torch.sigmoid(heads(straight._images(images.x_query))[2])
    assert torch.equal(straight.encode(images.x_query), binarize(t, 0.5))  # the codes come from the average
    ck = tmp_path / "ck.pt"
    for epochs in (2, 3):  # interrupted after 2 epochs, resumed to 3: the same average as without a break
        with seeded(0):
            resumed = smoke(8, epochs=epochs, average_decay=0.9, collab_decay_start=1.0)
            resumed.fit(x, context=FitContext(checkpoint=ck))
    assert torch.equal(resumed.average_.module.hash.weight, averaged)
    assert smoke(8, epochs=1).fit(x).average_ is None  # off by default
    with pytest.raises(BenchError, match=r"average_decay=1.5 must be in \[0, 1\)"):
        smoke(8, epochs=1, average_decay=1.5)


def test_data_dependent_init_standardises_every_weight_normed_layer_from_the_input_up():
    wn = torch.nn.utils.parametrizations.weight_norm
    for net, batch in (
        (
            torch.nn.Sequential(wn(torch.nn.Linear(20, 30)), torch.nn.ReLU(), wn(torch.nn.Linear(30, 7))),
            3 + 5 * torch.randn(200, 20),
        ),
        (
            torch.nn.Sequential(
                wn(torch.nn.Conv2d(3, 6, 3)), torch.nn.LeakyReLU(0.2), wn(torch.nn.Conv2d(6, 4, 3, stride=2))
            ),
            torch.rand(50, 3, 9, 9),
        ),
    ):
        data_dependent_init(net, batch, scale=0.5)
        outputs, x = [], batch
        for layer in net:  # the pre-activations of the initialised net, recomputed without hooks
            x = layer(x)
            if hasattr(layer, "parametrizations"):
                outputs.append(x)
        assert len(outputs) == 2
        for out in outputs:
            dims = [0] + list(range(2, out.dim()))
            assert torch.allclose(out.mean(dims), torch.zeros(out.shape[1]), atol=1e-4)
            assert torch.allclose(out.std(dims), torch.full((out.shape[1],), 0.5), atol=1e-4)
        assert not any(m._forward_hooks for m in net)  # the hooks are gone after the pass


def test_hashgan_data_init_changes_the_starting_trunk_and_trains(images):
    x = images.x_train[:64]
    for data_init in (False, True):  # lr 0: the kept (first) epoch's trunk is the initial one
        first = smoke(8, epochs=1, lr=0.0, data_init=data_init).fit(x).heads_.trunk[2].parametrizations.weight
        norms = first.original1.norm(dim=1, keepdim=True)  # torch's weight norm starts with g = ||v||
        assert torch.allclose(first.original0, norms) != data_init
    codes = smoke(8, epochs=1, data_init=True, lr=3e-3).fit(x).encode(images.x_query)
    assert codes.shape == (len(images.x_query), 8)


def test_hashgan_lr_decay_falls_linearly_and_resumes_on_the_same_rates(images, tmp_path):
    x = images.x_train[:64]
    constant = smoke(8, epochs=3, lr=0.01).fit(x)
    assert [e["lr"] for e in constant.training_["log"]] == [0.01, 0.01, 0.01]  # the default: no decay
    with seeded(0):
        straight = smoke(8, epochs=4, lr=0.01, lr_decay_start=0.5, collab_decay_start=1.0).fit(x)
    assert [e["lr"] for e in straight.training_["log"]] == pytest.approx([0.01, 0.01, 0.01, 0.005])
    ck = tmp_path / "ck.pt"
    for epochs in (2, 4):  # a run stopped after 2 epochs and resumed: the same rates, the same weights
        with seeded(0):
            resumed = smoke(8, epochs=epochs, lr=0.01, lr_decay_start=0.5, collab_decay_start=1.0)
            resumed.fit(x, context=FitContext(checkpoint=ck))
    assert [e["lr"] for e in resumed.training_["log"]] == pytest.approx([0.01, 0.01, 0.01, 0.005])
    assert torch.equal(resumed.heads_.hash.weight, straight.heads_.hash.weight)
    for bad in (0.0, 1.5):
        with pytest.raises(BenchError, match=rf"lr_decay_start={bad} must be in \(0, 1\]"):
            smoke(8, epochs=1, lr_decay_start=bad)


def test_hashgan_warmup_trains_the_gan_alone_then_selects_among_hashing_epochs(images):
    val = images.validation(max_database=200)
    m = smoke(8, epochs=3, hash_warmup_epochs=2).fit(images.x_train[:64], context=FitContext(validation=val))
    log = m.training_["log"]
    assert [set(e) - {"epoch", "lr"} for e in log[:2]] == [{"adversarial", "generator"}] * 2  # no hashing terms
    assert {"entropy", "uniform", "consistent", "independent", "collaborative"} <= set(log[2])
    assert [("validation_map" in e) for e in log] == [False, False, True] and m.training_["kept_epoch"] == 3
    assert "after 2 adversarial-only epoch(s)" in m.training_["selection"]
    for over in ({"epochs": 2, "hash_warmup_epochs": 2}, {"epochs": 3, "hash_warmup_epochs": 1, "use_gan": False}):
        with pytest.raises(BenchError, match=r"hash_warmup_epochs=\d needs use_gan=true and must be below epochs"):
            smoke(8, **over)


def test_hashgan_collaborative_term_can_leave_the_encoder_alone(images):
    x = images.x_train[:64]

    def outputs(**over):  # E's t: a tiny run's codes can agree where its outputs do not
        with seeded(0):
            return smoke(8, epochs=2, **over).fit(x)._t(images.x_query)

    no_term = outputs(w_collaborative=0.0)
    assert torch.equal(outputs(collab_trains_encoder=False, collab_trains_generator=False), no_term)
    assert not torch.equal(outputs(collab_trains_encoder=False), no_term)  # G still learns from it, D/E from G
    assert not torch.equal(outputs(), no_term)


def test_hashgan_collaborative_weight_decays_like_the_rate(images):
    x = images.x_train[:64]
    with seeded(0):
        constant = smoke(8, epochs=4, w_collaborative=0.3, collab_decay_start=1.0).fit(x)
    assert all("w_collaborative" not in e for e in constant.training_["log"])  # no decay: not logged
    with seeded(0):
        decayed = smoke(8, epochs=4, w_collaborative=0.3, collab_decay_start=0.5).fit(x)
    assert [e["w_collaborative"] for e in decayed.training_["log"]] == pytest.approx([0.3, 0.3, 0.3, 0.15])
    assert not torch.equal(decayed._t(images.x_query), constant._t(images.x_query))
    for bad in (0.0, 1.5):
        with pytest.raises(BenchError, match=rf"collab_decay_start={bad} must be in \(0, 1\]"):
            smoke(8, epochs=1, collab_decay_start=bad)


def test_hashgan_weights_shrink_for_codes_longer_than_weights_for_bits(images):
    given = {"w_entropy": 0.1, "w_uniform": 1.0, "w_consistent": 1.0, "w_independent": 100.0, "w_collaborative": 1.0}
    assert weights_at({**given, "weights_for_bits": 32}, 32) == given
    halved = {"w_entropy": 0.05, "w_uniform": 0.5, "w_consistent": 0.5, "w_independent": 25.0, "w_collaborative": 0.5}
    assert weights_at({**given, "weights_for_bits": 32}, 64) == halved  # the K x K term: squared
    assert weights_at({**given, "weights_for_bits": 0}, 64) == given  # 0: as given at every length
    # and training uses them: 16-bit codes with weights held for 8 bits log half the collaborative weight
    m = smoke(16, epochs=2, weights_for_bits=8, collab_decay_start=0.5).fit(images.x_train[:64])
    assert [e["w_collaborative"] for e in m.training_["log"]] == pytest.approx([0.5, 0.5])
    assert m.config_ == HashGANDizaji.resolve_config(m.config, 16) and m.config.weights_for_bits == 8


def test_hashgan_resolve_config_is_the_config_as_it_trains_at_the_code_length():
    default = HashGANDizaji.Config()
    at_64 = HashGANDizaji.resolve_config(default, 64)
    per_bit = (at_64.w_entropy, at_64.w_uniform, at_64.w_consistent, at_64.w_collaborative)
    assert per_bit == (0.05, 0.5, 0.5, 0.5) and at_64.w_independent == 25.0  # halved; the K x K term quartered
    assert at_64.weights_for_bits == 0  # 0: the weights as given, which they now are
    assert HashGANDizaji.resolve_config(at_64, 64) == at_64  # idempotent: the runner's config resolves to itself
    assert (
        dataclasses.replace(
            at_64,
            w_entropy=0.1,
            w_uniform=1.0,
            w_consistent=1.0,
            w_independent=100.0,
            w_collaborative=1.0,
            weights_for_bits=32,
        )
        == default
    )  # nothing else changed
    for n_bits in (16, 32):
        assert HashGANDizaji.resolve_config(default, n_bits) == dataclasses.replace(default, weights_for_bits=0)
    # the default at 64 bits and the halved weights given by hand are the same run
    by_hand = make_config(
        HashGANDizaji,
        {
            "w_entropy": 0.05,
            "w_uniform": 0.5,
            "w_consistent": 0.5,
            "w_independent": 25.0,
            "w_collaborative": 0.5,
            "weights_for_bits": 0,
        },
    )
    assert HashGANDizaji.resolve_config(by_hand, 64) == at_64


def test_hashgan_every_recipe_makes_a_valid_config():
    assert "default" not in HashGANDizaji.recipes  # the default is the Config itself
    assert {"first-recipe", "ablation", "cpu-reduced", "dcgan-5-epochs"} <= set(HashGANDizaji.recipes)
    for name, recipe in HashGANDizaji.recipes.items():
        config = make_config(HashGANDizaji, recipe)
        assert {k: getattr(config, k) for k in recipe} == recipe, name
        assert HashGANDizaji.resolve_config(config, 64).weights_for_bits == 0, name


def test_hashgan_uses_improved_gans_conv_nets_on_colour_images():
    """The CIFAR-10 architecture (the default arch on colour images): conv D/E trunk, deconv G, 32 x 32."""
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    m = smoke(8, epochs=1, batch_size=8).fit(x)
    assert [c.out_channels for c in m.heads_.trunk.modules() if isinstance(c, torch.nn.Conv2d)][:2] == [96, 96]
    assert m.encode(x).shape == (8, 8) and m.sample(2).shape == (2, 3, 32, 32)


def test_hashgan_samples_are_images_in_the_tanh_range(images):
    m = smoke(8, epochs=1).fit(images.x_train[:64])
    s = m.sample(5)
    assert s.shape == (5, 1, 8, 8) and s.abs().max() <= 1
