"""The shared deep-training pieces (bench.deep, the validation split) and the deep methods' own behaviour."""

import math

import pytest
import torch

from baselines.dh import DH
from bench.data import PROTOCOLS, load_split
from bench.deep import (
    BestOf,
    Checkpoint,
    Diverged,
    LossLog,
    bit_entropy,
    check_finite,
    epoch_batches,
    random_affine,
    to_float,
)
from bench.method import FitContext, make_config, seeded
from bench.metrics import evaluate
from bench.registry import get_registry

DIGITS = next(p for p in PROTOCOLS if p.name == "digits")


@pytest.fixture(scope="module")
def images():
    return load_split(DIGITS, "images", "cpu")


def test_to_float_scales_to_the_tanh_range_and_resizes():
    x = torch.tensor([[[[0, 255], [255, 0]]]], dtype=torch.uint8)
    assert to_float(x).flatten().tolist() == [-1.0, 1.0, 1.0, -1.0]
    assert to_float(x, 8).shape == (1, 1, 8, 8)


def test_random_affine_is_the_identity_at_zero_and_flips_only_when_asked(images):
    x = to_float(images.x_train[:16])
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(random_affine(x, g, degrees=0, translate=0), x, atol=1e-5)
    flipped = random_affine(x, g, degrees=0, translate=0, flip=True)
    same = [torch.allclose(f, o, atol=1e-5) for f, o in zip(flipped, x)]
    mirrored = [torch.allclose(f, o.flip(-1), atol=1e-5) for f, o in zip(flipped, x)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(mirrored) and any(same)
    moved = random_affine(x, g, degrees=10, translate=0.1)
    assert moved.shape == x.shape and not torch.allclose(moved, x)


def test_epoch_batches_cover_each_item_once_and_drop_a_tiny_tail():
    batches = epoch_batches(105, 50, torch.Generator().manual_seed(0), "cpu")
    assert [len(b) for b in batches] == [50, 50]  # the 5-item tail is under half a batch
    assert len(torch.cat(batches).unique()) == 100
    assert sorted(torch.cat(epoch_batches(130, 50, torch.Generator(), "cpu")).tolist()) == list(range(130))


def test_check_finite_names_the_bad_loss():
    check_finite("m", 3, a=torch.tensor(1.0))
    with pytest.raises(Diverged, match="m diverged at step 7.*'b'"):
        check_finite("m", 7, a=torch.tensor(1.0), b=torch.tensor(float("nan")))


def test_loss_log_averages_each_term_since_the_last_entry_and_stops_on_a_non_finite_one():
    log = LossLog("m")
    for v in (1.0, 2.0, 6.0):
        log.add(loss=torch.tensor(v), extra=2 * v)
    assert log.close(3, iteration=3) == {"iteration": 3, "loss": 3.0, "extra": 6.0}
    log.add(loss=torch.tensor(10.0))
    assert log.close(4, iteration=4)["loss"] == 10.0  # the earlier steps are not in it
    assert [e["iteration"] for e in log.entries] == [3, 4]
    log.add(loss=torch.tensor(1.0), bad=torch.tensor(float("inf")))
    with pytest.raises(Diverged, match="m diverged at step 5.*'bad'"):
        log.close(5, iteration=5)


def test_cpu_reduced_recipes_name_real_fields_and_shorten_the_schedule():
    registry = get_registry()
    deep = [cls for cls in registry.methods.values() if cls.input == "images" and "cpu-reduced" in cls.recipes]
    assert {"hashnet", "dhn", "dnnh", "cnnh", "deepbit", "uth", "csq", "cibhash"} <= {cls.name for cls in deep}
    for cls in deep:
        name = cls.name
        reduced, default = make_config(cls, cls.recipes["cpu-reduced"]), cls.Config()
        counts = [k for k in cls.recipes["cpu-reduced"] if k.endswith(("iterations", "epochs"))]
        assert counts and all(getattr(reduced, k) < getattr(default, k) for k in counts), name


def test_bit_entropy():
    assert float(bit_entropy(torch.tensor(0.5))) == pytest.approx(math.log(2))
    assert float(bit_entropy(torch.tensor(0.0))) < 1e-5 and float(bit_entropy(torch.tensor(1.0))) < 1e-5


def test_checkpoint_round_trip_and_no_path(tmp_path):
    Checkpoint(None).save({"a": 1})
    assert Checkpoint(None).load("cpu") is None
    ck = Checkpoint(tmp_path / "c" / "run.pt")
    assert ck.load("cpu") is None
    ck.save({"w": torch.arange(3)})
    assert torch.equal(ck.load("cpu")["w"], torch.arange(3))


def test_best_of_keeps_the_best_epoch():
    net = torch.nn.Linear(2, 1)
    best = BestOf()
    for epoch, score in [(1, 0.2), (2, 0.5), (3, 0.4)]:
        torch.nn.init.constant_(net.weight, float(epoch))
        best.offer(epoch, score, {"net": net})
    best.restore({"net": net})
    assert best.epoch == 2 and float(net.weight.detach()[0, 0]) == 2.0


def test_validation_is_carved_from_the_training_set(images):
    val = images.validation()
    assert val.y_query.shape[0] == 10 * 16  # a tenth of the smallest class (~160 items) per class
    assert torch.equal(val.y_query.bincount(), torch.full((10,), 16))
    train = {tuple(r.flatten().tolist()) for r in images.x_train}
    assert all(tuple(r.flatten().tolist()) in train for r in val.x_query)
    assert val.x_query.shape[0] + val.x_database.shape[0] == images.x_train.shape[0]
    again = images.validation()
    assert torch.equal(val.y_database, again.y_database) and torch.equal(val.x_query, again.x_query)
    assert images.validation(max_database=100).x_database.shape[0] == 100


# ------------------------------------------------------------------------------------------------------------- DH


def test_dh_regression_value_on_digits():
    """Pinned from a checked run; without validation data DH uses its first lambda1 candidate, the paper's 100."""
    split = load_split(DIGITS, "pixels", "cpu")
    with seeded(0):
        m = DH(16, seed=0).fit(split.x_train)
    score = evaluate(m.encode(split.x_query), m.encode(split.x_database), split.y_query, split.y_database)["map"]
    assert score == pytest.approx(0.3567, abs=0.02)
    assert [e["epoch"] for e in m.training_["log"]] == list(range(1, 11))
    assert "no validation" in m.training_["selection"]


def test_dh_keeps_the_lambda1_with_the_best_validation_map():
    split = load_split(DIGITS, "pixels", "cpu")
    m = DH(16, make_config(DH, {"epochs": 5, "lambda_variance": "100,10"}), seed=0)
    with seeded(0):
        m.fit(split.x_train, context=FitContext(validation=split.validation()))
    scores = {float(k): v for k, v in m.training_["validation_map"].items()}
    assert set(scores) == {100.0, 10.0} and m.training_["lambda_variance_kept"] == max(scores, key=scores.get)
    assert split.validation().score(m.encode) == pytest.approx(max(scores.values()), abs=1e-4)  # the kept net
    assert [e["lambda_variance"] for e in m.training_["log"]] == [100.0] * 5 + [10.0] * 5


def test_dh_fits_every_lambda1_candidate_from_the_same_initial_weights():
    split = load_split(DIGITS, "pixels", "cpu")
    m = DH(16, make_config(DH, {"epochs": 2, "lambda_variance": "30,30"}), seed=0)
    with seeded(0):
        m.fit(split.x_train, context=FitContext(validation=split.validation()))
    first, second = m.training_["log"][:2], m.training_["log"][2:]
    assert first == second


def test_dh_independence_term_reaches_zero_for_wide_and_narrow_layers():
    from bench.deep import gram_deviation

    narrow, wide = torch.empty(4, 10), torch.empty(10, 4)
    torch.nn.init.orthogonal_(narrow)
    torch.nn.init.orthogonal_(wide)
    assert float(gram_deviation(narrow)) < 1e-8 and float(gram_deviation(wide)) < 1e-8
    assert float(gram_deviation(2 * narrow)) > 1
