"""The method contract: what every hashing method implements, and the helpers they share.

A method only fits and encodes; the harness owns data, splits, metrics, timing and storage (scikit-learn
discipline: hyperparameters in, no work in ``__init__``, ``fit`` returns self, learned state ends in ``_``).
"""

from __future__ import annotations

import contextlib
import dataclasses
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
    (a why-comment per field), and implement ``fit`` and ``encode``.
    """

    name: ClassVar[str]  # registry key, e.g. "itq"
    paper: ClassVar[str]  # short citation, e.g. "Gong & Lazebnik, CVPR 2011"
    supervision: ClassVar[str]  # one of SUPERVISION
    input: ClassVar[str]  # one of INPUTS
    smoke: ClassVar[dict] = {}  # Config overrides that make fit() take seconds (tests, CI)
    # Integer Config fields are counts (epochs, batch sizes, steps) and must be >= 1; the few where 0 means
    # something (e.g. "no noise input") are named here, and may be 0.
    zero_allowed: ClassVar[frozenset] = frozenset()
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
        (item_kind, *_rest) = typing.get_args(kind)
        return tuple(parse_value(part, item_kind, key) for part in text.split(",") if part.strip())
    if kind in (int, float, str):
        try:
            return kind(text)
        except ValueError:
            raise BenchError(f"--set {key}={text}: expected {kind.__name__}") from None
    raise BenchError(f"--set {key}: fields of type {kind} cannot be set from the command line")


def make_config(method_cls, overrides: dict | None = None):
    """The method's Config with ``overrides`` applied. Values may be strings (from ``--set``), parsed by the
    field's type, or already typed (from Python). Unknown keys fail with a suggestion."""
    overrides = dict(overrides or {})
    fields = {f.name for f in dataclasses.fields(method_cls.Config)}
    hints = typing.get_type_hints(method_cls.Config)
    values = {}
    for key, value in overrides.items():
        if key not in fields:
            raise unknown(f"--set key for {method_cls.name}", key, fields or ["(this method has no settings)"])
        kind = hints[key]
        if isinstance(value, str):
            value = parse_value(value, kind, key)
        elif kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif typing.get_origin(kind) is None and not isinstance(value, kind):
            raise BenchError(
                f"{method_cls.name}: {key}={value!r} has type {type(value).__name__}, expected {kind.__name__}"
            )
        low = 0 if key in method_cls.zero_allowed else 1
        if kind is int and value < low:
            raise BenchError(f"{method_cls.name}: {key}={value} must be an integer >= {low} (a count)")
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
