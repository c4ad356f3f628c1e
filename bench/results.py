"""Run records: one JSON file per run, written atomically, loaded into one long pandas DataFrame.

A record's file name holds its run id (a hash of everything that determines the result: method, config hash,
protocol, input view, bits, seed, evaluation settings; ``identity_of``), so two processes writing different cells
never touch the same file, and two writing the same cell replace one complete file with another (temp file + rename).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import pandas as pd

from bench.errors import BenchError

SCHEMA_VERSION = 2
RESULTS_ENV = "HASHBENCH_RESULTS"


def default_results_dir() -> Path:
    return Path(os.environ.get(RESULTS_ENV) or "results")


def run_id(identity: dict) -> str:
    """A short stable hash of the JSON-serialised identity of a run (``identity_of``)."""
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def record_path(results_dir: Path, record: dict) -> Path:
    """Where a run's record lives (``record``: a record, or just the fields ``identity_of`` reads)."""
    name = (
        f"{record['method']}_{record['protocol']}_{record['input']}_{record['n_bits']}b_"
        f"s{record['seed']}_{run_id(identity_of(record))}.json"
    )
    return Path(results_dir) / "runs" / name


def write_record(path: Path, record: dict) -> None:
    """Atomic: the record appears complete or not at all (a killed run leaves only a stray temp file, ignored)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def store_record(path: Path, record: dict) -> None:
    """``write_record``, and where that fails (a folder made read-only or a disk filled during the run), the record
    kept in the cache folder instead, so the run's hours are not lost: a BenchError names both places."""
    try:
        write_record(path, record)
        return
    except OSError as error:
        failure = f"cannot write the record {path} ({error.strerror or error})"
    from bench.data import cache_dir  # here: bench.data is heavy, and only this rare path needs it

    fallback = cache_dir() / "unsaved-records" / Path(path).name
    try:
        write_record(fallback, record)
    except OSError as error:
        raise BenchError(f"{failure}; nor at {fallback} ({error.strerror or error}): the record is lost") from None
    raise BenchError(f"{failure}; it is saved at {fallback} instead (move it into {Path(path).parent})")


def check_writable(results_dir: Path | str) -> None:
    """Refuse a results folder that cannot take records (a file, read-only, a full disk) before any cell runs, by
    writing, syncing and removing a small file where the records go. Folders made for the probe are removed with
    it: a run that stores nothing leaves no trace."""
    runs = Path(results_dir) / "runs"
    made = [d for d in (runs, *runs.parents) if not d.exists()]
    problem = None
    try:
        runs.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=runs, prefix=".probe-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(b"\0" * 4096)  # an empty file needs no free block: a full disk shows only on a write
                f.flush()
                os.fsync(f.fileno())
        finally:
            Path(probe).unlink(missing_ok=True)
    except (FileExistsError, NotADirectoryError):
        problem = "a file is in the way: it is not a folder"
    except OSError as error:
        problem = error.strerror or str(error)
    finally:
        for folder in made:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()
    if problem is not None:
        raise BenchError(
            f"results folder {results_dir} cannot take records ({problem}); choose another with --results "
            f"or ${RESULTS_ENV}"
        )


# What the tables and the runner read of every record: a file without them is not a usable record.
REQUIRED_FIELDS = (
    "run_id",
    "method",
    "config_hash",
    "protocol",
    "input",
    "n_bits",
    "seed",
    "evaluation",
    "metrics",
    "timings",
    "environment",
    "created",
)


def read_record(path: Path) -> dict:
    """The record stored at ``path``, of the current schema (one of schema 1 is migrated in memory, with a warning:
    ``bench migrate`` rewrites the file). Raises ValueError for a truncated or corrupt file, one of another schema
    version or one lacking a field, and OSError for one that cannot be read."""
    record = json.loads(Path(path).read_text())
    if not isinstance(record, dict):
        raise ValueError(f"a JSON {type(record).__name__}, not a record")
    if record.get("schema_version") == 1:
        record = migrate_v1(record)
        warnings.warn(
            f"run record {path} has schema version 1; read as version {SCHEMA_VERSION} (bench migrate rewrites it)",
            stacklevel=3,
        )
    if record.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"schema version {record.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    absent = [k for k in REQUIRED_FIELDS if k not in record]
    if absent:
        raise ValueError(f"no {', '.join(absent)}")
    return record


def read_records(results_dir: Path | str | None = None) -> list[dict]:
    """Every usable record under ``results_dir/runs`` (``read_record``). A file that is not one (unreadable,
    truncated, of another schema) is skipped with a warning naming it, as ``bench run`` treats it as missing."""
    runs = Path(results_dir or default_results_dir()) / "runs"
    records = []
    for path in sorted(runs.glob("*.json")) if runs.is_dir() else []:
        try:
            records.append(read_record(path))
        except (OSError, ValueError, KeyError) as e:
            warnings.warn(f"skipping unusable run record {path}: {e}", stacklevel=2)
    return records


# Schema 1 stored a method's config as it was when the run was made: fields added later are absent. These are the
# values such runs used where a field's default is not what they did (HashGAN-Dizaji before data-dependent init,
# the fading collaborative weight and the code-length weights); other absent fields were added at a default that
# kept the earlier behaviour.
V1_ABSENT_FIELDS = {"hashgan-dizaji": {"data_init": False, "collab_decay_start": 1.0, "weights_for_bits": 0}}


def migrate_v1(record: dict) -> dict:
    """A schema-1 record as schema 2: its full config (absent fields filled with what the run used), resolved at
    its code length, and the config hash and run id that follow. Its method must be registered."""
    from bench.method import make_config
    from bench.recipes import config_hash, config_json
    from bench.registry import get_registry

    cls = get_registry().methods.get(record["method"])
    if cls is None:
        raise ValueError(f"method {record['method']!r} is not registered, so its config cannot be completed")
    filled = {**V1_ABSENT_FIELDS.get(cls.name, {}), **record["config"]}
    stored = json.loads(json.dumps(filled))
    typed = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()}
    config = config_json(cls.resolve_config(make_config(cls, typed), record["n_bits"]))
    out = {k: v for k, v in record.items() if k != "config_is_default"}
    out |= {
        "schema_version": SCHEMA_VERSION,
        "config": config,
        "config_hash": config_hash(config),
        "evaluation": _v1_evaluation(record),
    }
    out["run_id"] = run_id(identity_of(out))
    return out


def identity_of(record: dict) -> dict:
    """What makes a run (its run id): method, config hash, protocol, input view, bits, seed and the evaluation
    settings (``evaluation``: retrieval cut-offs and tie policy, or how clusters are made)."""
    return {
        **{k: record[k] for k in ("method", "config_hash", "protocol", "input", "n_bits", "seed")},
        **record["evaluation"],
    }


def _v1_evaluation(record: dict) -> dict:
    """The evaluation settings of a schema-1 run, read from what it stored."""
    if record.get("task") == "clustering":
        return {"clustering": {k: v for k, v in record["clustering"].items() if k != "assignments"}}
    topk = sorted(int(k[4:]) for k in record["metrics"] if k.startswith("map@"))
    return {"topk": topk, "tie_policy": "index"}  # the only policy schema 1 had


def migrate(results_dir: Path | str | None = None, log=print) -> int:
    """Rewrite every schema-1 record under ``results_dir/runs`` as schema 2 (its file renamed to its new run id).
    Returns how many were rewritten. A record whose new name is already taken by a newer record of the same cell
    is kept beside it (the tables count a cell once, the newest)."""
    runs = Path(results_dir or default_results_dir()) / "runs"
    done = 0
    for path in sorted(runs.glob("*.json")) if runs.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            log(f"skipped {path}: unreadable ({e})")
            continue
        if record.get("schema_version") != 1:
            continue
        try:
            new = migrate_v1(record)
        except (ValueError, KeyError) as e:
            log(f"skipped {path}: {e}")
            continue
        target = record_path(runs.parent, new)
        if target.exists() and target != path:
            target = target.with_name(f"{target.stem}-{record['run_id']}.json")
        write_record(target, new)
        if target != path:
            path.unlink()
        done += 1
    return done


def frame(records: list[dict]) -> pd.DataFrame:
    """One long frame of ``records``: a row per (run, scalar metric or timing in seconds) with the run's identity
    columns: run_id, method, config_hash, protocol, input, n_bits, seed, device, created, metric, value."""
    rows = []
    for r in records:
        base = {
            "run_id": r["run_id"],
            "method": r["method"],
            "config_hash": r["config_hash"],
            "protocol": r["protocol"],
            "input": r["input"],
            "n_bits": r["n_bits"],
            "seed": r["seed"],
            "device": r["environment"]["device"],
            "created": r["created"],
        }
        rows += [{**base, "metric": k, "value": float(v)} for k, v in r["metrics"].items()]
        rows += [{**base, "metric": k, "value": float(v)} for k, v in r["timings"].items()]  # fit_s, encode_s, ...
    columns = [
        "run_id",
        "method",
        "config_hash",
        "protocol",
        "input",
        "n_bits",
        "seed",
        "device",
        "created",
        "metric",
        "value",
    ]
    return pd.DataFrame(rows, columns=columns)


def load_results(results_dir: Path | str | None = None) -> pd.DataFrame:
    """Every stored run as one long frame (see ``frame``)."""
    return frame(read_records(results_dir))
