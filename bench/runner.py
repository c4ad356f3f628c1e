"""One run, start to end: resolve -> seed -> fit -> encode -> check codes -> evaluate -> record. On retrieval
protocols the queries are ranked against the database; on clustering protocols every training item is clustered
(k-means on the codes, or the method's own clusters) and scored by NMI and ACC.

``run_grid`` runs every (method, bits, seed) cell of a grid, skipping cells already stored.
"""
from __future__ import annotations

import dataclasses
import json
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import torch

from bench import metrics
from bench.data import cache_dir, load_split
from bench.errors import BenchError
from bench.method import KMEANS_N_INIT, config_dict, kmeans, make_config
from bench.registry import get_registry
from bench.results import SCHEMA_VERSION, default_results_dir, record_path, run_id, write_record

MAX_BITS = 1024
DEFAULT_VIEW = {"vectors": "pixels", "images": "images"}
# How codes become clusters on clustering protocols (stored in every such record): k-means with k = the number of
# classes, for every method alike so the rows of a clustering table are comparable (methods.md B.1.4 (a)).
CLUSTERING = {"k": "number of classes", "kmeans_n_init": KMEANS_N_INIT, "kmeans_seed": "the run seed",
              "nmi_normalizer": "geometric"}


@dataclasses.dataclass(frozen=True)
class Cell:
    method: str
    protocol: str
    n_bits: int
    seed: int
    overrides: tuple = ()  # (key, value) pairs from --set
    input: str | None = None  # None: the method's default view


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
            done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
                                  timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None
    commit = git("rev-parse", "HEAD") or None
    status = git("status", "--porcelain", "--untracked-files=no", "--", "bench", "baselines", "plugins")
    return {"python": sys.version.split()[0], "platform": platform.platform(), "device": device,
            "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor(),
            "packages": {p: version(p) for p in ("hashbench", "torch", "numpy", "numba", "scikit-learn")},
            "git_commit": commit, "git_dirty": None if status is None else bool(status)}  # uncommitted code?


def prepare(cell: Cell):
    """Resolve a cell without running it: (method class, config, protocol, view, identity). Fails fast on bad
    input, before anything is computed or stored."""
    registry = get_registry()
    cls = registry.method(cell.method)
    protocol = registry.protocol(cell.protocol)
    if protocol.task not in cls.tasks:
        fitting = sorted(p.name for p in registry.protocols.values() if p.task in cls.tasks)
        raise BenchError(f"{cls.name} does not run on {protocol.task} protocols such as {protocol.name!r} "
                         f"(choices for {cls.name}: {', '.join(fitting)})")
    config = make_config(cls, dict(cell.overrides))
    view = cell.input or DEFAULT_VIEW[cls.input]
    identity = {"method": cls.name, "config": config_dict(config), "protocol": protocol.name, "input": view,
                # a method without codes (k-means on the input) has no code length: 0 for every --bits
                "n_bits": cell.n_bits if "retrieval" in cls.tasks else 0, "seed": cell.seed}
    if protocol.task == "retrieval":
        identity |= {"topk": list(protocol.topk), "tie_policy": metrics.TIE_POLICY}
    else:
        identity |= {"clustering": CLUSTERING}
    return cls, config, protocol, view, identity


def fit_method(cell: Cell, *, device="cpu", data_root=None, download=False):
    """The cell's method fitted as a run fits it (same seed, labels, validation split and checkpoint, so a deep
    method whose run finished here resumes at its end instead of training again). Returns (method, split,
    protocol, fit seconds); ``bench plot`` uses it to get codes and samples without storing a record."""
    cls, config, protocol, view, identity = prepare(cell)
    split = load_split(protocol, view, device, str(data_root) if data_root else None, download)
    torch.manual_seed(cell.seed)  # for methods that draw from torch's global generator (e.g. dropout)
    method = cls(identity["n_bits"], config, device=device, seed=cell.seed)
    labels = None if cls.supervision == "none" else split.y_train
    extra = {}
    if protocol.task == "clustering":
        # Scored on the very items it trains on, so no labels may choose an epoch: no validation split.
        method.n_clusters = int(torch.unique(split.y_train).numel())
    elif cls.uses_validation:
        extra["validation"] = split.validation()
    if cls.uses_unlabelled and split.x_train is not split.x_database:
        extra["unlabelled"] = split.x_database  # a labelled sample apart from the database: the rest, no labels
    if cls.uses_validation:
        method.checkpoint_path = cache_dir() / "checkpoints" / f"{record_path(Path(), identity).stem}.pt"
    t0 = time.perf_counter()
    method.fit(split.x_train, labels, **extra)
    _sync(device)
    return method, split, protocol, time.perf_counter() - t0


def run_cell(cell: Cell, *, device="cpu", results_dir=None, data_root=None, download=False,
             force=False) -> tuple[dict, bool]:
    """Run one cell and store its record. Returns (record, ran); ran is False when it was already stored."""
    cls, config, protocol, view, identity = prepare(cell)
    path = record_path(Path(results_dir or default_results_dir()), identity)
    if path.exists() and not force:
        return json.loads(path.read_text()), False
    method, split, protocol, fit_s = fit_method(cell, device=device, data_root=data_root, download=download)
    score = _retrieval if protocol.task == "retrieval" else _clustering
    evaluation, encode_s, evaluate_s = score(method, split, protocol, cell, device)

    record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id(identity),
        **{k: identity[k] for k in ("method", "config", "protocol", "input", "n_bits", "seed")},
        "config_is_default": config == cls.Config(),  # only default-config runs enter the paper tables
        "method_info": {"paper": cls.paper, "supervision": cls.supervision, "module": cls.__module__},
        "protocol_description": protocol.description,
        "task": protocol.task,
        "split_seed": protocol.seed,
        "sizes": {"query": int(split.x_query.shape[0]), "database": int(split.x_database.shape[0]),
                  "train": int(split.x_train.shape[0])},
        **evaluation,  # metrics, counts, curves, semantics, and how clusters were made
        "training": getattr(method, "training_", None),  # deep methods: losses, epoch kept and why
        "timings": {_fit_timing(method): fit_s, "encode_s": encode_s, "evaluate_s": evaluate_s},
        "environment": _environment(device),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_record(path, record)
    return record, True


def _fit_timing(method) -> str:
    """The key of the fit time: ``fit_s`` for a fit done start to finish in this process; ``fit_resumed_s`` when
    it resumed from a checkpoint (its seconds cover only the resumed part, so no table averages it as a fit)."""
    return "fit_resumed_s" if (getattr(method, "training_", None) or {}).get("resumed_from_epoch") else "fit_s"


def _retrieval(method, split, protocol, cell, device):
    """Encode queries and database, rank, score: (record fields, encode seconds, evaluate seconds)."""
    real = method.ranking_distance == metrics.REAL_DISTANCE  # real-valued outputs ranked by inner product
    t1 = time.perf_counter()
    query_codes = check_encoded(method.encode(split.x_query), split.x_query.shape[0], cell.n_bits, method)
    db_codes = check_encoded(method.encode(split.x_database), split.x_database.shape[0], cell.n_bits, method)
    _sync(device)
    t2 = time.perf_counter()
    if real:
        result = metrics.evaluate_real(query_codes, db_codes, split.y_query, split.y_database, topk=protocol.topk)
    else:
        result = metrics.evaluate(query_codes, db_codes, split.y_query, split.y_database, topk=protocol.topk,
                                  distance=method.ranking_distance)
    t3 = time.perf_counter()
    curves = result.pop("curves")
    counts = {k: result.pop(k) for k in ("zero_relevant_queries", "n_queries", "n_database", "n_bits")}
    fields = {"distance": method.ranking_distance, "metrics": result, "counts": counts, "curves": curves,
              "semantics": metrics.REAL_SEMANTICS if real else metrics.SEMANTICS}
    return fields, t2 - t1, t3 - t2


def _clustering(method, split, protocol, cell, device):
    """Cluster every training item (the method's own clusters, else k-means on its codes) and score NMI/ACC."""
    t1 = time.perf_counter()
    own = method.cluster(split.x_train)
    if own is None:
        codes = check_encoded(method.encode(split.x_train), split.x_train.shape[0], cell.n_bits, method)
        assignments, how = kmeans(codes.to(torch.float32), method.n_clusters, cell.seed)[0], "k-means on the codes"
    else:
        assignments, how = own, f"the method's own clusters ({method.name}.cluster)"
    _sync(device)
    t2 = time.perf_counter()
    result = metrics.evaluate_clustering(split.y_train, assignments)
    t3 = time.perf_counter()
    fields = {"metrics": result, "counts": {"n_items": int(split.x_train.shape[0]), "n_clusters": method.n_clusters,
                                            "n_bits": cell.n_bits},
              "curves": {}, "semantics": metrics.CLUSTERING_SEMANTICS,
              "clustering": {**CLUSTERING, "assignments": how}}
    return fields, t2 - t1, t3 - t2


def check_encoded(outputs, n_items: int, n_bits: int, method) -> torch.Tensor:
    """The contract on ``method.encode``'s result, else a clear error: a finite (n_items, n_bits) tensor; of -1/+1
    (returned as int8) for a code method, of floats for one that ranks real outputs (``ranking_distance ==
    "inner_product"``)."""
    name, real = method.name, method.ranking_distance == metrics.REAL_DISTANCE
    if not isinstance(outputs, torch.Tensor) or (real and not outputs.is_floating_point()):
        raise BenchError(f"{name}.encode returned {type(outputs).__name__} {getattr(outputs, 'dtype', '')}, "
                         f"expected a {'float ' if real else ''}torch.Tensor")
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


def run_grid(cells: list[Cell], *, log=print, **kwargs) -> list[dict]:
    """Run the cells in order (all resolved first, so a bad cell fails before any work), with a progress line
    per cell. Returns the records, stored or freshly run."""
    unique = {}
    for cell in cells:  # cells that resolve to one run (k-means at several --bits) run once
        identity = prepare(cell)[4]
        unique.setdefault(run_id(identity), (cell, identity["n_bits"]))
    records = []
    for i, (cell, n_bits) in enumerate(unique.values(), 1):
        size = f"{n_bits} bits" if n_bits else "no codes"
        label = f"[{i}/{len(unique)}] {cell.method} on {cell.protocol}, {size}, seed {cell.seed}"
        t = time.perf_counter()
        record, ran = run_cell(cell, **kwargs)
        m = record["metrics"]
        status = f"{time.perf_counter() - t:.1f}s" if ran else "stored, skipped"
        score = f"mAP {m['map']:.4f}" if "map" in m else f"NMI {m['nmi']:.4f}, ACC {m['acc']:.4f}"
        log(f"{label}: {score}  ({status})")
        records.append(record)
    return records
