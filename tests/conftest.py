import dataclasses
import os
import re
import typing
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from bench.data import PROTOCOLS, load_split
from bench.method import FitContext, field_range, make_config, seeded

# The read-only data shipped beside the checkout (CI clones with shared/ beside it), or the user's own root.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA_ROOT = Path(os.environ.get("HASHBENCH_DATA") or SHARED_DATA)
HAS_MNIST = (DATA_ROOT / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists()
HAS_CIFAR10_COPY = (DATA_ROOT / "cifar10" / "unpack.py").exists()
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DIGITS = next(p for p in PROTOCOLS if p.name == "digits")


def needs_mnist(test):
    """A test that reads the real MNIST: marked slow (the default run leaves it out; ``pytest -m slow`` runs it)
    and skipped where the files are absent."""
    return pytest.mark.slow(pytest.mark.skipif(not HAS_MNIST, reason=f"MNIST not found under {DATA_ROOT}")(test))


def needs_cifar10_copy(test):
    """A test that reads the lossless CIFAR-10 copy (``cifar10/unpack.py``): slow, skipped where it is absent."""
    return pytest.mark.slow(pytest.mark.skipif(not HAS_CIFAR10_COPY, reason="no lossless CIFAR-10 copy")(test))


def pytest_configure(config):
    """pytest-xdist's workers share the cores: each takes its share of torch's, OpenMP's and numba's threads (the
    environment before anything imports numba; the processes a test starts inherit it), not all of them each."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        share = max(1, (os.cpu_count() or 1) // workers)
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ[variable] = str(share)
        torch.set_num_threads(share)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items):
    """Every test of one method's session smoke fit (``fitted`` and a ``cls`` parameter) in one xdist group, so
    under ``--dist loadgroup`` that fit is made once, on one worker."""
    for item in (i for i in items if "fitted" in i.fixturenames):
        cls = getattr(item, "callspec", None) and item.callspec.params.get("cls")
        if cls is None:
            raise pytest.UsageError(f"{item.nodeid} asks for `fitted` without a `cls` parameter (its xdist group)")
        item.add_marker(pytest.mark.xdist_group(cls.name))


@pytest.fixture
def results_dir(tmp_path):
    return tmp_path / "results"


# Config integers that count passes of a training loop (iterations, epochs, sweeps, ...); lr_step and the like
# (where a schedule changes) are not counts of work.
SCHEDULE = re.compile(r"(^|_)(iter|iterations|epochs|sweeps|passes|steps|rounds)$")


def least_count(allowed) -> int:
    """The smallest integer a count's range (``bench.method.Range``) admits."""
    if allowed.at_least is not None:
        return int(allowed.at_least)
    return int(allowed.above) + 1 if allowed.above is not None else 1


def shortest_schedule(cls) -> dict:
    """The smoke config with every training-loop count at the least its Config accepts (0 where zero means "no
    such stage", else 1): enough for what needs no trained model (the shape and dtype of the codes, seeding),
    in a fraction of a smoke fit."""
    hints = typing.get_type_hints(cls.Config)
    counts = {
        f.name: least_count(field_range(cls.Config, f.name))
        for f in dataclasses.fields(cls.Config)
        if SCHEDULE.search(f.name) and hints[f.name] is int
    }
    return {**cls.smoke, **counts}


@dataclasses.dataclass
class SmokeFit:
    method: object  # the instance fit() was called on
    returned: object  # what fit() returned (the contract: the instance itself)
    split: object  # the digits split it was fitted on
    encoded: dict = dataclasses.field(default_factory=dict, repr=False)

    def codes(self, part: str) -> torch.Tensor:
        """The method's codes of the split's ``part`` ("query", "database"), encoded once: a deep method's
        encode of the 1,697 digits takes seconds, and several tests read the same codes."""
        if part not in self.encoded:
            self.encoded[part] = self.method.encode(getattr(self.split, f"x_{part}"))
        return self.encoded[part]

    def score(self) -> float:
        """mAP of the query codes against the database codes (of the real-valued outputs, for a method that
        ranks them)."""
        from bench.metrics import REAL_DISTANCE, evaluate, evaluate_real

        score_fn = evaluate_real if self.method.ranking_distance == REAL_DISTANCE else evaluate
        return score_fn(self.codes("query"), self.codes("database"), self.split.y_query, self.split.y_database)["map"]


def _refuse_global_seeding(*args, **kwargs):
    raise AssertionError(
        "a method seeded torch's global generator inside fit(); draw from self.generator() and "
        "let the runner seed module initialisation (bench.method.seeded)"
    )


# The training items of a shortest-schedule fit: an epoch of them is a few batches, and every smoke config's
# sizes (KSH's 300 labelled items, BRE's 200 base items, SDH's 100 anchors) fit in them.
SHORTEST_ITEMS = 400


def smoke_fit(cls, n_bits: int, seed: int = 0, device: str = "cpu", shortest: bool = False) -> SmokeFit:
    """One fit of ``cls``'s smoke config (``shortest``: its shortest schedule, on the first ``SHORTEST_ITEMS``
    training items) on digits as the runner fits it: labels for supervised methods, the validation split for
    ``uses_validation`` methods, no checkpoint, torch's global generator seeded around fit. Seeding that generator
    inside fit() is refused, so a method cannot hide behind its own seed."""
    from bench.runner import DEFAULT_VIEW  # here, not at import: a broken runner fails these tests, not every test

    split = load_split(DIGITS, DEFAULT_VIEW[cls.input], device)
    items = slice(SHORTEST_ITEMS if shortest else None)
    x_train, labels = split.x_train[items], None if cls.supervision == "none" else split.y_train[items]
    context = FitContext(validation=split.validation() if cls.uses_validation else None, checkpoint=None)
    config = make_config(cls, shortest_schedule(cls) if shortest else cls.smoke)
    method = cls(n_bits, config, device=device, seed=seed)
    with (
        seeded(seed, device),
        mock.patch.object(torch, "manual_seed", _refuse_global_seeding),
        mock.patch.object(torch.random, "manual_seed", _refuse_global_seeding),
    ):
        returned = method.fit(x_train, labels, context)
    return SmokeFit(method, returned, split)


@pytest.fixture(scope="session")
def fitted():
    """``fitted(cls, n_bits, seed=0, shortest=False)``: that smoke fit (``smoke_fit``), made once per test session
    and shared by every test that asks for it (a failed fit is remembered and raised again)."""
    cache = {}

    def get(cls, n_bits: int, seed: int = 0, shortest: bool = False) -> SmokeFit:
        key = (cls, n_bits, seed, shortest)
        if key not in cache:
            try:
                cache[key] = smoke_fit(cls, n_bits, seed, shortest=shortest)
            except Exception as error:  # noqa: BLE001 (re-raised for every test that asks)
                cache[key] = error
        if isinstance(cache[key], Exception):
            raise cache[key]
        return cache[key]

    return get


def random_case(rng, n_q, n_d, n_bits, n_classes=4, multi_label=False, n_patterns=None, flip=0.1):
    """Codes drawn from few prototypes with some flipped bits: heavy ties, like real codes."""
    n_patterns = n_patterns or 4
    protos = rng.choice([-1, 1], (n_patterns, n_bits))
    q = protos[rng.integers(0, n_patterns, n_q)]
    d = protos[rng.integers(0, n_patterns, n_d)]
    d = np.where(rng.random(d.shape) < flip, -d, d)
    if multi_label:
        ql = (rng.random((n_q, n_classes)) < 0.3).astype(np.int64)
        dl = (rng.random((n_d, n_classes)) < 0.3).astype(np.int64)
    else:
        ql, dl = rng.integers(0, n_classes, n_q), rng.integers(0, n_classes, n_d)
    return q, d, ql, dl
