"""The evaluator: every retrieval metric of the hashing papers, exact, from one pass over the distances.

Inputs are binary codes in {-1,+1} (or {0,1}, bool, or bit-packed) and labels (class ids or multi-hot). Two items
are relevant when they share at least one label. Distances are Hamming distances, integers in 0..n_bits.

Why it is fast (count, do not sort): a distance takes only n_bits+1 values, so per query
- a histogram of (distance, relevant) gives the tie-aware mAP (and its best/worst bounds), precision within a
  Hamming radius and the precision-recall curve by radius, in closed form;
- the ranking with ties broken by database index is a *counting sort* over n_bits+1 buckets: an item's rank is
  the number of items in nearer buckets plus those before it in its own. The ranks of the relevant items give
  mAP, mAP@K and P@N. Nothing is sorted per query by a comparison sort.
On the CPU a compiled kernel (``bench._kernels``) counts on bit-packed codes; on CUDA torch does, a chunk of
queries at a time (there a segmented radix sort gives the ranks). Neither makes a copy of the codes wider than
the packed bits, nor any (queries x database) array on the CPU.

This module imports neither torch nor pandas: torch is imported by the functions that need it (the CUDA path,
``relevance`` of tensors, ``evaluate_real``), so scoring codes on the CPU starts in well under a second.

``SEMANTICS`` states what each number means; it is stored with every record.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from bench.errors import BenchError, unknown

TIE_POLICY = "index"
DEFAULT_TOPK = (1000,)
DEFAULT_RADIUS = 2
DISTANCES = ("hamming", "spherical")
CUDA_SCANS = ("sort", "count")  # how CUDA ranks: a stable sort of each row (torch), or counting (Triton)
REAL_DISTANCE = "inner_product"  # a method that ranks real-valued outputs, not codes (evaluate_real)
DEFAULT_PN = tuple(range(100, 1001, 100))  # the P@N grid of the papers' figures ("number of top returned images")

SEMANTICS = {
    "distance": "Hamming distance of {-1,+1} codes ({0,1} codes are mapped 0->-1); sign(0)=+1 when binarizing",
    "relevance": "relevant iff query and item share at least one label (same class for single-label data)",
    "tie_policy": TIE_POLICY,
    "tie_policy_meaning": "index: items at equal Hamming distance are ranked by database index (a stable sort)",
    "map": "mean over queries of AP over the whole database ranking (tie policy: index)",
    "map@K": "AP over the top K ranked items, normalised by the number of relevant items inside the top K "
    "(the hashing papers' convention); K is capped at the database size",
    "map_tie_aware": "expected AP over all orders of tied items, closed form (He et al., CVPR 2018)",
    "map_tie_best/worst": "AP when relevant items come first/last inside each group of tied items",
    "distance_spherical": "with distance='spherical' (Spherical Hashing, Heo et al. 2012): |a xor b| / |a and b| of "
    "the +1 bits, 0/0 = 0, x/0 ranked after every finite value; Hamming-ball metrics are omitted",
    "p@h<=r": "precision of the items within Hamming radius r (inclusive); a query with an empty ball scores 0",
    "pr_radius": "per radius r = 0..n_bits: mean precision and recall of the Hamming ball of radius r "
    "(empty ball: precision 0; recall over all relevant items in the database)",
    "p@n": "precision and recall of the first N ranked items (tie policy: index)",
    "zero_relevant": "a query with no relevant item in the database (or in the top K for map@K) counts as AP 0; "
    "counted in the mean, not dropped",
}


BIT_ORDER = "little"  # packed codes: bit j of a code is bit j % 8 (value 2 ** (j % 8)) of byte j // 8
PACKED_LAYOUT = (
    "uint8 rows of ceil(n_bits / 8) bytes, 8 bits a byte (faiss's IndexBinary layout); bit j of a code is bit "
    "j % 8 of byte j // 8 (numpy packbits' little bit order), set for +1; the padding bits of the last byte are 0"
)
_CHUNK_ELEMENTS = 1 << 16  # values validated and packed at a time: temporaries of 64 KB, not of the inputs' size
_TENSOR_CHUNKS_LARGER = 16  # a tensor's chunks are larger: each check of one waits on its device


# ----------------------------------------------------------------------------------------- inputs: arrays or tensors


def _is_tensor(x) -> bool:
    """A torch tensor (without importing torch: if it is not imported, nothing is a tensor)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _xp(a):
    """The array module of ``a``: numpy or torch."""
    return sys.modules["torch"] if _is_tensor(a) else np


def _array(x):
    """numpy arrays and torch tensors as they are; anything else (lists) as a numpy array."""
    return x if isinstance(x, np.ndarray) or _is_tensor(x) else np.asarray(x)


def host_array(a) -> np.ndarray:
    """A numpy view of a CPU tensor (a copy only of a tensor on another device)."""
    return a.detach().cpu().numpy() if _is_tensor(a) else a


def _is_float(a) -> bool:
    return a.is_floating_point() if _is_tensor(a) else np.issubdtype(a.dtype, np.floating)


def _is_bool(a) -> bool:
    return a.dtype == (sys.modules["torch"].bool if _is_tensor(a) else np.bool_)


def _row_chunks(a, values: int = _CHUNK_ELEMENTS):
    """``a`` in slices of whole rows of about ``values`` values (views; _TENSOR_CHUNKS_LARGER times as many of a
    tensor's)."""
    if _is_tensor(a):
        values *= _TENSOR_CHUNKS_LARGER
    step = max(1, values // max(1, int(np.prod(a.shape[1:]))))
    for start in range(0, a.shape[0], step):
        yield a[start : start + step]


def _found_values(a) -> str:
    values = np.unique(host_array(a))
    return ", ".join(str(v) for v in values[:6].tolist())


def _check_finite(chunk, lo, hi, what: str) -> None:
    if _is_float(chunk) and not (math.isfinite(lo) and math.isfinite(hi)):  # min/max are NaN if any value is
        raise BenchError(f"{what} contains NaN or inf")


def _code_shape(codes, what: str, packed_bits: int | None):
    """The codes as an array (``_array``) and their number of bits, the shape checked."""
    a = _array(codes)
    if a.ndim != 2 or a.shape[1] == 0:
        raise BenchError(f"{what} must be a 2-D array (n_items, n_bits); got shape {tuple(a.shape)}")
    if a.shape[0] == 0:
        raise BenchError(f"{what} is empty")
    if packed_bits is None:
        return a, int(a.shape[1])
    if packed_bits < 1 or str(a.dtype).split(".")[-1] != "uint8" or a.shape[1] < -(-packed_bits // 8):
        raise BenchError(
            f"{what}: packed codes of {packed_bits} bits must be uint8 rows of at least {-(-packed_bits // 8)} "
            f"bytes; got {a.dtype} of shape {tuple(a.shape)}"
        )
    return a, int(packed_bits)


def _check_code_values(a, what: str, packed_bits: int | None) -> None:
    """Only -1/+1 or only 0/1 (bool is 0/1); packed codes: padding bits 0. Chunked: no full-size temporary."""
    if packed_bits is not None:
        used = packed_bits % 8
        tail = a[:, packed_bits // 8 :]
        if tail.shape[1] and (used and bool((tail[:, 0] >> used).any()) or bool(tail[:, 1 if used else 0 :].any())):
            raise BenchError(f"{what}: the padding bits after bit {packed_bits} of the packed codes must be 0")
        return
    if _is_bool(a):
        return
    xp = _xp(a)
    negative = zero = False
    for chunk in _row_chunks(a):
        lo, hi = float(chunk.min()), float(chunk.max())
        _check_finite(chunk, lo, hi, what)
        if lo < -1 or hi > 1 or (_is_float(chunk) and not bool((chunk * chunk == abs(chunk)).all())):
            negative = zero = True  # a value outside {-1, 0, 1}
            break
        negative |= lo < 0
        zero |= int(xp.count_nonzero(chunk)) < chunk.shape[0] * chunk.shape[1]
    if negative and zero:
        raise _mixed_values(a, what)


def _mixed_values(a, what: str) -> BenchError:
    return BenchError(f"{what} must hold only -1/+1 or only 0/1; found values {_found_values(a)}")


def pack_codes(codes, what: str = "codes", *, packed_bits: int | None = None, width: int | None = None):
    """Validate codes ((n, n_bits), numpy or torch; values only -1/+1 or only 0/1, or bool; or already packed,
    ``packed_bits`` given) and return them bit-packed, ``PACKED_LAYOUT``, with their number of bits:
    (uint8 (n, width), n_bits). ``width`` (bytes a row, default ceil(n_bits / 8)) pads with zero bytes. Works
    in one pass for byte codes, else _CHUNK_ELEMENTS values at a time (``_row_chunks``): no temporary of the size
    of the codes."""
    a, n_bits = _code_shape(codes, what, packed_bits)
    return _valid_packed(a, what, n_bits, packed_bits, width or -(-n_bits // 8)), n_bits


def _valid_packed(a, what: str, n_bits: int, packed_bits: int | None, width: int) -> np.ndarray:
    """Codes (``_code_shape``'s) validated and packed into rows of ``width`` bytes. Codes of one byte a value
    (int8, uint8, bool) in whole bytes a row take one compiled pass that checks and packs, 4x faster than checking,
    then packing; others are checked, then packed, a chunk at a time."""
    host = host_array(a)
    words = host.dtype.itemsize == 1 and n_bits % 8 == 0 and host.flags.c_contiguous and host.ctypes.data % 8 == 0
    if packed_bits is None and words:
        from bench import _kernels

        out = np.zeros((host.shape[0], width), np.uint8)
        negative, zero, wrong = _kernels.pack_byte_codes(host.view(np.uint64), out)
        if wrong or (negative and (zero or host.dtype != np.int8)):  # 0xFF is -1 only in int8
            raise _mixed_values(host, what)
        return out
    _check_code_values(a, what, packed_bits)
    return _pack_valid(host, n_bits, packed_bits is not None, width)


def _pack_valid(a: np.ndarray, n_bits: int, packed: bool, width: int) -> np.ndarray:
    n_bytes = -(-n_bits // 8)
    if packed and a.shape[1] == width and a.flags.c_contiguous:
        return a
    out = np.zeros((a.shape[0], width), np.uint8)
    start = 0
    for chunk in _row_chunks(a):
        rows = slice(start, start + chunk.shape[0])
        out[rows, :n_bytes] = chunk[:, :n_bytes] if packed else np.packbits(chunk > 0, axis=1, bitorder=BIT_ORDER)
        start += chunk.shape[0]
    return out


def unpack_codes(packed: np.ndarray, n_bits: int) -> np.ndarray:
    """Packed codes (``PACKED_LAYOUT``) as int8 {-1,+1} (n, n_bits)."""
    bits = np.unpackbits(np.asarray(packed, np.uint8), axis=1, count=n_bits, bitorder=BIT_ORDER)
    return (bits.astype(np.int8) << 1) - 1


def check_labels(labels, n: int, what: str):
    """Validate labels ((n,) class ids, integers; or (n, c) multi-hot 0/1) and return them as an array (numpy or
    torch, as given). Chunked: no full-size temporary."""
    a = _array(labels)
    if a.ndim not in (1, 2) or a.shape[0] != n:
        raise BenchError(
            f"{what} must have shape ({n},) (class ids) or ({n}, n_classes) (multi-hot), "
            f"matching the codes; got {tuple(a.shape)}"
        )
    if _is_bool(a) or a.shape[0] == 0:
        return a
    xp = _xp(a)
    for chunk in _row_chunks(a):
        lo, hi = float(chunk.min()), float(chunk.max())
        _check_finite(chunk, lo, hi, what)
        if a.ndim == 1 and _is_float(chunk) and not bool((chunk == xp.round(chunk)).all()):
            raise BenchError(f"{what}: class ids must be integers")
        if a.ndim == 2 and (lo < 0 or hi > 1 or (_is_float(chunk) and not bool((chunk * chunk == chunk).all()))):
            raise BenchError(f"{what}: multi-hot labels must hold only 0/1")
    return a


def label_words(query_labels, db_labels):
    """Validated labels for the CPU kernel, one unsigned dtype for both: class ids (n, 1) offset to start at 0, in the
    narrowest dtype holding them; multi-hot labels packed into bit words (n, words)."""
    from bench import _kernels

    ql, dl = host_array(query_labels), host_array(db_labels)
    if ql.ndim == 2:
        n_labels = ql.shape[1]
        width = _kernels.packed_width(n_labels)
        return tuple(_kernels.as_words(_pack_valid(x, n_labels, False, width), n_labels) for x in (ql, dl))
    ql, dl = (x.astype(np.int64) if _is_float(x) or _is_bool(x) else x for x in (ql, dl))
    lo = min(int(ql.min()), int(dl.min()))
    span = max(int(ql.max()), int(dl.max())) - lo
    dtype = next(t for t in (np.uint8, np.uint16, np.uint32, np.uint64) if span < 1 << (8 * np.dtype(t).itemsize))
    if lo == 0 and ql.dtype == dtype and dl.dtype == dtype:
        return ql.reshape(-1, 1), dl.reshape(-1, 1)
    offset = np.uint64(lo % (1 << 64))  # modulo 2**64: equal ids stay equal and distinct ones distinct
    return tuple(_offset_ids(x, offset, dtype) for x in (ql, dl))


def _offset_ids(ids: np.ndarray, offset: np.uint64, dtype) -> np.ndarray:
    """Class ids minus ``offset`` as (n, 1) ``dtype``, a chunk at a time: no temporary of the ids' size."""
    out = np.empty((ids.shape[0], 1), dtype)
    start = 0
    for chunk in _row_chunks(ids, _CHUNK_ELEMENTS // 8):  # their uint64 copies: 64 KB
        out[start : start + chunk.shape[0], 0] = chunk.astype(np.uint64) - offset
        start += chunk.shape[0]
    return out


def _label_tensor(labels, device):
    """Labels as torch wants them on ``device``: class ids int64, multi-hot float32."""
    import torch

    t = torch.as_tensor(labels).to(device)
    return t.to(torch.int64) if t.ndim == 1 else t.to(torch.float32)


# -------------------------------------------------------------------------------------------------- distances


def hamming_distances(query, db):
    """(nq, nd) Hamming distances of {-1,+1} torch codes, as the smallest unsigned dtype that holds them.

    d = (n_bits - <q, x>) / 2; the inner product of +-1 vectors is exact in float16 (|<q, x>| <= 2048 bits, what
    CUDA uses) and float32 (the CPU)."""
    import torch

    n_bits = query.shape[1]
    dtype = torch.float16 if query.device.type == "cuda" and n_bits <= 2048 else torch.float32
    dot = query.to(dtype) @ db.to(dtype).T
    dist = (n_bits - dot).mul_(0.5)
    return dist.to(torch.uint8 if n_bits <= 255 else torch.int16)


def relevance(query_labels, db_labels):
    """(nq, nd) bool: the items share at least one label (class ids (n,) or multi-hot (n, c)); torch tensors in,
    a tensor out; numpy arrays in, an array out. The one relevance of the project: the evaluator's, and the
    similarity the supervised methods train on."""
    if query_labels.ndim == 1:
        return query_labels[:, None] == db_labels[None, :]
    if _is_tensor(query_labels):
        import torch

        return (query_labels.to(torch.float32) @ db_labels.to(torch.float32).T) > 0
    return (np.asarray(query_labels, np.float32) @ np.asarray(db_labels, np.float32).T) > 0


def spherical_buckets(n_bits: int) -> np.ndarray:
    """(n_bits+1, n_bits+1) int64: for (xor count x, and count y) the rank of x / y among all distinct values
    (0/0 = 0 for identical codes without +1 bits; x/0 after every finite value), so that ranking by bucket is
    ranking by spherical Hamming distance and ties stay ties."""
    x = np.arange(n_bits + 1, dtype=np.float64)[:, None]
    y = np.arange(n_bits + 1, dtype=np.float64)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(y > 0, x / np.where(y > 0, y, 1), np.where(x > 0, np.inf, 0.0))
    possible = (x + y) <= n_bits  # xor and and count disjoint bits
    values = np.unique(ratio[possible])
    return np.where(possible, np.searchsorted(values, ratio), 0).astype(np.int64)


# ------------------------------------------------------------------------------------------------- evaluate


def evaluate(
    query_codes,
    db_codes,
    query_labels,
    db_labels,
    *,
    topk=DEFAULT_TOPK,
    radius=DEFAULT_RADIUS,
    pn=DEFAULT_PN,
    device=None,
    chunk_size: int | None = None,
    distance: str = "hamming",
    packed_bits: int | None = None,
    cuda_scan: str = "sort",
) -> dict:
    """Score query codes against database codes. Returns a dict of scalar metrics plus ``curves``.

    Keys: ``map``, ``map@K`` for each K in ``topk``, ``map_tie_aware``, ``map_tie_best``, ``map_tie_worst``,
    ``p@h<=R`` (R = ``radius``), ``zero_relevant_queries``, ``n_queries``, ``n_database``, ``n_bits``, and
    ``curves`` = {``pr_radius``: radius/precision/recall lists, ``p@n``: n/precision/recall lists}.
    ``distance="spherical"`` ranks by Spherical Hashing's distance instead; the Hamming-ball metrics
    (``p@h<=R``, ``pr_radius``) are then left out. Semantics: ``SEMANTICS``.

    Codes and labels are numpy arrays, torch tensors or lists; codes in {-1,+1}, {0,1} or bool, or bit-packed
    (``PACKED_LAYOUT``) with ``packed_bits`` giving their number of bits. ``device``: default the database codes'
    (cpu for arrays). On the CPU a compiled counting kernel scans the queries on NUMBA_NUM_THREADS threads
    (default: every core); on CUDA torch scans ``chunk_size`` queries at a time (default ~128M distances a chunk)
    with a stable sort of each row (``cuda_scan="sort"``), or, for Hamming distances, two Triton kernels count
    them without a sort (``cuda_scan="count"``, ``bench._cuda_scan``).
    """
    if distance not in DISTANCES:
        raise unknown("distance", distance, DISTANCES)
    if cuda_scan not in CUDA_SCANS:
        raise unknown("CUDA scan", cuda_scan, CUDA_SCANS)
    if cuda_scan == "count" and distance != "hamming":
        raise BenchError(f"the CUDA scan 'count' ranks by Hamming distance only; got distance {distance!r}")
    q, n_bits = _code_shape(query_codes, "query codes", packed_bits)
    d, d_bits = _code_shape(db_codes, "database codes", packed_bits)
    if n_bits != d_bits:
        raise BenchError(f"query codes have {n_bits} bits but database codes have {d_bits}")
    ql = check_labels(query_labels, q.shape[0], "query labels")
    dl = check_labels(db_labels, d.shape[0], "database labels")
    if ql.ndim != dl.ndim or (ql.ndim == 2 and ql.shape[1] != dl.shape[1]):
        raise BenchError(f"query labels {tuple(ql.shape)} and database labels {tuple(dl.shape)} differ in kind")
    topk = tuple(int(k) for k in topk)
    if any(k < 1 for k in topk):
        raise BenchError(f"top-K values must be positive integers; got {list(topk)}")
    device = str(device) if device is not None else str(d.device) if _is_tensor(d) else "cpu"
    n_d = d.shape[0]
    cutoffs = [n_d] + [min(k, n_d) for k in topk]  # whole ranking first, then each K
    pn_grid = [n for n in pn if n <= n_d]
    buckets = spherical_buckets(n_bits) if distance == "spherical" else None
    if device == "cpu":
        from bench import _kernels

        words = [code_words(c, n_bits, packed_bits, what) for c, what in ((q, "query codes"), (d, "database codes"))]
        scan = _kernels.scan(*words, n_bits, *label_words(ql, dl), ql.ndim == 2, cutoffs, pn_grid, buckets)
        del words  # the packed copy, before the summary's arrays: the peak is the larger of the two, not their sum
    else:
        _check_code_values(q, "query codes", packed_bits)
        _check_code_values(d, "database codes", packed_bits)
        codes = (_pm1_tensor(q, n_bits, packed_bits, device), _pm1_tensor(d, n_bits, packed_bits, device))
        labels = (_label_tensor(ql, device), _label_tensor(dl, device))
        if cuda_scan == "count":
            from bench import _cuda_scan

            scan = _cuda_scan.scan(*codes, *labels, cutoffs, pn_grid)
        else:
            scan = _scan_torch(*codes, *labels, cutoffs, pn_grid, chunk_size or max(1, (1 << 27) // n_d), buckets)
    return _summarise(scan, topk, radius, n_d, n_bits, hamming=buckets is None)


def code_words(codes, n_bits: int, packed_bits: int | None = None, what: str = "codes") -> np.ndarray:
    """Codes (``_code_shape``'s; ``packed_bits``: bit-packed already) validated, as the CPU kernel's words: a view
    where they are packed that way already."""
    from bench import _kernels

    width = _kernels.packed_width(n_bits)
    return _kernels.as_words(_valid_packed(codes, what, n_bits, packed_bits, width), n_bits)


def _pm1_tensor(codes, n_bits: int, packed_bits: int | None, device):
    """Validated codes as int8 {-1,+1} torch codes on ``device`` (packed codes unpacked there)."""
    import torch

    t = torch.as_tensor(codes).to(device)
    if packed_bits is not None:
        shifts = torch.arange(8, device=t.device, dtype=torch.uint8)
        t = ((t[:, :, None] >> shifts) & 1).reshape(t.shape[0], -1)[:, :n_bits]
    return torch.where(t > 0, 1, -1).to(torch.int8)


def _scan_torch(q, d, ql, dl, cutoffs, pn_grid, chunk_size, buckets=None):
    """The CUDA (torch) scan, ``chunk_size`` queries at a time: what ``bench._kernels.scan`` gives, from int8
    {-1,+1} codes and torch labels (``_label_tensor``) on one device. The ranks come from a stable (radix) sort of
    the distances; the histograms from the sorted rows, summarised on the host by the CPU kernel's own code."""
    import torch

    from bench import _kernels

    device, n_q, n_d, n_bits = q.device, q.shape[0], d.shape[0], q.shape[1]
    n_buckets = n_bits + 1 if buckets is None else int(buckets.max()) + 1
    result = _kernels.Scan(n_q, n_buckets, cutoffs, pn_grid, n_d)
    marks = torch.from_numpy(result.marks).to(device)
    table = None if buckets is None else torch.from_numpy(buckets).to(device)
    values = torch.arange(n_buckets, device=device)
    for start in range(0, n_q, chunk_size):
        rows = slice(start, min(start + chunk_size, n_q))
        dist = hamming_distances(q[rows], d)
        if table is not None:  # the number of +1 bits both codes hold, then the spherical distance's rank
            both = ((q[rows].to(torch.float32) + 1) / 2) @ ((d.to(torch.float32) + 1) / 2).T
            dist = table[dist.long(), both.round().long()].to(torch.int32)
        rel = relevance(ql[rows], dl)
        dist, order = torch.sort(dist, dim=1, stable=True)
        rel = rel.gather(1, order)
        del order
        relevant_up_to = torch.cumsum(rel, 1, dtype=torch.int32)
        n_rows = rel.shape[0]
        ends = torch.searchsorted(dist, values.to(dist.dtype).expand(n_rows, n_buckets).contiguous(), right=True)
        rel_ends = torch.where(ends > 0, relevant_up_to.gather(1, (ends - 1).clamp(min=0)), 0).to(torch.int64)
        relevant_counts = torch.diff(rel_ends, dim=1, prepend=torch.zeros_like(rel_ends[:, :1]))
        counts = torch.diff(ends, dim=1, prepend=torch.zeros_like(ends[:, :1]))
        hist = torch.stack([counts - relevant_counts, relevant_counts], 2).cpu().numpy()
        _kernels.summarise_histograms(hist, result.tie[rows], result.n_relevant[rows], result.ball_sums)
        hit_row, hit_pos = torch.nonzero(rel, as_tuple=True)
        precision = relevant_up_to[hit_row, hit_pos].to(torch.float64) / (hit_pos + 1).to(torch.float64)
        slot = hit_row * marks.numel() + torch.searchsorted(marks, hit_pos + 1)
        sums = torch.zeros(n_rows * marks.numel(), dtype=torch.float64, device=device).index_add_(0, slot, precision)
        hits = torch.bincount(slot, minlength=n_rows * marks.numel())
        result.mark_sums[rows] = sums.view(n_rows, -1).cpu().numpy()
        result.mark_hits[rows] = hits.view(n_rows, -1).cpu().numpy()
    return result


def _summarise(scan, topk, radius, n_d, n_bits, hamming=True) -> dict:
    """Every metric from the scan of every query (``bench._kernels.Scan``)."""
    n_q = scan.n_relevant.size
    ap, n_rel = scan.ap(), scan.n_relevant
    pn_hits = scan.pn_hits().astype(np.float64)
    recall_n = np.where(n_rel[:, None] > 0, pn_hits / np.maximum(n_rel, 1)[:, None], 0.0)
    result = {
        "map": float(ap[:, 0].mean()),
        **{f"map@{k}": float(ap[:, i + 1].mean()) for i, k in enumerate(topk)},
        "map_tie_aware": float(scan.tie[:, 0].mean()),
        "map_tie_best": float(scan.tie[:, 1].mean()),
        "map_tie_worst": float(scan.tie[:, 2].mean()),
        "zero_relevant_queries": int((n_rel == 0).sum()),
        "n_queries": n_q,
        "n_database": n_d,
        "n_bits": n_bits,
        "curves": {
            "p@n": {
                "n": [int(n) for n in scan.pn_grid],
                "precision": (pn_hits / scan.pn_grid).mean(0).tolist() if scan.pn_grid.size else [],
                "recall": recall_n.mean(0).tolist() if scan.pn_grid.size else [],
            },
        },
    }
    if hamming:  # a Hamming ball means nothing under the spherical distance
        precision_r, recall_r = scan.ball_sums / n_q
        result[f"p@h<={radius}"] = float(precision_r[min(radius, n_bits)])
        result["curves"]["pr_radius"] = {
            "radius": list(range(n_bits + 1)),
            "precision": precision_r.tolist(),
            "recall": recall_r.tolist(),
        }
    return result


# --------------------------------------------------------------------------------- real-valued outputs

REAL_SEMANTICS = {
    "distance": "no binarization: items ranked by the inner product of the real-valued outputs, largest first "
    "(the HashGAN-B ablation and the HashGAN authors' code)",
    "tie_policy": "index (ties of real-valued scores are practically absent)",
    "map": "mean over queries of AP over the whole database ranking",
    "map@K": "AP over the top K, normalised by the relevant items inside the top K",
    "relevance": "relevant iff query and item share at least one label",
    "zero_relevant_queries": "count AP 0",
}


def evaluate_real(
    query_outputs,
    db_outputs,
    query_labels,
    db_labels,
    *,
    topk=DEFAULT_TOPK,
    pn=DEFAULT_PN,
    chunk_size: int | None = None,
) -> dict:
    """Score real-valued outputs ranked by inner product (no codes): ``map``, ``map@K``, the P@N curve and the
    counts; the Hamming-ball and tie-aware metrics do not apply. Semantics: ``REAL_SEMANTICS``."""
    import torch

    q = torch.as_tensor(query_outputs).to(torch.float32)
    d = torch.as_tensor(db_outputs).to(torch.float32).to(q.device)
    if (
        q.ndim != 2
        or d.ndim != 2
        or q.shape[1] != d.shape[1]
        or not (torch.isfinite(q).all() and torch.isfinite(d).all())
    ):
        raise BenchError(
            f"real-valued outputs must be two finite 2-D arrays of equal width; got "
            f"{tuple(q.shape)} and {tuple(d.shape)}"
        )
    ql = _label_tensor(check_labels(query_labels, q.shape[0], "query labels"), q.device)
    dl = _label_tensor(check_labels(db_labels, d.shape[0], "database labels"), q.device)
    n_d = d.shape[0]
    cutoffs = [n_d] + [min(int(k), n_d) for k in topk]
    pn_grid = [n for n in pn if n <= n_d]
    chunk = chunk_size or max(1, (1 << 24) // n_d)
    aps, pns = [], []
    for start in range(0, q.shape[0], chunk):
        scores = q[start : start + chunk] @ d.T
        order = torch.argsort(-scores, dim=1, stable=True)
        ap, pn_hits = _ranked(relevance(ql[start : start + chunk], dl).gather(1, order), cutoffs, pn_grid)
        aps.append(ap)
        pns.append(pn_hits)
    ap, pn_hits = torch.cat(aps), torch.cat(pns).to(torch.float64)
    n_rel = relevance(ql, dl).sum(1).to(torch.float64)
    grid = torch.tensor(pn_grid, dtype=torch.float64)
    recall = torch.where(n_rel[:, None] > 0, pn_hits / n_rel.clamp(min=1)[:, None], 0.0)
    return {
        "map": float(ap[:, 0].mean()),
        **{f"map@{k}": float(ap[:, i + 1].mean()) for i, k in enumerate(topk)},
        "zero_relevant_queries": int((n_rel == 0).sum()),
        "n_queries": q.shape[0],
        "n_database": n_d,
        "n_bits": q.shape[1],
        "curves": {
            "p@n": {
                "n": pn_grid,
                "precision": (pn_hits / grid).mean(0).tolist() if pn_grid else [],
                "recall": recall.mean(0).tolist() if pn_grid else [],
            }
        },
    }


def _ranked(rel_sorted, cutoffs, pn_grid):
    """From each query's relevance in ranked order (rows, a torch tensor): AP at each cutoff (normalised by the
    relevant items inside it, 0 if none) and the number of relevant items among the first N of ``pn_grid``."""
    import torch

    rows, device = rel_sorted.shape[0], rel_sorted.device
    n_rel = rel_sorted.sum(1)
    hit_row, hit_pos = torch.nonzero(rel_sorted, as_tuple=True)  # row-major: positions ascend within a row
    first_hit = torch.cumsum(n_rel, 0) - n_rel  # index of each row's first hit in the hit list
    hit_rank_among_rel = torch.arange(hit_row.numel(), device=device) - first_hit[hit_row] + 1
    precision_at_hit = hit_rank_among_rel.to(torch.float64) / (hit_pos + 1).to(torch.float64)
    ap = torch.zeros(rows, len(cutoffs), dtype=torch.float64, device=device)
    for i, k in enumerate(cutoffs):
        inside = hit_pos < k
        ap_sum = torch.zeros(rows, dtype=torch.float64, device=device).index_add_(
            0, hit_row[inside], precision_at_hit[inside]
        )
        n_inside = torch.bincount(hit_row[inside], minlength=rows)
        ap[:, i] = torch.where(n_inside > 0, ap_sum / n_inside.clamp(min=1), 0.0)
    n_pn = max(pn_grid, default=0)
    cum = torch.cumsum(rel_sorted[:, :n_pn], 1, dtype=torch.int64)
    return ap, cum[:, [n - 1 for n in pn_grid]]


# ------------------------------------------------------------------------------------------------ clustering

NMI_NORMALIZERS = ("geometric", "arithmetic")
CLUSTERING_SEMANTICS = {
    "nmi": "normalised mutual information I(Y; C) / sqrt(H(Y) H(C)) (the geometric normaliser: scikit-learn's "
    "default before 0.22, what the Dizaji/JULE/DEPICT tables used); natural logarithms",
    "nmi_arithmetic": "I(Y; C) / ((H(Y) + H(C)) / 2), scikit-learn's default since 0.22, for comparison",
    "acc": "accuracy under the best one-to-one map of clusters to classes (Hungarian algorithm on the "
    "contingency table); clusters left unmatched count as errors",
    "items": "every item of the dataset is clustered and scored (no held-out split), k = number of classes",
}


def _contingency(labels, clusters) -> np.ndarray:
    """(n_classes, n_clusters) counts of items per (class, cluster)."""
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    if labels.ndim != 1 or labels.shape != clusters.shape or labels.size == 0:
        raise BenchError(
            f"labels and cluster assignments must be two 1-D arrays of equal, non-zero length; got "
            f"{labels.shape} and {clusters.shape}"
        )
    y = np.unique(labels, return_inverse=True)[1]
    c = np.unique(clusters, return_inverse=True)[1]
    table = np.zeros((y.max() + 1, c.max() + 1), np.int64)
    np.add.at(table, (y, c), 1)
    return table


def nmi(labels, clusters, normalizer: str = "geometric") -> float:
    """Normalised mutual information (scikit-learn's, with the normaliser named explicitly: its default changed
    from geometric to arithmetic in 0.22, and the published tables used the geometric one)."""
    from sklearn.metrics import normalized_mutual_info_score

    if normalizer not in NMI_NORMALIZERS:
        raise unknown("NMI normaliser", normalizer, NMI_NORMALIZERS)
    _contingency(labels, clusters)  # the same shape checks as ACC
    return float(normalized_mutual_info_score(labels, clusters, average_method=normalizer))


def clustering_accuracy(labels, clusters) -> float:
    """Fraction of items whose cluster maps to their class under the best one-to-one map (Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    table = _contingency(labels, clusters)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / table.sum())


def evaluate_clustering(labels, clusters) -> dict:
    """Every clustering metric (``CLUSTERING_SEMANTICS``) of one assignment."""
    labels, clusters = (np.asarray(host_array(_array(a))) for a in (labels, clusters))
    return {
        "nmi": nmi(labels, clusters),
        "nmi_arithmetic": nmi(labels, clusters, "arithmetic"),
        "acc": clustering_accuracy(labels, clusters),
    }
