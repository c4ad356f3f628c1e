"""Which runs a command means: named recipes, resolved configs, config hashes, and the selection of records.

A run is what it ran: its record stores the full config, resolved at its code length (``Method.resolve_config``),
and a ``config_hash`` of it. A recipe is a name for Config overrides that a method declares (``Method.recipes``;
``default`` is the Config itself). ``bench run --recipe``, a table row (method + recipe, plus the row's own
``set``), ``bench table --recipe`` (a recipe laid under every row whose method declares it) and ``bench plot
--recipe`` all resolve here to one config per code length, and find their records by hash equality. Changing a
default never relabels a stored run: its config stays what it was, and a table keeps showing it only by naming a
recipe that resolves to it.
"""

from __future__ import annotations

import hashlib
import json

from bench.errors import unknown
from bench.method import config_dict, make_config

DEFAULT = "default"


def names(cls) -> list[str]:
    """The recipes ``cls`` knows: ``default`` first, then its own."""
    return [DEFAULT, *cls.recipes]


def overrides(cls, recipe: str = DEFAULT) -> dict:
    """The Config overrides of ``cls``'s recipe ``recipe``; an unknown name fails naming the choices."""
    if recipe == DEFAULT:
        return {}
    if recipe not in cls.recipes:
        raise unknown(f"recipe of {cls.name}", recipe, names(cls))
    return dict(cls.recipes[recipe])


def resolve(cls, n_bits: int, recipe: str = DEFAULT, sets: dict | None = None, under: str | None = None):
    """The config ``cls`` trains with at ``n_bits``: its Config, then the recipe ``under`` when ``cls`` declares it
    (a table-wide recipe such as ``cpu-reduced``, for the rows whose method has one), then ``recipe``, then
    ``sets`` (``--set`` strings or typed values), resolved at the code length."""
    layered = overrides(cls, under) if under in cls.recipes else {}
    config = make_config(cls, {**layered, **overrides(cls, recipe), **(sets or {})})
    return cls.resolve_config(config, n_bits)


def config_json(config) -> dict:
    """The config as a record stores it (tuples become lists)."""
    return json.loads(json.dumps(config_dict(config)))


def config_hash(config: dict) -> str:
    """A short stable hash of a stored config (a dict as ``config_json`` gives it)."""
    return hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def hash_of(cls, n_bits: int, recipe: str = DEFAULT, sets: dict | None = None, under: str | None = None) -> str:
    return config_hash(config_json(resolve(cls, n_bits, recipe, sets, under)))


def select(
    records: list[dict], method: str, hashes: dict[int, str], protocol: str | None = None, view: str | None = None
) -> list[dict]:
    """The records of ``method`` whose config hash is ``hashes[n_bits]`` (one wanted config per code length),
    optionally on one protocol and input view; one record per (protocol, view, n_bits, seed), the newest
    (a cell stored twice, e.g. written by two versions of the harness, counts once)."""
    chosen = {}
    for r in sorted(records, key=lambda r: r["created"]):
        if (
            r["method"] == method
            and hashes.get(r["n_bits"]) == r["config_hash"]
            and protocol in (None, r["protocol"])
            and view in (None, r["input"])
        ):
            chosen[(r["protocol"], r["input"], r["n_bits"], r["seed"])] = r
    return list(chosen.values())
