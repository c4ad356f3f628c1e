"""Contract tests over the whole registry: a new method is checked by tests that already exist. The smoke fits
(digits, each method's ``smoke`` config) are made once per session by conftest's ``fitted`` and shared."""

import dataclasses
import math
import typing

import pytest
import torch
from conftest import DIGITS, SCHEDULE, needs_cuda, smoke_fit

from bench.data import load_split
from bench.errors import BenchError
from bench.method import TASKS, make_config
from bench.metrics import REAL_DISTANCE, evaluate, evaluate_real
from bench.registry import get_registry
from bench.runner import DEFAULT_VIEW, check_encoded

ALL_METHODS = sorted(get_registry().methods.values(), key=lambda m: m.name)
METHODS = [m for m in ALL_METHODS if "retrieval" in m.tasks]  # hashing methods; clustering: test_clustering.py
# "Smoke fits take seconds" on digits: at most this many steps per schedule (epochs are counted in batches).
SMOKE_MAX_STEPS = 500


@pytest.mark.parametrize("cls", ALL_METHODS, ids=lambda c: c.name)
def test_declares_its_contract(cls):
    assert cls.paper and cls.name == cls.name.lower()
    assert dataclasses.is_dataclass(cls.Config) and cls.Config.__dataclass_params__.frozen
    cls.Config()  # every field has a (paper) default
    assert cls.tasks and set(cls.tasks) <= set(TASKS)
    make_config(cls, cls.smoke)  # the smoke overrides name real fields with valid types
    import importlib

    assert importlib.import_module(cls.__module__).__doc__, "the module docstring names the paper"


@pytest.mark.parametrize("cls", ALL_METHODS, ids=lambda c: c.name)
def test_counts_below_their_minimum_fail_with_the_field_and_its_bound(cls):
    """Integer Config fields are counts: 0 (or -1 where 0 is meaningful) is refused before any work, by name."""
    hints = typing.get_type_hints(cls.Config)
    counts = [f.name for f in dataclasses.fields(cls.Config) if hints[f.name] is int]
    assert set(cls.zero_allowed) <= set(counts), "zero_allowed names integer Config fields"
    for key in counts:
        bad, low = (-1, 0) if key in cls.zero_allowed else (0, 1)
        with pytest.raises(BenchError, match=rf"{key}={bad} must be an integer >= {low}"):
            make_config(cls, {key: str(bad)})
        make_config(cls, {key: str(low)})  # the bound itself is accepted


def schedule_steps(config, n_train: int) -> dict:
    """Each training schedule of ``config`` in steps on ``n_train`` items: iteration-like counts as they are,
    epochs times the batches of an epoch (where the config names its batch size)."""
    values = dataclasses.asdict(config)
    batches = math.ceil(n_train / values["batch_size"]) if isinstance(values.get("batch_size"), int) else 1
    return {
        key: value * (batches if key.endswith("epochs") else 1)
        for key, value in values.items()
        if SCHEDULE.search(key) and type(value) is int
    }


@pytest.mark.parametrize("cls", ALL_METHODS, ids=lambda c: c.name)
def test_smoke_config_shortens_every_long_schedule(cls):
    """``smoke`` promises a fit of seconds. Timing it here would be slow and flaky; what is cheap to check is that
    no training loop keeps a long (paper-length) schedule, and that every smoke override changes its field."""
    default, smoke = cls.Config(), make_config(cls, cls.smoke)
    no_ops = [key for key in cls.smoke if getattr(smoke, key) == getattr(default, key)]
    assert not no_ops, f"smoke overrides that set the default value: {no_ops}"
    n_train = load_split(DIGITS, "pixels", "cpu").x_train.shape[0]
    too_long = {k: v for k, v in schedule_steps(cls.resolve_config(smoke, 32), n_train).items() if v > SMOKE_MAX_STEPS}
    assert not too_long, f"smoke schedules of more than {SMOKE_MAX_STEPS} steps on digits: {too_long}"


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
def test_init_does_no_work_and_encode_needs_fit(cls):
    method = cls(8, seed=3)
    assert not [k for k in vars(method) if k.endswith("_")], "learned state must only appear in fit()"
    split = load_split(DIGITS, DEFAULT_VIEW[cls.input], "cpu")
    with pytest.raises(BenchError, match="before fit"):
        method.encode(split.x_query)


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
@pytest.mark.parametrize("n_bits", [8, 32])
def test_fit_returns_self_and_codes_obey_the_contract(cls, n_bits, fitted):
    """At 32 bits the smoke fit the quality tests use; at 8 bits (a code narrower than any layer) the shortest
    schedule, as the shape and dtype of the codes do not depend on training."""
    fit = fitted(cls, n_bits, shortest=n_bits == 8)
    assert fit.returned is fit.method, "fit() returns self"
    codes = fit.method.encode(fit.split.x_database)
    check_encoded(codes, fit.split.x_database.shape[0], n_bits, fit.method)
    if fit.method.ranking_distance != REAL_DISTANCE:
        assert codes.dtype == torch.int8


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
def test_same_seed_same_codes(cls, fitted):
    """Two independent fits with the same seed (the session's shared one and a fresh one) encode alike. The
    shortest schedule: any draw a fit takes from an unseeded source shows from its first step."""
    first = fitted(cls, 8, shortest=True)
    second = smoke_fit(cls, 8, shortest=True)
    assert torch.equal(first.method.encode(first.split.x_query), second.method.encode(second.split.x_query))


def score(method, split) -> float:
    """mAP of the queries against the database, by codes or (a method that ranks real-valued outputs) by them."""
    score_fn = evaluate_real if method.ranking_distance == REAL_DISTANCE else evaluate
    return score_fn(method.encode(split.x_query), method.encode(split.x_database), split.y_query, split.y_database)[
        "map"
    ]


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
def test_better_than_chance_on_digits(cls, fitted):
    fit = fitted(cls, 32)
    chance = 0.1  # ten balanced classes: random codes give mAP ~ 0.1
    assert score(fit.method, fit.split) > chance + 0.1


@needs_cuda
@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
def test_runs_on_cuda_with_the_same_quality(cls, fitted):
    """Same seed, same random draws (made on the CPU), but eigenvector signs and float rounding may differ by
    device: a bit flipped for every item changes no distance, so compare retrieval quality, not bits."""
    cuda, cpu = smoke_fit(cls, 32, device="cuda"), fitted(cls, 32)
    assert cuda.method.encode(cuda.split.x_query).device.type == "cuda"
    assert score(cuda.method, cuda.split) == pytest.approx(score(cpu.method, cpu.split), abs=0.03)
