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
from bench.method import RANGE, TASKS, Range, field_range, item_kind, make_config
from bench.metrics import REAL_DISTANCE
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


def outside(kind, valid: Range) -> list:
    """Values of ``kind`` that ``valid`` refuses: past each bound, NaN and inf for floats, an empty tuple and one
    with an item outside, a string that is no Literal choice."""
    if typing.get_origin(kind) is typing.Literal:
        return ["not-a-choice"]
    if typing.get_origin(kind) is tuple:
        return [(), *((item,) for item in outside(item_kind(kind), valid))]
    if kind not in (int, float):
        return []
    past = [valid.above, valid.at_least - 1 if valid.at_least is not None else None, valid.below]
    past.append(valid.at_most + 1 if valid.at_most is not None else None)
    nonfinite = [math.nan, math.inf, -math.inf] if kind is float else []
    return [kind(v) for v in past if v is not None] + nonfinite


def closed_bounds(kind, valid: Range) -> list:
    """Values of ``kind`` on the bounds that ``valid`` admits (each Literal choice for a Literal)."""
    if typing.get_origin(kind) is typing.Literal:
        return list(typing.get_args(kind))
    if typing.get_origin(kind) is tuple:
        return [(item,) for item in closed_bounds(item_kind(kind), valid)]
    if kind not in (int, float):
        return []
    return [kind(v) for v in (valid.at_least, valid.at_most) if v is not None]


def as_text(value) -> str:
    """A value as ``--set KEY=VALUE`` writes it."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


@pytest.mark.parametrize("cls", ALL_METHODS, ids=lambda c: c.name)
def test_defaults_and_recipes_lie_in_their_ranges(cls):
    hints = typing.get_type_hints(cls.Config)
    numeric = [f.name for f in dataclasses.fields(cls.Config) if item_kind(hints[f.name]) in (int, float)]
    stated = [f.name for f in dataclasses.fields(cls.Config) if RANGE in f.metadata]
    assert set(stated) <= set(numeric), "setting() ranges are for numbers and tuples of numbers"
    make_config(cls, dataclasses.asdict(cls.Config()))  # every default, checked as an override
    for recipe in cls.recipes.values():
        make_config(cls, recipe)


@pytest.mark.parametrize("cls", ALL_METHODS, ids=lambda c: c.name)
def test_config_values_outside_their_range_fail_naming_field_value_and_range(cls):
    """Every field of every Config: values past its range (as --set text and as Python values) are refused with
    one line naming the method, the field, the value and what it must be; its closed bounds are accepted."""
    hints = typing.get_type_hints(cls.Config)
    for key in (f.name for f in dataclasses.fields(cls.Config)):
        kind, valid = hints[key], field_range(cls.Config, key)
        for bad in outside(kind, valid):
            for given in (bad, as_text(bad)):
                with pytest.raises(BenchError) as refused:
                    make_config(cls, {key: given})
                message = str(refused.value)
                assert message.startswith(f"{cls.name}: ") and "\n" not in message
                assert key in message and repr(bad) in message and str(valid) in message, message
        for good in closed_bounds(kind, valid):
            assert getattr(make_config(cls, {key: as_text(good)}), key) == good
            assert getattr(make_config(cls, {key: good}), key) == good


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
    codes = fit.codes("query")
    check_encoded(codes, fit.split.x_query.shape[0], n_bits, fit.method)
    if fit.method.ranking_distance != REAL_DISTANCE:
        assert codes.dtype == torch.int8


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
def test_same_seed_same_codes(cls, fitted):
    """Two independent fits with the same seed (the session's shared one and a fresh one) encode alike. The
    shortest schedule: any draw a fit takes from an unseeded source shows from its first step."""
    first = fitted(cls, 8, shortest=True)
    second = smoke_fit(cls, 8, shortest=True)
    assert torch.equal(first.codes("query"), second.codes("query"))


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
def test_better_than_chance_on_digits(cls, fitted):
    fit = fitted(cls, 32)
    chance = 0.1  # ten balanced classes: random codes give mAP ~ 0.1
    assert fit.score() > chance + 0.1


@needs_cuda
@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
def test_runs_on_cuda_with_the_same_quality(cls, fitted):
    """Same seed, same random draws (made on the CPU), but eigenvector signs and float rounding may differ by
    device: a bit flipped for every item changes no distance, so compare retrieval quality, not bits."""
    cuda, cpu = smoke_fit(cls, 32, device="cuda"), fitted(cls, 32)
    assert cuda.codes("query").device.type == "cuda"
    assert cuda.score() == pytest.approx(cpu.score(), abs=0.03)
