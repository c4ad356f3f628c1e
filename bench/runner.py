"""One run, start to end: resolve -> seed -> fit -> encode -> check codes -> evaluate -> record.

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
from bench.method import config_dict, make_config
from bench.registry import get_registry
from bench.results import SCHEMA_VERSION, default_results_dir, record_path, run_id, write_record

MAX_BITS = 1024
DEFAULT_VIEW = {"vectors": "pixels", "images": "images"}


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
    config = make_config(cls, dict(cell.overrides))
    view = cell.input or DEFAULT_VIEW[cls.input]
    identity = {"method": cls.name, "config": config_dict(config), "protocol": protocol.name, "input": view,
                "n_bits": cell.n_bits, "seed": cell.seed, "topk": list(protocol.topk),
                "tie_policy": metrics.TIE_POLICY}
    return cls, config, protocol, view, identity


def run_cell(cell: Cell, *, device="cpu", results_dir=None, data_root=None, download=False,
             force=False) -> tuple[dict, bool]:
    """Run one cell and store its record. Returns (record, ran); ran is False when it was already stored."""
    cls, config, protocol, view, identity = prepare(cell)
    path = record_path(Path(results_dir or default_results_dir()), identity)
    if path.exists() and not force:
        return json.loads(path.read_text()), False
    split = load_split(protocol, view, device, str(data_root) if data_root else None, download)
    torch.manual_seed(cell.seed)  # for methods that draw from torch's global generator (e.g. dropout)
    method = cls(cell.n_bits, config, device=device, seed=cell.seed)
    labels = None if cls.supervision == "none" else split.y_train
    extra = {}
    if cls.uses_validation:
        extra["validation"] = split.validation()
        method.checkpoint_path = cache_dir() / "checkpoints" / f"{path.stem}.pt"

    t0 = time.perf_counter()
    method.fit(split.x_train, labels, **extra)
    _sync(device)
    t1 = time.perf_counter()
    query_codes = check_codes(method.encode(split.x_query), split.x_query.shape[0], cell.n_bits, cls.name)
    db_codes = check_codes(method.encode(split.x_database), split.x_database.shape[0], cell.n_bits, cls.name)
    _sync(device)
    t2 = time.perf_counter()
    result = metrics.evaluate(query_codes, db_codes, split.y_query, split.y_database, topk=protocol.topk,
                              distance=method.ranking_distance)
    t3 = time.perf_counter()

    curves = result.pop("curves")
    counts = {k: result.pop(k) for k in ("zero_relevant_queries", "n_queries", "n_database", "n_bits")}
    record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id(identity),
        **{k: identity[k] for k in ("method", "config", "protocol", "input", "n_bits", "seed")},
        "config_is_default": config == cls.Config(),  # only default-config runs enter the paper tables
        "method_info": {"paper": cls.paper, "supervision": cls.supervision, "module": cls.__module__},
        "protocol_description": protocol.description,
        "split_seed": protocol.seed,
        "sizes": {"query": int(split.x_query.shape[0]), "database": int(split.x_database.shape[0]),
                  "train": int(split.x_train.shape[0])},
        "distance": method.ranking_distance,
        "metrics": result,
        "counts": counts,
        "curves": curves,
        "semantics": metrics.SEMANTICS,
        "training": getattr(method, "training_", None),  # deep methods: losses, epoch kept and why
        "timings": {"fit_s": t1 - t0, "encode_s": t2 - t1, "evaluate_s": t3 - t2},
        "environment": _environment(device),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_record(path, record)
    return record, True


def check_codes(codes, n_items: int, n_bits: int, method: str) -> torch.Tensor:
    """The contract on a method's output: a (n_items, n_bits) tensor of -1/+1, finite. Else a clear error."""
    if not isinstance(codes, torch.Tensor):
        raise BenchError(f"{method}.encode returned {type(codes).__name__}, expected a torch.Tensor")
    if codes.is_floating_point() and not torch.isfinite(codes).all():
        raise BenchError(f"{method} produced NaN or inf codes (diverged?); nothing was stored")
    if tuple(codes.shape) != (n_items, n_bits):
        raise BenchError(f"{method}.encode returned shape {tuple(codes.shape)}, expected ({n_items}, {n_bits})")
    if not ((codes == 1) | (codes == -1)).all():
        raise BenchError(f"{method}.encode returned values other than -1/+1")
    return codes.to(torch.int8)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def run_grid(cells: list[Cell], *, log=print, **kwargs) -> list[dict]:
    """Run the cells in order (all resolved first, so a bad cell fails before any work), with a progress line
    per cell. Returns the records, stored or freshly run."""
    for cell in cells:
        prepare(cell)
    records = []
    for i, cell in enumerate(cells, 1):
        label = f"[{i}/{len(cells)}] {cell.method} on {cell.protocol}, {cell.n_bits} bits, seed {cell.seed}"
        t = time.perf_counter()
        record, ran = run_cell(cell, **kwargs)
        m = record["metrics"]
        status = f"{time.perf_counter() - t:.1f}s" if ran else "stored, skipped"
        log(f"{label}: mAP {m['map']:.4f}  ({status})")
        records.append(record)
    return records
