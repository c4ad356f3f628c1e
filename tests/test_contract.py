"""Contract tests over the whole registry: a new method is checked by tests that already exist."""
import dataclasses
import typing

import pytest
import torch

from bench.data import PROTOCOLS, load_split
from bench.errors import BenchError
from bench.method import TASKS, make_config
from bench.metrics import REAL_DISTANCE, evaluate, evaluate_real
from bench.registry import get_registry
from bench.runner import DEFAULT_VIEW, check_encoded
from conftest import needs_cuda

ALL_METHODS = sorted(get_registry().methods.values(), key=lambda m: m.name)
METHODS = [m for m in ALL_METHODS if "retrieval" in m.tasks]  # hashing methods; clustering: test_clustering.py
DIGITS = next(p for p in PROTOCOLS if p.name == "digits")


def score(method, split) -> float:
    """mAP of the queries against the database, by codes or (a method that ranks real-valued outputs) by them."""
    score_fn = evaluate_real if method.ranking_distance == REAL_DISTANCE else evaluate
    return score_fn(method.encode(split.x_query), method.encode(split.x_database), split.y_query,
                    split.y_database)["map"]


def fitted(cls, n_bits=16, seed=0, device="cpu"):
    split = load_split(DIGITS, DEFAULT_VIEW[cls.input], device)
    method = cls(n_bits, make_config(cls, cls.smoke), device=device, seed=seed)
    labels = None if cls.supervision == "none" else split.y_train
    return method.fit(split.x_train, labels), split


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


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
def test_init_does_no_work_and_encode_needs_fit(cls):
    method = cls(8, seed=3)
    assert not [k for k in vars(method) if k.endswith("_")], "learned state must only appear in fit()"
    split = load_split(DIGITS, DEFAULT_VIEW[cls.input], "cpu")
    with pytest.raises(BenchError, match="before fit"):
        method.encode(split.x_query)


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
@pytest.mark.parametrize("n_bits", [8, 32])
def test_fit_returns_self_and_codes_obey_the_contract(cls, n_bits):
    method, split = fitted(cls, n_bits)
    assert isinstance(method, cls)
    codes = method.encode(split.x_database)
    check_encoded(codes, split.x_database.shape[0], n_bits, method)
    if method.ranking_distance != REAL_DISTANCE:
        assert codes.dtype == torch.int8


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
def test_same_seed_same_codes(cls):
    a, split = fitted(cls, 16, seed=5)
    b, _ = fitted(cls, 16, seed=5)
    assert torch.equal(a.encode(split.x_query), b.encode(split.x_query))


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
def test_better_than_chance_on_digits(cls):
    method, split = fitted(cls, 32)
    chance = 0.1  # ten balanced classes: random codes give mAP ~ 0.1
    assert score(method, split) > chance + 0.1


@needs_cuda
@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
def test_runs_on_cuda_with_the_same_quality(cls):
    """Same seed, same random draws (made on the CPU), but eigenvector signs and float rounding may differ by
    device: a bit flipped for every item changes no distance, so compare retrieval quality, not bits."""
    scores = {}
    for device in ("cuda", "cpu"):
        method, split = fitted(cls, 16, device=device)
        assert method.encode(split.x_query).device.type == device
        scores[device] = score(method, split)
    assert scores["cuda"] == pytest.approx(scores["cpu"], abs=0.03)
