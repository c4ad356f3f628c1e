"""The evaluator: every retrieval metric of the hashing papers, exact, from one pass over the distances.

Inputs are binary codes in {-1,+1} (or {0,1}) and labels (class ids or multi-hot). Two items are relevant when
they share at least one label. Distances are Hamming distances, integers in 0..n_bits.

Why it is fast (count, do not sort): a distance takes only n_bits+1 values, so per query
- a histogram of (distance, relevant) gives the tie-aware mAP (and its best/worst bounds), precision within a
  Hamming radius and the precision-recall curve by radius, in closed form;
- the ranking with ties broken by database index is a *counting sort* over n_bits+1 buckets (numpy's stable sort
  of uint8/uint16 keys is a radix sort, CUDA's torch.sort a segmented radix sort); the positions of the relevant
  items in it give mAP, mAP@K and P@N. Nothing is sorted per query by a comparison sort.
Queries are processed in chunks, so the memory is bounded whatever the database size.

``SEMANTICS`` states what each number means; it is stored with every record.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.errors import BenchError, unknown

TIE_POLICY = "index"
DEFAULT_TOPK = (1000,)
DEFAULT_RADIUS = 2
DISTANCES = ("hamming", "spherical")
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


def as_pm1_codes(codes, what: str) -> torch.Tensor:
    """Validate codes (numpy or torch, (n, n_bits)) and return them as int8 in {-1,+1}."""
    t = torch.as_tensor(np.asarray(codes) if not isinstance(codes, torch.Tensor) else codes)
    if t.ndim != 2 or t.shape[1] == 0:
        raise BenchError(f"{what} must be a 2-D array (n_items, n_bits); got shape {tuple(t.shape)}")
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise BenchError(f"{what} contains NaN or inf")
    if t.numel() == 0:
        raise BenchError(f"{what} is empty")
    if ((t == 1) | (t == -1)).all():
        return t.to(torch.int8)
    if ((t == 1) | (t == 0)).all():
        return (t.to(torch.int8) * 2 - 1).to(torch.int8)
    values = torch.unique(t).tolist()
    shown = ", ".join(str(v) for v in values[:6])
    raise BenchError(f"{what} must hold only -1/+1 or only 0/1; found values {shown}")


def as_labels(labels, n: int, what: str) -> torch.Tensor:
    """Validate labels: (n,) class ids -> int64, or (n, c) multi-hot -> float32."""
    t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if t.ndim not in (1, 2) or t.shape[0] != n:
        raise BenchError(
            f"{what} must have shape ({n},) (class ids) or ({n}, n_classes) (multi-hot), "
            f"matching the codes; got {tuple(t.shape)}"
        )
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise BenchError(f"{what} contains NaN or inf")
    if t.ndim == 1:
        if t.is_floating_point() and not torch.equal(t, t.round()):
            raise BenchError(f"{what}: class ids must be integers")
        return t.to(torch.int64)
    if not set(torch.unique(t).tolist()) <= {0, 1}:
        raise BenchError(f"{what}: multi-hot labels must hold only 0/1")
    return t.to(torch.float32)


def hamming_distances(query: torch.Tensor, db: torch.Tensor) -> torch.Tensor:
    """(nq, nd) Hamming distances of {-1,+1} codes, as the smallest unsigned dtype numpy radix-sorts.

    d = (n_bits - <q, x>) / 2. The inner product of +-1 vectors is exact in float32 up to 2**24 bits."""
    n_bits = query.shape[1]
    dot = query.to(torch.float32) @ db.to(torch.float32).T
    dist = (n_bits - dot).mul_(0.5)
    return dist.to(torch.uint8 if n_bits <= 255 else torch.int16)


def relevance(query_labels: torch.Tensor, db_labels: torch.Tensor) -> torch.Tensor:
    """(nq, nd) bool: the items share at least one label (class ids (n,) or multi-hot (n, c)). The one relevance
    of the project: the evaluator's, and the similarity the supervised methods train on."""
    if query_labels.ndim == 1:
        return query_labels[:, None] == db_labels[None, :]
    return (query_labels.to(torch.float32) @ db_labels.to(torch.float32).T) > 0


def stable_order(dist: torch.Tensor) -> torch.Tensor:
    """Per row, the database indices ranked by distance, ties by index: a counting (radix) sort."""
    if dist.device.type == "cpu":
        return torch.from_numpy(np.argsort(dist.numpy(), axis=1, kind="stable"))
    return torch.sort(dist, dim=1, stable=True).indices


def spherical_buckets(n_bits: int) -> torch.Tensor:
    """(n_bits+1, n_bits+1) int64: for (xor count x, and count y) the rank of x / y among all distinct values
    (0/0 = 0 for identical codes without +1 bits; x/0 after every finite value), so that ranking by bucket is
    ranking by spherical Hamming distance and ties stay ties."""
    x = np.arange(n_bits + 1, dtype=np.float64)[:, None]
    y = np.arange(n_bits + 1, dtype=np.float64)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(y > 0, x / np.where(y > 0, y, 1), np.where(x > 0, np.inf, 0.0))
    possible = (x + y) <= n_bits  # xor and and count disjoint bits
    values = np.unique(ratio[possible])
    return torch.from_numpy(np.where(possible, np.searchsorted(values, ratio), 0).astype(np.int64))


def _harmonic(n: int, device) -> torch.Tensor:
    """H[k] = sum_{i=1..k} 1/i for k = 0..n, float64."""
    h = torch.zeros(n + 1, dtype=torch.float64, device=device)
    h[1:] = torch.cumsum(1.0 / torch.arange(1, n + 1, dtype=torch.float64, device=device), 0)
    return h


def tie_aware_ap(counts: torch.Tensor, rel_counts: torch.Tensor, harmonic: torch.Tensor):
    """Expected, best and worst AP over tie orders, from per-distance histograms (nq, n_bits+1), float64.

    For a group of n tied items holding r relevant ones, after C items and R relevant ones ranked before it:
    - expected (He et al. 2018): a relevant item sits at each position i = 1..n with probability 1/n and has
      (i-1)(r-1)/(n-1) relevant items before it inside the group, so the group adds
      (r/n) * sum_i (R + 1 + (i-1)(r-1)/(n-1)) / (C + i), summed with harmonic numbers;
    - best: relevant first, sum_{j=1..r} (R+j)/(C+j); worst: relevant last, sum_j (R+j)/(C+n-r+j).
    Each is divided by the query's number of relevant items (0 when it has none)."""
    n, r = counts, rel_counts
    c_before = torch.cumsum(n, 1) - n
    r_before = torch.cumsum(r, 1) - r
    h = lambda k: harmonic[k.long()]  # noqa: E731
    d_h = h(c_before + n) - h(c_before)
    pairs = torch.where(n > 1, (r - 1) / (n - 1).clamp(min=1), torch.zeros_like(n))
    expected = torch.where(
        n > 0, r / n.clamp(min=1) * ((r_before + 1) * d_h + pairs * (n - (c_before + 1) * d_h)), torch.zeros_like(n)
    )
    best = r + (r_before - c_before) * (h(c_before + r) - h(c_before))
    worst = r + (r_before - c_before - n + r) * (h(c_before + n) - h(c_before + n - r))
    total = r.sum(1)
    safe = total.clamp(min=1)
    return tuple(torch.where(total > 0, g.sum(1) / safe, torch.zeros_like(total)) for g in (expected, best, worst))


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
) -> dict:
    """Score query codes against database codes. Returns a dict of scalar metrics plus ``curves``.

    Keys: ``map``, ``map@K`` for each K in ``topk``, ``map_tie_aware``, ``map_tie_best``, ``map_tie_worst``,
    ``p@h<=R`` (R = ``radius``), ``zero_relevant_queries``, ``n_queries``, ``n_database``, ``n_bits``, and
    ``curves`` = {``pr_radius``: radius/precision/recall lists, ``p@n``: n/precision/recall lists}.
    ``distance="spherical"`` ranks by Spherical Hashing's distance instead; the Hamming-ball metrics
    (``p@h<=R``, ``pr_radius``) are then left out. Semantics: ``SEMANTICS``. On the CPU a compiled counting kernel
    scans each query (parallel over queries);
    on other devices (CUDA) torch scans ``chunk_size`` queries at a time (default: ~64M distances per chunk).
    """
    if distance not in DISTANCES:
        raise unknown("distance", distance, DISTANCES)
    q = as_pm1_codes(query_codes, "query codes")
    d = as_pm1_codes(db_codes, "database codes")
    if q.shape[1] != d.shape[1]:
        raise BenchError(f"query codes have {q.shape[1]} bits but database codes have {d.shape[1]}")
    ql = as_labels(query_labels, q.shape[0], "query labels")
    dl = as_labels(db_labels, d.shape[0], "database labels")
    if ql.ndim != dl.ndim or (ql.ndim == 2 and ql.shape[1] != dl.shape[1]):
        raise BenchError(f"query labels {tuple(ql.shape)} and database labels {tuple(dl.shape)} differ in kind")
    topk = tuple(int(k) for k in topk)
    if any(k < 1 for k in topk):
        raise BenchError(f"top-K values must be positive integers; got {list(topk)}")
    device = torch.device(device) if device is not None else d.device
    n_d, n_bits = d.shape[0], q.shape[1]
    cutoffs = [n_d] + [min(k, n_d) for k in topk]  # whole ranking first, then each K
    pn_grid = [n for n in pn if n <= n_d]
    buckets = spherical_buckets(n_bits) if distance == "spherical" else None
    if device.type == "cpu":
        from bench import _kernels

        hist, ap, pn_hits = (torch.from_numpy(a) for a in _kernels.scan(q, d, ql, dl, cutoffs, pn_grid, buckets))
    else:
        hist, ap, pn_hits = _scan_torch(
            q.to(device),
            d.to(device),
            ql.to(device),
            dl.to(device),
            cutoffs,
            pn_grid,
            chunk_size or max(1, (1 << 26) // n_d),
            buckets,
        )
    result = _summarise(hist.to(torch.float64), ap, pn_hits, topk, radius, pn_grid, n_d, n_bits)
    if buckets is not None:  # a Hamming ball means nothing under the spherical distance
        del result[f"p@h<={radius}"], result["curves"]["pr_radius"]
    return result


def _scan_torch(q, d, ql, dl, cutoffs, pn_grid, chunk_size, buckets=None):
    """Per query: the (distance, relevant) histogram (nq, n_bits+1, 2), AP at each cutoff (nq, len(cutoffs)) and
    the number of relevant items among the first N (nq, len(pn_grid)); ranking ties broken by index."""
    device = q.device
    n_buckets = q.shape[1] + 1 if buckets is None else int(buckets.max()) + 1
    hists, aps, pns = [], [], []
    for start in range(0, q.shape[0], chunk_size):
        dist = hamming_distances(q[start : start + chunk_size], d)
        if buckets is not None:  # the number of +1 bits both codes hold, then the spherical distance's rank
            both = ((q[start : start + chunk_size].to(torch.float32) + 1) / 2) @ ((d.to(torch.float32) + 1) / 2).T
            dist = buckets.to(device)[dist.long(), both.round().long()].to(torch.int32)
        rel = relevance(ql[start : start + chunk_size], dl)
        rows = dist.shape[0]
        flat = (torch.arange(rows, device=device)[:, None] * n_buckets + dist.long()) * 2 + rel
        hist = torch.bincount(flat.view(-1), minlength=rows * n_buckets * 2).view(rows, n_buckets, 2)
        del flat
        rel_sorted = rel.gather(1, stable_order(dist))
        del dist, rel
        ap, pn_hits = _ranked(rel_sorted, cutoffs, pn_grid)
        hists.append(hist)
        aps.append(ap)
        pns.append(pn_hits)
        del rel_sorted
    return torch.cat(hists), torch.cat(aps), torch.cat(pns)


def _ranked(rel_sorted: torch.Tensor, cutoffs, pn_grid):
    """From each query's relevance in ranked order (rows): AP at each cutoff (normalised by the relevant items
    inside it, 0 if none) and the number of relevant items among the first N of ``pn_grid``."""
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
    ql = as_labels(query_labels, q.shape[0], "query labels").to(q.device)
    dl = as_labels(db_labels, d.shape[0], "database labels").to(q.device)
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


def _summarise(hist, ap, pn_hits, topk, radius, pn_grid, n_d, n_bits) -> dict:
    """Every metric from the per-query scan results (see ``_scan_torch`` for their shapes)."""
    device = hist.device
    n_q = hist.shape[0]
    counts, rel_counts = hist.sum(2), hist[:, :, 1]
    n_rel = rel_counts.sum(1)
    tie, best, worst = tie_aware_ap(counts, rel_counts, _harmonic(n_d, device))

    ball = torch.cumsum(counts, 1)
    ball_rel = torch.cumsum(rel_counts, 1)
    precision_r = torch.where(ball > 0, ball_rel / ball.clamp(min=1), 0.0)
    recall_r = torch.where(n_rel[:, None] > 0, ball_rel / n_rel.clamp(min=1)[:, None], 0.0)

    pn_hits = pn_hits.to(torch.float64).to(device)
    grid = torch.tensor(pn_grid, dtype=torch.float64, device=device)
    recall_n = torch.where(n_rel[:, None] > 0, pn_hits / n_rel.clamp(min=1)[:, None], 0.0)
    ap = ap.to(device)
    return {
        "map": float(ap[:, 0].mean()),
        **{f"map@{k}": float(ap[:, i + 1].mean()) for i, k in enumerate(topk)},
        "map_tie_aware": float(tie.mean()),
        "map_tie_best": float(best.mean()),
        "map_tie_worst": float(worst.mean()),
        f"p@h<={radius}": float(precision_r[:, min(radius, n_bits)].mean()),
        "zero_relevant_queries": int((n_rel == 0).sum()),
        "n_queries": n_q,
        "n_database": n_d,
        "n_bits": n_bits,
        "curves": {
            "pr_radius": {
                "radius": list(range(n_bits + 1)),
                "precision": precision_r.mean(0).tolist(),
                "recall": recall_r.mean(0).tolist(),
            },
            "p@n": {
                "n": list(pn_grid),
                "precision": (pn_hits / grid).mean(0).tolist() if pn_grid else [],
                "recall": recall_n.mean(0).tolist() if pn_grid else [],
            },
        },
    }


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
    labels, clusters = (np.asarray(a.cpu() if isinstance(a, torch.Tensor) else a) for a in (labels, clusters))
    return {
        "nmi": nmi(labels, clusters),
        "nmi_arithmetic": nmi(labels, clusters, "arithmetic"),
        "acc": clustering_accuracy(labels, clusters),
    }
