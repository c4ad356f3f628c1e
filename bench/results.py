"""Run records: one JSON file per run, written atomically, loaded into one long pandas DataFrame.

A record's file name holds its run id (a hash of everything that determines the result: method, config,
protocol, input view, bits, seed, evaluation settings), so two processes writing different cells never touch
the same file, and two writing the same cell replace one complete file with another (temp file + rename).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import pandas as pd

SCHEMA_VERSION = 1
RESULTS_ENV = "HASHBENCH_RESULTS"


def default_results_dir() -> Path:
    return Path(os.environ.get(RESULTS_ENV) or "results")


def run_id(identity: dict) -> str:
    """A short stable hash of the JSON-serialised identity of a run."""
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def record_path(results_dir: Path, identity: dict) -> Path:
    name = f"{identity['method']}_{identity['protocol']}_{identity['input']}_{identity['n_bits']}b_" \
           f"s{identity['seed']}_{run_id(identity)}.json"
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


def read_records(results_dir: Path | str | None = None) -> list[dict]:
    """Every readable record under ``results_dir/runs``; unreadable files are skipped with a warning naming them."""
    runs = Path(results_dir or default_results_dir()) / "runs"
    records = []
    for path in sorted(runs.glob("*.json")) if runs.is_dir() else []:
        try:
            record = json.loads(path.read_text())
            if record.get("schema_version") != SCHEMA_VERSION:
                raise ValueError(f"schema version {record.get('schema_version')!r}, expected {SCHEMA_VERSION}")
        except (OSError, ValueError) as e:
            warnings.warn(f"skipping unreadable run record {path}: {e}")
            continue
        records.append(record)
    return records


def _as_json(value):
    """As a record stores it (tuples become JSON lists), so stored and current values compare."""
    return json.loads(json.dumps(value))


def _as_stored(config) -> dict:
    from bench.method import config_dict
    return _as_json(config_dict(config))


def _effective(cls, config: dict, n_bits: int) -> dict:
    return _as_json(cls.effective_config(config, n_bits))


def _differences(config: dict, default: dict) -> dict:
    return {k: config[k] for k in sorted(config) if config[k] != default[k]}


def config_overrides(record: dict) -> dict | None:
    """The fields of the run's config that differ from its method's default today ({} for a default run), or
    None when the run cannot be placed: a field the method no longer has, or an unregistered method whose run was
    not a default one. A field the record lacks was added later: it is read with the value the method names in
    ``former_defaults`` (the behaviour before the field existed) or else at its default, which then kept the old
    behaviour. Both configs are compared as they train at the run's code length (``Method.effective_config``)."""
    from bench.registry import get_registry
    cls = get_registry().methods.get(record["method"])
    if cls is None:
        return {} if record["config_is_default"] else None
    current, stored = _as_stored(cls.Config()), record["config"]
    if not set(stored) <= set(current):
        return None
    filled = {**current, **_as_json(cls.former_defaults), **stored}
    return _differences(_effective(cls, filled, record["n_bits"]), _effective(cls, current, record["n_bits"]))


def overrides_key(overrides: dict | None) -> str | None:
    """A config deviation as one comparable string (a frame column): "" for the default config."""
    return None if overrides is None else json.dumps(overrides, sort_keys=True)[1:-1]


def scoped(overrides: dict, method: str) -> dict:
    """The overrides meant for ``method``: plain keys (``iterations``) for every method, and ``METHOD.key`` ones
    (``hashgan-cao2018-official.gan_iterations``) for that method only, winning over a plain key."""
    plain = {k: v for k, v in overrides.items() if "." not in k}
    return {**plain, **{k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith(method + ".")}}


def wanted_overrides(method: str, overrides: dict, n_bits: int) -> str:
    """The ``overrides_key`` of the ``n_bits`` runs of ``method`` made with the fields of ``overrides`` it has
    (values may be ``--set`` strings, parsed by the field's type; keys plain or ``METHOD.key``, see ``scoped``)
    and every other field at its default."""
    import dataclasses
    from bench.method import make_config
    from bench.registry import get_registry
    cls = get_registry().methods.get(method)
    fields = {f.name for f in dataclasses.fields(cls.Config)} if cls else set()
    wanted = {k: v for k, v in scoped(overrides, method).items() if k in fields}
    if not wanted:
        return overrides_key({})
    return overrides_key(_differences(_effective(cls, _as_stored(make_config(cls, wanted)), n_bits),
                                      _effective(cls, _as_stored(cls.Config()), n_bits)))


def is_current_default(record: dict) -> bool:
    """The run used what is now its method's default config. A run made under an older default is history, not
    a paper-table number (unless a table asks for that config by name)."""
    return config_overrides(record) == {}


def load_results(results_dir: Path | str | None = None) -> pd.DataFrame:
    """One long frame: a row per (run, scalar metric or timing in seconds) with the run's identity columns.

    Columns: run_id, method, protocol, input, n_bits, seed, default_config (``is_current_default``), overrides
    (``overrides_key`` of ``config_overrides``: "" for default runs), device, tie_policy, created, metric, value."""
    rows = []
    for r in read_records(results_dir):
        overrides = config_overrides(r)
        base = {"run_id": r["run_id"], "method": r["method"], "protocol": r["protocol"], "input": r["input"],
                "n_bits": r["n_bits"], "seed": r["seed"], "default_config": overrides == {},
                "overrides": overrides_key(overrides),
                "device": r["environment"]["device"], "tie_policy": r["semantics"].get("tie_policy"),  # retrieval only
                "created": r["created"]}
        rows += [{**base, "metric": k, "value": float(v)} for k, v in r["metrics"].items()]
        rows += [{**base, "metric": k, "value": float(v)} for k, v in r["timings"].items()]  # fit_s, encode_s, ...
    columns = ["run_id", "method", "protocol", "input", "n_bits", "seed", "default_config", "overrides", "device",
               "tie_policy", "created", "metric", "value"]
    return pd.DataFrame(rows, columns=columns)
