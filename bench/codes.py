"""Codes kept to be scored again: a run's query and database codes, bit-packed beside its record, re-scored with
other metric settings without retraining (``bench evaluate --run RUN_ID``); and codes from elsewhere
(``bench evaluate FILE``).

A run's codes file (``codes_path(record_path)``: the record's path with ``.codes.npz`` for ``.json``) is an
uncompressed .npz holding
- ``query_codes``, ``db_codes``: uint8 (n, ceil(n_bits / 8)), ``bench.metrics.PACKED_LAYOUT`` (faiss's IndexBinary
  layout: 8 bits a byte, bit j of a code in bit j % 8 of byte j // 8, numpy packbits' little bit order);
- ``n_bits``; ``query_labels``, ``db_labels``: class ids (int64) or multi-hot rows (uint8 0/1);
- ``format``: ``FORMAT``.
Other readable inputs: any .npz with ``query_codes``, ``db_codes``, ``query_labels``, ``db_labels`` (codes in
{-1,+1}, {0,1} or bool, or packed with ``n_bits``), and a folder of the .npy dumps DeepHash-pytorch writes
(``tst_binary.npy`` queries, ``trn_binary.npy`` database, ``tst_label.npy``, ``trn_label.npy``).

Nothing here imports torch or pandas on the way to scoring a file.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tempfile
from pathlib import Path

import numpy as np

from bench import metrics
from bench.errors import BenchError

FORMAT = "hashbench-codes-1"
SUFFIX = ".codes.npz"
ARRAYS = ("query_codes", "db_codes", "query_labels", "db_labels")
DEEPHASH_DUMPS = {  # DeepHash-pytorch's file names: the test set queries the training ("database") set
    "query_codes": "tst_binary.npy",
    "db_codes": "trn_binary.npy",
    "query_labels": "tst_label.npy",
    "db_labels": "trn_label.npy",
}


@dataclasses.dataclass(frozen=True)
class Codes:
    """Query and database codes with their labels; ``n_bits`` set when the codes are bit-packed."""

    query_codes: np.ndarray
    db_codes: np.ndarray
    query_labels: np.ndarray
    db_labels: np.ndarray
    n_bits: int | None = None

    @classmethod
    def packed(cls, query_codes, db_codes, query_labels, db_labels) -> Codes:
        """Codes ((n, n_bits) in {-1,+1} or {0,1}, numpy or torch, on any device) and labels (class ids or
        multi-hot) checked and bit-packed as a run keeps them: codes ``PACKED_LAYOUT``, class ids int64, multi-hot
        rows uint8."""
        packed_q, n_bits = metrics.pack_codes(query_codes, "query codes")
        packed_d, d_bits = metrics.pack_codes(db_codes, "database codes")
        if n_bits != d_bits:
            raise BenchError(f"query codes have {n_bits} bits but database codes have {d_bits}")
        labels = [
            _stored_labels(metrics.check_labels(y, len(codes), what))
            for y, codes, what in ((query_labels, packed_q, "query labels"), (db_labels, packed_d, "database labels"))
        ]
        return cls(packed_q, packed_d, *labels, n_bits=n_bits)

    def evaluate(self, **settings) -> dict:
        """``bench.metrics.evaluate`` of these codes (settings: topk, radius, pn, device, distance)."""
        arrays = (self.query_codes, self.db_codes, self.query_labels, self.db_labels)
        return metrics.evaluate(*arrays, packed_bits=self.n_bits, **settings)


def codes_path(record_path) -> Path:
    """Where the codes of the run whose record is at ``record_path`` are kept: beside it, ``NAME.codes.npz``."""
    return Path(record_path).with_suffix(SUFFIX)


def save_codes(record_path, codes: Codes) -> Path:
    """Keep a run's codes (``Codes.packed``) beside its record (``codes_path``), atomically (a temporary file
    renamed). Returns the path written."""
    path = codes_path(record_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                query_codes=codes.query_codes,
                db_codes=codes.db_codes,
                n_bits=np.int64(codes.n_bits),
                query_labels=codes.query_labels,
                db_labels=codes.db_labels,
                format=np.str_(FORMAT),
            )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _stored_labels(labels) -> np.ndarray:
    a = metrics.host_array(labels)
    return a.astype(np.int64) if a.ndim == 1 else (a != 0).astype(np.uint8)


def load_codes(path) -> Codes:
    """Codes and labels from a run's codes file, any .npz with ``ARRAYS`` (packed ones with ``n_bits``) or a
    folder of DeepHash-pytorch dumps (``DEEPHASH_DUMPS``). Shapes and values are checked when scored."""
    path = Path(path)
    if not path.exists():
        raise BenchError(f"codes file {path} does not exist")
    if path.is_dir():
        missing = [name for name in DEEPHASH_DUMPS.values() if not (path / name).is_file()]
        if missing:
            raise BenchError(
                f"{path} is a folder but lacks {', '.join(missing)} (a folder must hold DeepHash-style dumps: "
                f"{', '.join(DEEPHASH_DUMPS.values())})"
            )
        return Codes(**{key: _read_npy(path / name) for key, name in DEEPHASH_DUMPS.items()})
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as e:
        raise BenchError(f"cannot read {path} as an .npz file: {e}") from None
    missing = [k for k in ARRAYS if k not in arrays]
    if missing:
        raise BenchError(f"{path} lacks {', '.join(missing)} (has: {', '.join(arrays) or 'nothing'})")
    n_bits = int(arrays["n_bits"]) if "n_bits" in arrays else None
    return Codes(*(arrays[k] for k in ARRAYS), n_bits=n_bits)


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:
        raise BenchError(f"cannot read {path} as a .npy file: {e}") from None


def evaluate_file(path, *, topk=metrics.DEFAULT_TOPK, radius=metrics.DEFAULT_RADIUS, device="cpu", distance="hamming"):
    """Score the codes of ``path`` (``load_codes``): ``bench.metrics.evaluate``'s result."""
    return load_codes(path).evaluate(topk=topk, radius=radius, device=device, distance=distance)


def find_run(run_id: str, results_dir=None) -> tuple[dict, Path]:
    """The record of ``run_id`` under ``results_dir`` (default: ``bench.results.default_results_dir()``) and the
    path it is stored at."""
    from bench.results import default_results_dir, read_records, record_path

    results_dir = Path(results_dir or default_results_dir())
    records = read_records(results_dir)
    for record in records:
        if record["run_id"] == run_id:
            return record, record_path(results_dir, record)
    ids = sorted({r["run_id"] for r in records})
    close = difflib.get_close_matches(run_id, ids, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise BenchError(
        f"no run {run_id!r} among the {len(ids)} run record(s) under {results_dir / 'runs'}{hint} "
        f"(run ids are the last part of the record file names)"
    )


def evaluate_run(run_id: str, results_dir=None, *, topk=None, radius=metrics.DEFAULT_RADIUS, device="cpu") -> dict:
    """Score the stored codes of a run again: with the run's own distance, and its cutoffs unless ``topk`` is
    given. Raises a BenchError if the run kept no codes (``bench run --save-codes`` keeps them)."""
    record, path = find_run(run_id, results_dir)
    distance = record.get("distance", "hamming")
    if distance not in metrics.DISTANCES:
        raise BenchError(f"run {run_id} ranks by {distance!r}, not by codes; there are no codes to score again")
    stored = codes_path(path)
    if not stored.exists():
        raise BenchError(f"run {run_id} kept no codes ({stored} is absent); bench run --save-codes keeps them")
    topk = topk or record["evaluation"].get("topk") or metrics.DEFAULT_TOPK
    return load_codes(stored).evaluate(topk=topk, radius=radius, device=device, distance=distance)
