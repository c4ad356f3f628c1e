"""Config overrides (--set): parsed by each field's declared type, checked against each field's range, errors
named."""

import dataclasses
from typing import Literal

import pytest
import torch

from bench import Method, binarize
from bench.errors import BenchError
from bench.method import Range, field_range, make_config, setting


class Knobs(Method):
    name, paper, supervision, input = "knobs", "test double", "none", "vectors"

    @dataclasses.dataclass(frozen=True)
    class Config:
        steps: int = 10
        lr: float = setting(0.1, above=0)
        tanh: bool = False
        arch: Literal["improved_gan", "dcgan"] = "improved_gan"
        widths: tuple[int, ...] = (60, 30)
        momentum: float = setting(0.9, at_least=0, below=1)
        scale: float = 1.0
        noise: int = setting(0, at_least=0)
        weights: tuple[float, ...] = setting((1.0, 0.5), at_least=0)

    def fit(self, x, y=None, context=None):
        return self

    def encode(self, x):
        return binarize(x)


def test_strings_are_parsed_by_field_type():
    c = make_config(Knobs, {"steps": "3", "lr": "1e-3", "tanh": "true", "arch": "dcgan", "widths": "8,4,2"})
    assert c == Knobs.Config(steps=3, lr=1e-3, tanh=True, arch="dcgan", widths=(8, 4, 2))
    assert make_config(Knobs, {"lr": 1}).lr == 1.0 and make_config(Knobs, {}) == Knobs.Config()


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"steps": "3.5"}, "steps=3.5: expected int"),
        ({"lr": "fast"}, "lr=fast: expected float"),
        ({"tanh": "maybe"}, "expected a boolean"),
        ({"arch": "dcgn"}, "unknown value for arch 'dcgn'; did you mean 'dcgan'"),
        ({"widths": "8,x"}, "widths=x: expected int"),
        ({"step": "3"}, "unknown --set key for knobs 'step'; did you mean 'steps'"),
        ({"steps": 2.5}, "steps=2.5 has type float, expected int"),
    ],
)
def test_bad_overrides_are_named(overrides, message):
    with pytest.raises(BenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_config(Knobs, overrides)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"lr": "-0.1"}, "knobs: lr=-0.1 must be > 0"),
        ({"lr": 0}, "knobs: lr=0.0 must be > 0"),
        ({"lr": "nan"}, "knobs: lr=nan must be a finite number > 0"),
        ({"momentum": "1"}, "knobs: momentum=1.0 must be in [0, 1)"),
        ({"scale": "inf"}, "knobs: scale=inf must be a finite number"),  # floats that state nothing: finite
        ({"steps": "0"}, "knobs: steps=0 must be an integer >= 1"),  # ints that state nothing: counts
        ({"noise": -1}, "knobs: noise=-1 must be an integer >= 0"),
        ({"widths": ""}, "knobs: widths=() must be a non-empty tuple of integers >= 1"),
        ({"widths": "8,0"}, "knobs: widths=(8, 0) must be a non-empty tuple of integers >= 1"),
        ({"weights": [1.0, -2]}, "knobs: weights=(1.0, -2.0) must be a non-empty tuple of finite numbers >= 0"),
        ({"arch": 3}, "knobs: arch=3 must be one of 'improved_gan', 'dcgan'"),
        ({"steps": True}, "knobs: steps=True has type bool, expected int"),
        ({"widths": (8, 4.5)}, "knobs: widths=4.5 has type float, expected int"),
    ],
)
def test_values_outside_their_range_are_refused_naming_the_range(overrides, message):
    with pytest.raises(BenchError) as refused:
        make_config(Knobs, overrides)
    assert str(refused.value) == message


def test_bounds_that_are_allowed_are_accepted_and_python_values_take_the_field_type():
    c = make_config(Knobs, {"momentum": "0", "noise": "0", "steps": 1, "widths": [8], "weights": (0, 2)})
    assert (c.momentum, c.noise, c.steps, c.widths, c.weights) == (0.0, 0, 1, (8,), (0.0, 2.0))
    assert make_config(Knobs, {"lr": "1e-300", "scale": "-5"}).scale == -5.0  # no range stated: any finite number


class Redeclared(Knobs):
    name = "redeclared"

    @dataclasses.dataclass(frozen=True)
    class Config(Knobs.Config):
        lr: float = 0.5  # another default; the range stays the base's
        steps: int = setting(10, at_least=0)  # stated again: this one applies


def test_a_redeclared_field_keeps_its_base_range_unless_it_states_one():
    assert field_range(Redeclared.Config, "lr") == Range(above=0)
    with pytest.raises(BenchError, match=r"redeclared: lr=-1.0 must be > 0"):
        make_config(Redeclared, {"lr": "-1"})
    assert make_config(Redeclared, {"steps": "0"}).steps == 0


def test_range_reads_as_a_message_says_it_and_has_one_bound_a_side():
    assert [str(r) for r in (Range(above=0), Range(at_least=1), Range(at_least=0, below=1), Range())] == [
        "> 0",
        ">= 1",
        "in [0, 1)",
        "",
    ]
    assert str(Range(above=0, at_most=0.5)) == "in (0, 0.5]" and str(Range(at_most=180)) == "<= 180"
    with pytest.raises(ValueError, match="at most one lower"):
        Range(above=0, at_least=0)


def test_binarize_maps_zero_to_plus_one_and_refuses_nan():
    assert binarize(torch.tensor([-0.5, 0.0, 2.0])).tolist() == [-1, 1, 1]
    assert binarize(torch.tensor([0.2, 0.7]), threshold=0.5).tolist() == [-1, 1]
    with pytest.raises(BenchError, match="NaN or inf"):
        binarize(torch.tensor([1.0, float("inf")]))
