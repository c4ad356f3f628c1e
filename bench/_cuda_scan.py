"""The CUDA scan of the evaluator for Hamming distances: two Triton kernels, no sort.

What ``bench._kernels.scan`` gives, counted on the GPU. Each program takes one query and one slice of the database
(``SLICE`` items) and reads it ``BLOCK`` items at a time: XOR and popcount of 64-bit words, relevance from class
ids or multi-hot label words.
1. ``_count_slices``: per (query, slice) the histogram of distances over all items and over the relevant ones;
2. between the two (torch, on the device): an item's rank is the items in nearer buckets, plus those of its
   bucket in earlier slices, plus those of its bucket before it in its slice, plus one (ties broken by database
   index, as on the CPU). The first two, per (query, slice, bucket), are prefix sums of the histograms;
3. ``_rank_slices``: the last term from bit masks of the block's 32 items (an OR-reduction a bit of the distances
   gives the items sharing each item's bucket), the running counts of the slice's earlier blocks added; likewise
   for the rank among the relevant items. Each relevant item's precision (relevant rank / rank) is added to the
   first sorted cutoff containing its rank.
The histogram then gives the tie-aware AP and the Hamming-ball curves through the CPU's own summary. Sums of
precisions are added in another order than on the CPU: equal to it to rounding (1e-12 is checked).

Triton comes with torch's CUDA builds. ``TRITON_INTERPRET=1`` runs these kernels on the CPU (slowly), which is how
the tests check them on a machine without a GPU.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from bench import _kernels

BLOCK = 32  # items a step of a program: their buckets compared as the bits of 32-bit masks
WARPS = 1  # a block of 32 items is one warp's: more warps would compute copies (4 warps: 3.7x the instructions)
SLICE = 8192  # items of one program: the grid has a program for each (query, slice)
CHUNK_COUNTS = 1 << 27  # (query, slice, bucket) counts a launch: bounds the prefix sums' memory (about 2 GB)


@triton.jit
def _distances_and_relevance(
    q_ptr, d_ptr, ql_ptr, dl_ptr, query, start, offsets, n_d,
    n_words: tl.constexpr, n_label_words: tl.constexpr, multi: tl.constexpr, NB: tl.constexpr,
):  # fmt: skip
    """The Hamming distances (popcount of XOR, SWAR: no intrinsic needed) and relevance of the block of items from
    ``start``; items past the database are in bucket NB - 1 and not relevant."""
    items = start + offsets
    valid = items < n_d
    dist = tl.zeros_like(items)
    items = items.to(tl.int64)  # an item's first word: past int32 for large databases
    for w in tl.static_range(n_words):
        x = tl.load(q_ptr + query * n_words + w) ^ tl.load(d_ptr + items * n_words + w, mask=valid, other=0)
        x = x - ((x >> 1) & 0x5555555555555555)  # the masks clear what an arithmetic shift brings in
        x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
        x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
        dist += ((x * 0x0101010101010101) >> 56).to(tl.int32) & 0xFF
    if multi:
        shared = tl.zeros_like(items)
        for w in tl.static_range(n_label_words):
            y = tl.load(ql_ptr + query * n_label_words + w)
            shared |= y & tl.load(dl_ptr + items * n_label_words + w, mask=valid, other=0)
        relevant = shared != 0
    else:
        relevant = tl.load(dl_ptr + items, mask=valid, other=-1) == tl.load(ql_ptr + query)
    return tl.where(valid, dist, NB - 1), relevant & valid


@triton.jit
def _bucket_counts(dist, relevant, NB: tl.constexpr):
    """The block's items and relevant items by bucket (the others counted in bin NB - 1)."""
    return tl.histogram(dist, NB), tl.histogram(tl.where(relevant, dist, NB - 1), NB)


@triton.jit
def _either(a, b):
    return a | b


@triton.jit
def _popcount32(x):
    x = x - ((x >> 1) & 0x55555555)
    x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F
    return ((x * 0x01010101) >> 24).to(tl.int32)


@triton.jit
def _same_bucket(dist, offsets, NB: tl.constexpr):
    """[i]: the 32-bit mask of the block's items whose bucket is item i's, from one mask a bit of the buckets
    (bit j: item j's bit set). With it the rank kernel's loop is about 300 PTX instructions an item for sm_90, against
    about 770 comparing each pair of the block's items."""
    every = tl.zeros(dist.shape, tl.uint32) - 1  # (not ~0: Triton's interpreter takes ~ as XOR with -1)
    same = every
    for b in tl.static_range(NB.bit_length() - 1):
        bit = ((dist >> b) & 1).to(tl.uint32)
        held = tl.reduce(bit << offsets.to(tl.uint32), 0, _either)
        same &= tl.where(bit == 1, held, held ^ every)
    return same


@triton.jit
def _count_slices(
    q_ptr, d_ptr, ql_ptr, dl_ptr, hist_ptr, first_query, n_d, n_slices,
    n_words: tl.constexpr, n_label_words: tl.constexpr, multi: tl.constexpr,
    SLICE_: tl.constexpr, BLOCK_: tl.constexpr, NB: tl.constexpr,
):  # fmt: skip
    """hist[query, slice, 0/1, bucket]: the slice's items / relevant items by distance. Bin NB - 1 takes the rest."""
    part, row = tl.program_id(0), tl.program_id(1)
    query = first_query + row
    offsets = tl.arange(0, BLOCK_)
    all_items = tl.zeros((NB,), tl.int32)
    relevant_items = tl.zeros((NB,), tl.int32)
    for start in range(part * SLICE_, tl.minimum(part * SLICE_ + SLICE_, n_d), BLOCK_):
        dist, relevant = _distances_and_relevance(
            q_ptr, d_ptr, ql_ptr, dl_ptr, query, start, offsets, n_d, n_words, n_label_words, multi, NB
        )
        block_all, block_relevant = _bucket_counts(dist, relevant, NB)
        all_items += block_all
        relevant_items += block_relevant
    out = hist_ptr + (row.to(tl.int64) * n_slices + part) * 2 * NB + tl.arange(0, NB)
    tl.store(out, all_items)
    tl.store(out + NB, relevant_items)


@triton.jit
def _rank_slices(
    q_ptr, d_ptr, ql_ptr, dl_ptr, base_ptr, marks_ptr, sums_ptr, hits_ptr, first_query, n_d, n_slices, n_marks,
    n_words: tl.constexpr, n_label_words: tl.constexpr, multi: tl.constexpr,
    SLICE_: tl.constexpr, BLOCK_: tl.constexpr, NB: tl.constexpr, NM: tl.constexpr,
):  # fmt: skip
    """Per (query, slice), for each mark: the precisions of the relevant items ranked inside it and after the
    previous mark, summed, and their number. ``base[query, slice, 0/1, bucket]``: the items (relevant items) ranked
    before the slice's first item of that bucket."""
    part, row = tl.program_id(0), tl.program_id(1)
    query = first_query + row
    offsets = tl.arange(0, BLOCK_)
    buckets = tl.arange(0, NB)
    base = base_ptr + (row.to(tl.int64) * n_slices + part) * 2 * NB + buckets
    before_all = tl.load(base)  # grows by each block's histogram: the items before the block
    before_relevant = tl.load(base + NB)
    mark_ids = tl.arange(0, NM)
    short = mark_ids < n_marks - 1  # the marks short of the database; the last, n_d, holds every item
    marks = tl.load(marks_ptr + mark_ids, mask=short, other=n_d + 1)
    top = tl.max(tl.where(short, marks, 0))
    last = mark_ids == n_marks - 1
    tl.static_assert(BLOCK_ == 32, "a block's items are the bits of a 32-bit mask")
    lanes_before = (tl.full([BLOCK_], 1, tl.uint32) << offsets.to(tl.uint32)) - 1  # [i]: the items before i
    sums = tl.zeros((NM,), tl.float64)
    hits = tl.zeros((NM,), tl.int32)
    for start in range(part * SLICE_, tl.minimum(part * SLICE_ + SLICE_, n_d), BLOCK_):
        dist, relevant = _distances_and_relevance(
            q_ptr, d_ptr, ql_ptr, dl_ptr, query, start, offsets, n_d, n_words, n_label_words, multi, NB
        )
        tied_before = _same_bucket(dist, offsets, NB) & lanes_before
        relevant_mask = tl.reduce(relevant.to(tl.uint32) << offsets.to(tl.uint32), 0, _either)
        rank = tl.gather(before_all, dist, 0) + _popcount32(tied_before) + 1
        relevant_rank = tl.gather(before_relevant, dist, 0) + _popcount32(tied_before & relevant_mask) + 1
        precision = tl.where(relevant, relevant_rank.to(tl.float64) / rank.to(tl.float64), 0.0)
        sums += tl.where(last, tl.sum(precision), 0.0)
        hits += tl.where(last, tl.sum(relevant.to(tl.int32)), 0)
        if tl.min(tl.where(relevant, rank, n_d + 1)) <= top:  # few blocks hold a rank inside a mark short of n_d
            mark = tl.sum((rank[:, None] > marks[None, :]).to(tl.int32), 1)  # the first mark holding the rank
            in_mark = (mark[:, None] == mark_ids[None, :]) & relevant[:, None] & short[None, :]
            mark_sums = tl.sum(tl.where(in_mark, precision[:, None], 0.0), 0)
            mark_hits = tl.sum(in_mark.to(tl.int32), 0)
            sums += mark_sums - tl.where(last, tl.sum(mark_sums), 0.0)  # moved from the last mark to theirs
            hits += mark_hits - tl.where(last, tl.sum(mark_hits), 0)
        block_all, block_relevant = _bucket_counts(dist, relevant, NB)
        before_all += block_all
        before_relevant += block_relevant
    out = (row.to(tl.int64) * n_slices + part) * NM + mark_ids
    tl.store(sums_ptr + out, sums)
    tl.store(hits_ptr + out, hits)


def bit_words(bits: torch.Tensor) -> torch.Tensor:
    """(n, b) bool as (n, ceil(b / 64)) int64 words, bit j of word w being column 64 w + j."""
    n, width = bits.shape
    padded = torch.zeros(n, -(-width // 64) * 64, dtype=torch.int64, device=bits.device)
    padded[:, :width] = bits
    weights = torch.ones(64, dtype=torch.int64, device=bits.device) << torch.arange(64, device=bits.device)
    return (padded.view(n, -1, 64) * weights).sum(2)  # distinct powers of two: the sum is an OR (bit 63 wraps)


def scan(q, d, ql, dl, cutoffs, pn_grid, slice_len=SLICE) -> _kernels.Scan:
    """The scan of every query (``bench._kernels.Scan``) from int8 {-1,+1} codes and torch labels
    (``metrics._label_tensor``: class ids, or multi-hot) on one device."""
    n_q, n_d, n_bits = q.shape[0], d.shape[0], q.shape[1]
    result = _kernels.Scan(n_q, n_bits + 1, cutoffs, pn_grid, n_d)
    q_words, d_words = bit_words(q > 0).contiguous(), bit_words(d > 0).contiguous()
    multi = ql.ndim == 2
    if multi:
        ql, dl = bit_words(ql > 0).contiguous(), bit_words(dl > 0).contiguous()
    n_label_words = ql.shape[1] if multi else 1
    n_buckets = n_bits + 1
    nb = triton.next_power_of_2(n_buckets + 1)  # one bin more for the items outside the database
    nm = triton.next_power_of_2(result.marks.size)
    marks = torch.from_numpy(result.marks).to(d.device)
    n_slices = -(-n_d // slice_len)
    shape = dict(n_words=q_words.shape[1], n_label_words=n_label_words, multi=multi, SLICE_=slice_len, BLOCK_=BLOCK)
    chunk = min(65535, max(1, CHUNK_COUNTS // (n_slices * 2 * nb)))  # queries a launch: the grid's second axis
    for first in range(0, n_q, chunk):
        rows = min(chunk, n_q - first)
        grid = (n_slices, rows)
        hist = torch.empty(rows, n_slices, 2, nb, dtype=torch.int32, device=d.device)
        _count_slices[grid](q_words, d_words, ql, dl, hist, first, n_d, n_slices, **shape, NB=nb, num_warps=WARPS)
        totals = hist.sum(1, dtype=torch.int64)  # (rows, 2, nb)
        totals[:, :, -1] = 0
        nearer = torch.cumsum(totals, 2) - totals
        earlier_slices = torch.cumsum(hist, 1, dtype=torch.int64) - hist
        base = (nearer[:, None] + earlier_slices).to(torch.int32).contiguous()
        sums = torch.empty(rows, n_slices, nm, dtype=torch.float64, device=d.device)
        hits = torch.empty(rows, n_slices, nm, dtype=torch.int32, device=d.device)
        outputs = (base, marks, sums, hits, first, n_d, n_slices, marks.numel())
        _rank_slices[grid](q_words, d_words, ql, dl, *outputs, **shape, NB=nb, NM=nm, num_warps=WARPS)
        at = slice(first, first + rows)
        result.mark_sums[at] = sums.sum(1)[:, : marks.numel()].cpu().numpy()
        result.mark_hits[at] = hits.sum(1, dtype=torch.int64)[:, : marks.numel()].cpu().numpy()
        counts = totals[:, :, :n_buckets].cpu().numpy()
        hist_rows = np.ascontiguousarray(np.stack([counts[:, 0] - counts[:, 1], counts[:, 1]], 2))
        _kernels.summarise_histograms(hist_rows, result.tie[at], result.n_relevant[at], result.ball_sums)
    return result
