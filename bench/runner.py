"""One run, start to end: resolve -> seed -> fit -> encode -> check codes -> evaluate -> record. On retrieval
protocols the queries are ranked against the database; on clustering protocols every training item is clustered
(k-means on the codes, or the method's own clusters) and scored by NMI and ACC.

A cell (method, protocol, bits, seed, recipe, --set overrides, input view) is resolved once by ``prepare`` into a
``Plan``: the config it trains (``bench.recipes.resolve``), its identity and record path. ``run_grid`` runs every
cell of a grid, skipping cells already stored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import platform
import subprocess
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

import torch

from bench import metrics, recipes
from bench.codes import Codes
from bench.data import VIEWS, cache_dir, load_split
from bench.errors import BenchError, unknown
from bench.method import KMEANS_N_INIT, FitContext, kmeans, seeded
from bench.registry import get_registry
from bench.results import (
    SCHEMA_VERSION,
    default_results_dir,
    identity_of,
    read_record,
    record_path,
    run_id,
    store_record,
)

MAX_BITS = 1024
DEFAULT_VIEW = {"vectors": "pixels", "images": "images"}
# How codes become clusters on clustering protocols (stored in every such record): k-means with k = the number of
# classes, for every method alike so the rows of a clustering table are comparable.
CLUSTERING = {
    "k": "number of classes",
    "kmeans_n_init": KMEANS_N_INIT,
    "kmeans_seed": "the run seed",
    "nmi_normalizer": "geometric",
}


@dataclasses.dataclass(frozen=True)
class Cell:
    method: str
    protocol: str
    n_bits: int
    seed: int
    recipe: str = recipes.DEFAULT  # one of the method's recipes (bench.recipes)
    overrides: tuple = ()  # (key, value) pairs from --set, over the recipe
    input: str | None = None  # None: the method's default view
    under: str | None = None  # a table-wide recipe laid under ``recipe`` when the method declares it

    def label(self) -> str:
        size = f"{self.n_bits} bits" if self.n_bits else "no codes"
        recipe = "" if self.recipe == recipes.DEFAULT else f", recipe {self.recipe}"
        under = f" under {self.under}" if self.under else ""
        return f"{self.method} on {self.protocol}, {size}, seed {self.seed}{recipe}{under}"


@dataclasses.dataclass(frozen=True)
class Plan:
    """A cell resolved, before anything runs: the method class, the config it trains, the protocol, the input
    view, the code length (0 for a method without codes) and the identity fields of its record."""

    cell: Cell
    cls: type
    config: object
    protocol: object
    view: str
    n_bits: int
    identity: dict  # identity_of's fields: method, config_hash, protocol, input, n_bits, seed, evaluation

    @property
    def run_id(self) -> str:
        return run_id(identity_of(self.identity))

    def record_path(self, results_dir) -> Path:
        return record_path(Path(results_dir or default_results_dir()), self.identity)


def check_bits(bits) -> list[int]:
    out = []
    for b in bits:
        if isinstance(b, bool) or not isinstance(b, int) and not (isinstance(b, str) and b.strip().isdigit()):
            raise BenchError(f"bits must be integers in 1..{MAX_BITS}; got {b!r}")
        b = int(b)
        if not 1 <= b <= MAX_BITS:
            raise BenchError(f"bits must be integers in 1..{MAX_BITS}; got {b}")
        out.append(b)
    return out


def resolve_device(device: str | None) -> str:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"device {device!r} asked for, but CUDA is not available here (choices: cpu)")
    if not (device == "cpu" or device.startswith("cuda")):
        raise BenchError(f"unknown device {device!r} (choices: cpu, cuda, cuda:N)")
    return device


def _environment(device: str) -> dict:
    def version(pkg):
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    def git(*args):  # in the checkout that holds this package, if any
        try:
            done = subprocess.run(
                ["git", *args], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=5
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD") or None
    status = git("status", "--porcelain", "--untracked-files=no", "--", "bench", "baselines", "plugins")
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor(),
        "packages": {p: version(p) for p in ("hashbench", "torch", "numpy", "numba", "scikit-learn")},
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
    }  # uncommitted code?


def prepare(cell: Cell) -> Plan:
    """Resolve a cell without running it. Fails fast on bad input, before anything is computed or stored."""
    registry = get_registry()
    cls = registry.method(cell.method)
    protocol = registry.protocol(cell.protocol)
    if protocol.task not in cls.tasks:
        fitting = sorted(p.name for p in registry.protocols.values() if p.task in cls.tasks)
        raise BenchError(
            f"{cls.name} does not run on {protocol.task} protocols such as {protocol.name!r} "
            f"(choices for {cls.name}: {', '.join(fitting)})"
        )
    n_bits = cell.n_bits if "retrieval" in cls.tasks else 0  # a method without codes: 0 for every --bits
    config = recipes.resolve(cls, n_bits, cell.recipe, dict(cell.overrides), cell.under)
    view = cell.input or DEFAULT_VIEW[cls.input]
    if view not in VIEWS:
        raise unknown("input view", view, VIEWS)
    evaluation = (
        {"topk": sorted(protocol.topk), "tie_policy": metrics.TIE_POLICY}
        if protocol.task == "retrieval"
        else {"clustering": CLUSTERING}
    )
    identity = {
        "method": cls.name,
        "config_hash": recipes.config_hash(recipes.config_json(config)),
        "protocol": protocol.name,
        "input": view,
        "n_bits": n_bits,
        "seed": cell.seed,
        "evaluation": evaluation,
    }
    return Plan(cell, cls, config, protocol, view, n_bits, identity)


def n_clusters(split) -> int:
    """The clusters a clustering protocol asks for: one per class of its items (the fit and the scoring agree)."""
    return int(torch.unique(split.y_train).numel())


def code_version(cls) -> str:
    """A hash of the source file that defines ``cls``: a checkpoint made by other code of the method is not
    resumed (its training may differ), it is trained afresh."""
    source = inspect.getsourcefile(cls)
    return hashlib.sha1(Path(source).read_bytes()).hexdigest()[:10] if source else "unknown"


def checkpoint_path(plan: Plan) -> Path:
    """Where the plan's resumable training state lives: the cache folder, keyed by the cell's run id and the
    method's code version."""
    return cache_dir() / "checkpoints" / f"{plan.record_path(Path()).stem}-code{code_version(plan.cls)}.pt"


def fit_method(plan: Plan, *, device="cpu", data_root=None, download=False, fresh=False):
    """The plan's method fitted as a run fits it (same seed, labels, validation split and checkpoint, so a deep
    method whose run was interrupted, or finished here, resumes where it stopped). ``fresh``: train from scratch,
    discarding the checkpoint (``--force``). Returns (method, split, fit seconds); ``bench plot`` uses it to get
    codes and samples without storing a record."""
    cls, protocol = plan.cls, plan.protocol
    checkpoint = checkpoint_path(plan) if cls.uses_validation else None
    if fresh and checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    split = load_split(protocol, plan.view, device, str(data_root) if data_root else None, download)
    labels = None if cls.supervision == "none" else split.y_train
    context = FitContext(
        # Clustering protocols score the very items they train on, so no labels may choose an epoch.
        validation=split.validation() if cls.uses_validation and protocol.task == "retrieval" else None,
        # a labelled sample apart from the database: the rest, without labels
        unlabelled=split.x_database if cls.uses_unlabelled and split.x_train is not split.x_database else None,
        n_clusters=n_clusters(split) if protocol.task == "clustering" else None,
        checkpoint=checkpoint,
    )
    method = cls(plan.n_bits, plan.config, device=device, seed=plan.cell.seed)
    t0 = time.perf_counter()
    with seeded(plan.cell.seed, device):  # module initialisation, dropout and noise layers
        method.fit(split.x_train, labels, context)
    _sync(device)
    return method, split, time.perf_counter() - t0


def read_stored(plan: Plan, results_dir) -> dict | None:
    """The plan's stored record, or None when there is none. A record that cannot be read, or of another
    schema version, is warned about by file name and treated as missing: the cell runs again and replaces it."""
    path = plan.record_path(results_dir)
    if not path.exists():
        return None
    try:
        return read_record(path)
    except (OSError, ValueError, KeyError) as error:
        warnings.warn(f"{path}: unusable stored record ({error}); the cell runs again", stacklevel=2)
        return None


def run_cell(
    cell: Cell | Plan, *, device="cpu", results_dir=None, data_root=None, download=False, force=False
) -> tuple[dict, bool]:
    """Run one cell and store its record. Returns (record, ran); ran is False when it was already stored.
    ``force``: run it again from scratch, its training checkpoint discarded."""
    plan = cell if isinstance(cell, Plan) else prepare(cell)
    stored = None if force else read_stored(plan, results_dir)
    if stored is not None:
        return stored, False
    record, _ = compute_record(plan, device=device, data_root=data_root, download=download, fresh=force)
    store_record(plan.record_path(results_dir), record)
    return record, True


def compute_record(
    plan: Plan, *, device="cpu", data_root=None, download=False, fresh=False, keep_codes=False
) -> tuple[dict, Codes | None]:
    """Fit (``fresh``: from scratch, see ``fit_method``), encode, score: the plan's record, not yet stored (an
    executor's worker returns it to the driver, which writes it), and with ``keep_codes`` the run's codes,
    bit-packed (``bench.codes.Codes``; None on clustering protocols and for real-valued outputs)."""
    method, split, fit_s = fit_method(plan, device=device, data_root=data_root, download=download, fresh=fresh)
    protocol, cls = plan.protocol, plan.cls
    score = _retrieval if protocol.task == "retrieval" else _clustering
    evaluation, encode_s, evaluate_s, codes = score(method, split, plan, device)
    record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": plan.run_id,
        **plan.identity,  # method, config hash, protocol, input, bits, seed, evaluation settings
        "config": recipes.config_json(plan.config),  # in full, resolved at the code length
        "recipe": plan.cell.recipe,
        "under": plan.cell.under,
        "overrides": dict(plan.cell.overrides),  # how it was asked for (not identity)
        "method_info": {"paper": cls.paper, "supervision": cls.supervision, "module": cls.__module__},
        "protocol_description": protocol.description,
        "task": protocol.task,
        "split_seed": protocol.seed,
        "sizes": {
            "query": int(split.x_query.shape[0]),
            "database": int(split.x_database.shape[0]),
            "train": int(split.x_train.shape[0]),
        },
        "data_provenance": split.provenance,  # list-file protocols: each list's sha256, path rewrites, cache
        **evaluation,  # metrics, counts, curves, semantics, and how clusters were made
        "training": getattr(method, "training_", None),  # deep methods: losses, epoch kept and why
        "timings": {_fit_timing(method): fit_s, "encode_s": encode_s, "evaluate_s": evaluate_s},
        "environment": _environment(device),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if not (keep_codes and codes):
        return record, None
    return record, Codes.packed(*codes, split.y_query, split.y_database)


def _fit_timing(method) -> str:
    """The key of the fit time: ``fit_s`` for a fit done start to finish in this process; ``fit_resumed_s`` when
    it resumed from a checkpoint (its seconds cover only the resumed part, so no table averages it as a fit)."""
    return "fit_resumed_s" if (getattr(method, "training_", None) or {}).get("resumed_from_epoch") else "fit_s"


def _retrieval(method, split, plan, device):
    """Encode queries and database, rank, score: (record fields, encode seconds, evaluate seconds, (query codes,
    database codes) or None for real-valued outputs)."""
    real = method.ranking_distance == metrics.REAL_DISTANCE  # real-valued outputs ranked by inner product
    t1 = time.perf_counter()
    query_codes = check_encoded(method.encode(split.x_query), split.x_query.shape[0], plan.n_bits, method)
    db_codes = check_encoded(method.encode(split.x_database), split.x_database.shape[0], plan.n_bits, method)
    _sync(device)
    t2 = time.perf_counter()
    if real:
        result = metrics.evaluate_real(query_codes, db_codes, split.y_query, split.y_database, topk=plan.protocol.topk)
    else:
        result = metrics.evaluate(
            query_codes,
            db_codes,
            split.y_query,
            split.y_database,
            topk=plan.protocol.topk,
            distance=method.ranking_distance,
        )
    t3 = time.perf_counter()
    curves = result.pop("curves")
    counts = {k: result.pop(k) for k in ("zero_relevant_queries", "n_queries", "n_database", "n_bits")}
    fields = {
        "distance": method.ranking_distance,
        "metrics": result,
        "counts": counts,
        "curves": curves,
        "semantics": metrics.REAL_SEMANTICS if real else metrics.SEMANTICS,
    }
    return fields, t2 - t1, t3 - t2, None if real else (query_codes, db_codes)


def _clustering(method, split, plan, device):
    """Cluster every training item (the method's own clusters, else k-means on its codes) and score NMI/ACC."""
    k = n_clusters(split)
    t1 = time.perf_counter()
    own = method.cluster(split.x_train)
    if own is None:
        codes = check_encoded(method.encode(split.x_train), split.x_train.shape[0], plan.n_bits, method)
        assignments = kmeans(codes.to(torch.float32), k, plan.cell.seed)[0]
        how = "k-means on the codes"
    else:
        assignments, how = own, f"the method's own clusters ({method.name}.cluster)"
    _sync(device)
    t2 = time.perf_counter()
    result = metrics.evaluate_clustering(split.y_train, assignments)
    t3 = time.perf_counter()
    fields = {
        "metrics": result,
        "counts": {"n_items": int(split.x_train.shape[0]), "n_clusters": k, "n_bits": plan.n_bits},
        "curves": {},
        "semantics": metrics.CLUSTERING_SEMANTICS,
        "clustering": {**CLUSTERING, "assignments": how},
    }
    return fields, t2 - t1, t3 - t2, None


def check_encoded(outputs, n_items: int, n_bits: int, method) -> torch.Tensor:
    """The contract on ``method.encode``'s result, else a clear error: a finite (n_items, n_bits) tensor; of -1/+1
    (returned as int8) for a code method, of floats for one that ranks real outputs (``ranking_distance ==
    "inner_product"``)."""
    name, real = method.name, method.ranking_distance == metrics.REAL_DISTANCE
    if not isinstance(outputs, torch.Tensor) or (real and not outputs.is_floating_point()):
        raise BenchError(
            f"{name}.encode returned {type(outputs).__name__} {getattr(outputs, 'dtype', '')}, "
            f"expected a {'float ' if real else ''}torch.Tensor"
        )
    if tuple(outputs.shape) != (n_items, n_bits):
        raise BenchError(f"{name}.encode returned shape {tuple(outputs.shape)}, expected ({n_items}, {n_bits})")
    if outputs.is_floating_point() and not torch.isfinite(outputs).all():
        raise BenchError(f"{name} produced NaN or inf outputs (diverged?); nothing was stored")
    if real:
        return outputs
    if not ((outputs == 1) | (outputs == -1)).all():
        raise BenchError(f"{name}.encode returned values other than -1/+1")
    return outputs.to(torch.int8)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
