"""Config overrides (--set): parsed by each field's declared type, errors named."""

import dataclasses
from typing import Literal

import pytest
import torch

from bench import Method, binarize
from bench.errors import BenchError
from bench.method import make_config


class Knobs(Method):
    name, paper, supervision, input = "knobs", "test double", "none", "vectors"

    @dataclasses.dataclass(frozen=True)
    class Config:
        steps: int = 10
        lr: float = 0.1
        tanh: bool = False
        arch: Literal["improved_gan", "dcgan"] = "improved_gan"
        widths: tuple[int, ...] = (60, 30)

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


def test_binarize_maps_zero_to_plus_one_and_refuses_nan():
    assert binarize(torch.tensor([-0.5, 0.0, 2.0])).tolist() == [-1, 1, 1]
    assert binarize(torch.tensor([0.2, 0.7]), threshold=0.5).tolist() == [-1, 1]
    with pytest.raises(BenchError, match="NaN or inf"):
        binarize(torch.tensor([1.0, float("inf")]))
