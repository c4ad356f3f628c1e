"""The method contract: what every hashing method implements, and the helpers they share.

A method only fits and encodes; the harness owns data, splits, metrics, timing and storage (scikit-learn
discipline: hyperparameters in, no work in ``__init__``, ``fit`` returns self, learned state ends in ``_``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import typing
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import torch

from bench.errors import BenchError, unknown

SUPERVISION = ("none", "labels", "pairs")  # "none": the runner passes no labels at all
INPUTS = ("vectors", "images")  # vectors: float32 (n, d); images: uint8 (n, c, h, w)
TASKS = ("retrieval", "clustering")  # what protocols a method can run on (bench.data.Protocol.task)


@dataclasses.dataclass(frozen=True)
class FitContext:
    """What ``fit`` may use besides the training data and labels, given by the runner in one object (nothing is
    set on a method after construction). Randomness: draw from ``Method.generator()``; module initialisation
    and dropout draw from torch's global generator, which the runner seeds with the run seed around fit
    (``seeded``), so a method never seeds anything itself."""

    validation: typing.Any = None  # bench.data.Validation carved from the training set (uses_validation methods)
    unlabelled: torch.Tensor | None = None  # the database without labels (uses_unlabelled methods, *-cao2018)
    n_clusters: int | None = None  # clustering protocols: the number of clusters to make
    checkpoint: Path | None = None  # uses_validation methods: where resumable training state lives (cache)


@contextlib.contextmanager
def seeded(seed: int, device="cpu"):
    """torch's global generators seeded with ``seed`` for the block, and restored after it."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
        torch.manual_seed(seed)
        yield


class Method(ABC):
    """Base class of every hashing method.

    Subclasses set the class variables, define a frozen ``Config`` dataclass whose defaults are the paper's values
    (a why-comment per field, and its valid range where the default rule does not fit: ``setting``), and implement
    ``fit`` and ``encode``.
    """

    name: ClassVar[str]  # registry key, e.g. "itq"
    paper: ClassVar[str]  # short citation, e.g. "Gong & Lazebnik, CVPR 2011"
    supervision: ClassVar[str]  # one of SUPERVISION
    input: ClassVar[str]  # one of INPUTS
    smoke: ClassVar[dict] = {}  # Config overrides that make fit() take seconds (tests, CI)
    # Deep methods: True makes the runner give fit() ``context.validation`` (a split carved from the training set)
    # for model selection, and ``context.checkpoint`` (in the cache folder) for resumable training.
    uses_validation: ClassVar[bool] = False
    # Semi-supervised methods: True makes the runner give fit() ``context.unlabelled`` (the database images, no
    # labels) on protocols whose labelled training set is a sample apart from the database (the *-cao2018 ones).
    uses_unlabelled: ClassVar[bool] = False
    # Every hashing method also runs on clustering protocols: the runner clusters its codes with k-means. A method
    # with clusters of its own (a softmax head, or k-means itself) returns them from ``cluster``; one without codes
    # leaves "retrieval" out of ``tasks``. On clustering protocols fit() gets ``context.n_clusters``.
    tasks: ClassVar[tuple] = TASKS
    # Named recipes: {name: Config overrides} (bench.recipes). "default" is the Config itself and is not listed;
    # a paper table's row names its method and recipe, and ``bench run --recipe NAME`` runs one.
    recipes: ClassVar[dict] = {}
    # Whether a cell asks a Ray cluster for a GPU (bench.executors) when it has any; None: the image methods do.
    needs_gpu: ClassVar[bool | None] = None

    @dataclasses.dataclass(frozen=True)
    class Config:
        pass

    @classmethod
    def resolve_config(cls, config, n_bits: int):
        """The config as it trains at ``n_bits``, for a setting that acts differently with the code length: the
        runner stores this resolved config, so a record says exactly what trained. Default: as it is."""
        return config

    def __init__(self, n_bits: int, config: Config | None = None, *, device="cpu", seed: int = 0):
        self.n_bits = n_bits
        self.config = config if config is not None else self.Config()
        self.device = torch.device(device)
        self.seed = seed

    @abstractmethod
    def fit(self, x: torch.Tensor, y: torch.Tensor | None = None, context: FitContext = FitContext()) -> Method:
        """Learn from the training set ``x`` (on ``self.device``); ``y`` only for supervised methods
        (class ids (n,) int64 or multi-hot (n, c) float32); everything else in ``context`` (see FitContext).
        Returns self. A method may leave a JSON-able ``training_`` dict (losses, the epoch kept and why), which
        the runner stores in the record."""

    @abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes of ``x``: (n, n_bits) int8 in {-1, +1}, never 0, on ``self.device``."""

    def cluster(self, x: torch.Tensor) -> torch.Tensor | None:
        """Cluster ids (n,) of ``x`` when the method makes its own clusters; None: k-means on the codes."""
        return None

    @property
    def ranking_distance(self) -> str:
        """The distance the evaluator ranks this method's codes by (bench.metrics.DISTANCES)."""
        return "hamming"

    def generator(self) -> torch.Generator:
        """A CPU generator seeded with the run seed. Random draws are made on the CPU and moved to the device,
        so a seed gives the same numbers on every device."""
        return torch.Generator().manual_seed(self.seed)

    def check_labels(self, y):
        """Supervised methods call this first: a clear error, not a crash, when fit() gets no labels."""
        if y is None:
            raise BenchError(f"{self.name} is supervised ({self.supervision}): fit() needs training labels")
        return y

    def check_fitted(self, *attributes: str) -> None:
        if any(not hasattr(self, a) for a in attributes):
            raise BenchError(f"{self.name}: encode() called before fit()")


def binarize(t: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """sign(t - threshold) as int8 {-1, +1} with sign(0) = +1 (the convention recorded with every result).

    Non-finite values are an error, not a code: sign(NaN) would silently become a bit."""
    if not torch.isfinite(t).all():
        raise BenchError("non-finite values (NaN or inf) in the real-valued outputs to binarize; the method diverged")
    return torch.where(t >= threshold, 1, -1).to(torch.int8)


@dataclasses.dataclass(frozen=True)
class Range:
    """Where a Config number may lie: each bound optional, strict (``above``, ``below``) or not (``at_least``,
    ``at_most``); for a tuple field, where each of its items may lie. Every float must also be finite."""

    above: float | None = None
    at_least: float | None = None
    below: float | None = None
    at_most: float | None = None

    def __post_init__(self):
        if (self.above is not None and self.at_least is not None) or (
            self.below is not None and self.at_most is not None
        ):
            raise ValueError(f"{self!r}: a range has at most one lower and one upper bound")

    def admits(self, x) -> bool:
        return (
            (self.above is None or x > self.above)
            and (self.at_least is None or x >= self.at_least)
            and (self.below is None or x < self.below)
            and (self.at_most is None or x <= self.at_most)
        )

    def __str__(self) -> str:
        """As a message says it: "> 0", ">= 1", "in [0, 1)"; "" when unbounded."""
        low = ("(", ">", self.above) if self.above is not None else ("[", ">=", self.at_least)
        high = (")", "<", self.below) if self.below is not None else ("]", "<=", self.at_most)
        if low[2] is not None and high[2] is not None:
            return f"in {low[0]}{low[2]:g}, {high[2]:g}{high[0]}"
        return " ".join(f"{sign} {bound:g}" for _, sign, bound in (low, high) if bound is not None)


RANGE = "range"  # the metadata key of a Config field's Range (set by ``setting``)
COUNT = Range(at_least=1)  # an int field that states no range is a count: epochs, batch sizes, widths, steps


def setting(default, *, above=None, at_least=None, below=None, at_most=None) -> typing.Any:
    """A Config field with its default and the range its value must lie in, checked by ``make_config``:
    ``lr: float = setting(0.01, above=0)``. Fields declared plainly follow the default rule (``field_range``)."""
    return dataclasses.field(default=default, metadata={RANGE: Range(above, at_least, below, at_most)})


def field_range(config_cls, name: str) -> Range:
    """The range of Config field ``name``: the one its nearest declaration states with ``setting`` (a subclass
    that redeclares a field for another default keeps its base's range), else the default rule: ints (and the
    items of int tuples) are counts >= 1, floats any finite number. Tuples must also be non-empty, Literals one
    of their values; strings and bools are only typed."""
    for base in config_cls.__mro__:
        declared = getattr(base, "__dataclass_fields__", {}).get(name)
        if declared is not None and RANGE in declared.metadata:
            return declared.metadata[RANGE]
    return COUNT if item_kind(typing.get_type_hints(config_cls)[name]) is int else Range()


def item_kind(kind):
    """The type of a tuple field's items; any other type as it is."""
    return typing.get_args(kind)[0] if typing.get_origin(kind) is tuple else kind


def parse_value(text: str, kind, key: str):
    """Turn the text of ``--set key=value`` into the field's declared type, or say why not."""
    origin = typing.get_origin(kind)
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise BenchError(f"--set {key}={text}: expected a boolean (true/false)")
    if origin is typing.Literal:
        choices = typing.get_args(kind)
        if text not in choices:
            raise unknown(f"value for {key}", text, choices)
        return text
    if origin is tuple:
        return tuple(parse_value(part, item_kind(kind), key) for part in text.split(",") if part.strip())
    if kind in (int, float, str):
        try:
            return kind(text)
        except ValueError:
            raise BenchError(f"--set {key}={text}: expected {kind.__name__}") from None
    raise BenchError(f"--set {key}: fields of type {kind} cannot be set from the command line")


def typed_value(value, kind, key: str):
    """A Python value (a recipe's, a stored record's, the API's) as the field's declared type: ints widen to
    floats and lists become tuples; a value of another type (a bool for an int included) is refused."""
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        return value  # its membership is checked with the range
    if origin is tuple and isinstance(value, (tuple, list)):
        return tuple(typed_value(item, item_kind(kind), key) for item in value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is None and isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    expected = getattr(kind, "__name__", str(kind)) if origin is None else str(kind)
    raise BenchError(f"{key}={value!r} has type {type(value).__name__}, expected {expected}")


def range_violation(value, kind, valid: Range) -> str | None:
    """What ``value`` (of the field's type) must be when it is outside the field's range; None when it is inside."""
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        choices = typing.get_args(kind)
        return None if value in choices else "one of " + ", ".join(repr(c) for c in choices)
    if origin is tuple:
        item = item_kind(kind)
        if value and not any(range_violation(v, item, valid) for v in value):
            return None
        items = "integers" if item is int else "finite numbers"
        return f"a non-empty tuple of {items} {valid}".rstrip()
    if kind is float and not math.isfinite(value):
        return f"a finite number {valid}".rstrip()
    if kind in (int, float) and not valid.admits(value):
        return f"an integer {valid}" if kind is int else str(valid)
    return None


def make_config(method_cls, overrides: dict | None = None):
    """The method's Config with ``overrides`` applied. Values may be strings (from ``--set``), parsed by the
    field's type, or already typed (from Python); each must lie in its field's range (``field_range``), so a bad
    value fails here, naming the method, the field, the value and the range, before any data loads. Unknown keys
    fail with a suggestion."""
    overrides = dict(overrides or {})
    fields = {f.name for f in dataclasses.fields(method_cls.Config)}
    hints = typing.get_type_hints(method_cls.Config)
    values = {}
    for key, value in overrides.items():
        if key not in fields:
            raise unknown(f"--set key for {method_cls.name}", key, fields or ["(this method has no settings)"])
        kind = hints[key]
        try:
            value = parse_value(value, kind, key) if isinstance(value, str) else typed_value(value, kind, key)
        except BenchError as error:
            raise BenchError(f"{method_cls.name}: {error}") from None
        violation = range_violation(value, kind, field_range(method_cls.Config, key))
        if violation:
            raise BenchError(f"{method_cls.name}: {key}={value!r} must be {violation}")
        values[key] = value
    return method_cls.Config(**values)


KMEANS_N_INIT = 10  # k-means restarts (scikit-learn's classic default); the best inertia is kept


def kmeans(x: torch.Tensor, n_clusters: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ with ``KMEANS_N_INIT`` restarts (scikit-learn, on the CPU): (cluster ids (n,) int64, centres
    (k, d) float32), both on ``x``'s device."""
    from sklearn.cluster import KMeans

    if not 1 <= n_clusters <= x.shape[0]:
        raise BenchError(f"k-means: n_clusters={n_clusters} must be in 1..{x.shape[0]} (the number of items)")
    fitted = KMeans(n_clusters, n_init=KMEANS_N_INIT, random_state=seed).fit(x.detach().cpu().numpy())
    return (
        torch.from_numpy(fitted.labels_.astype("int64")).to(x.device),
        torch.from_numpy(fitted.cluster_centers_.astype("float32")).to(x.device),
    )


def config_dict(config) -> dict:
    return dataclasses.asdict(config)


def label_matrix(y: torch.Tensor) -> torch.Tensor:
    """Labels as a float32 (n, n_classes) matrix: class ids become one-hot rows, multi-hot stays as it is."""
    if y.ndim == 2:
        return y.to(torch.float32)
    return torch.nn.functional.one_hot(y.long(), int(y.max()) + 1).to(torch.float32)
