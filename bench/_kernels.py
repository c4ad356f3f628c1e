"""The CPU scan of the evaluator: compiled (numba) counting kernels, no sort, Python threads over queries.

Per query, over the database in index order, a segment at a time. The database is cut into 4 contiguous lanes
scanned side by side, each with counters of its own: consecutive updates of one counter would wait on each other.
1. keys, in vectorised passes: ``key = 2 * (bucket * LANES + lane) + relevant``, the index of the item's counter,
   the bucket being the Hamming distance (XOR + popcount of bit-packed codes) or the rank of the spherical
   distance popcount(xor) / popcount(and). The buckets are written first, then turned into keys in a second loop:
   the popcount works on 64-bit lanes and the keys on 16-bit ones, 4 and 16 items a vector, where one fused loop
   took 4 items a vector for both (its key pass 31 ms against 17 at the CIFAR-10 shape). Codes of several words
   are copied into a plane per word first, PLANE items at a time, so that each word's loop reads contiguous words;
2. one scalar pass over the keys. Each counter counts items in its low bits and holds ``bucket * LANES + lane``
   above them, so the value read for an item's *other* key (``key ^ 1``: the non-relevant items of its bucket in
   its lane) says both where it belongs and how many non-relevant items of that bucket precede it in its lane.
   That value is stored for every item, at a write position that advances only on relevant items: a branch-free
   list of each lane's relevant items, in database order. The final counters are the (bucket, relevant) histogram;
3. over the relevant items only: rank = (items in nearer buckets) + (items of its bucket before it) + 1, ties
   broken by database index, and likewise its rank among the relevant items (a lane's counts offset by those of
   the lanes before it). The precisions are summed over all of them; the ranks of the items of the buckets that
   can reach a cutoff short of the database (map@K, P@N) are marked in a table by rank, read in rank order: the
   k-th relevant item marked has precision k / rank, added to the first sorted cutoff containing its rank. Prefix
   sums over the cutoffs give every AP@K and P@N;
4. from the histogram: the tie-aware AP and its bounds, and the precision and recall of every Hamming ball.

Threads are Python threads running the kernel without the GIL, so no OpenMP pool starts (numba's OpenMP layer
shares libgomp with torch and resets the thread count of the whole process). Queries are dealt in chunks of a
fixed size, summed in chunk order: the results do not depend on the number of threads.
"""

from __future__ import annotations

import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba.extending import intrinsic

LANES = 4
SEGMENT = 2048  # items per lane keyed at a time: a group's keys and the segment's codes stay in the L2 cache
PLANE = 512  # items of codes of several words copied into word planes at a time (4 KiB a word)
GROUP = 4  # queries scanned together: each segment of the database is read from memory once for all four
QUERY_CHUNK = 64  # queries per task of a thread: enough tasks to balance two busy cores on 1,000 queries
SMALL_WORK = 1 << 21  # query-item pairs below which one thread does all (starting threads costs more)
EXACT_HARMONIC = 32  # below, harmonic numbers are summed term by term; above, a series to 1/a^8 (the rest < 1 ulp)

_ONE = np.uint64(1)
_SEGMENT = np.uint64(SEGMENT)


@intrinsic
def _popcount(typingctx, x):
    """The popcount instruction of the integer's own width (LLVM ctpop)."""
    if not isinstance(x, numba.types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return x(x), codegen


@numba.njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _relevant(query_labels, labels, t, multi_label):
    """Whether row t of ``labels`` is relevant to the query: the same class id, or a label in common."""
    if not multi_label:
        return labels[t, 0] == query_labels[0]
    shared = labels[t, 0] & query_labels[0]
    for w in range(1, labels.shape[1]):
        shared |= labels[t, w] & query_labels[w]
    return shared != 0


# The loops on views index them from 0 with range() counters: numba then knows the indices are not negative and
# leaves out the wrap-around of negative indices, which would keep LLVM from vectorising them.
@numba.njit(nogil=True, cache=True, error_model="numpy")
def _spherical_buckets(query, segment, buckets, keys):
    """keys[t]: the rank of item t's spherical distance, ``buckets[popcount(xor), popcount(and)]``."""
    for t in range(segment.shape[0]):
        n_xor = 0
        n_and = 0
        for w in range(segment.shape[1]):
            n_xor += np.int64(_popcount(query[w] ^ segment[t, w]))
            n_and += np.int64(_popcount(query[w] & segment[t, w]))
        keys[t] = buckets[n_xor, n_and]


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _relevance_keys(query_labels, labels, multi_label, keys, lane_id):
    """Each bucket in ``keys`` turned into its key 2 * (bucket * LANES + lane_id) + relevant, for labels of several
    words (``_scan_chunk`` keys one label word itself, on flat arrays)."""
    for t in range(keys.shape[0]):
        keys[t] = 2 * (keys[t] * LANES + lane_id) + _relevant(query_labels, labels, t, multi_label)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _harmonic_gap(before, n):
    """H(before + n) - H(before), H(k) = 1 + 1/2 + ... + 1/k, to a few ulps: term by term below EXACT_HARMONIC,
    then as digamma(b) - digamma(a) by its asymptotic series, the logarithm of the ratio taken with log1p. (A table
    of cumulative sums would cost 8 bytes per database item and drift by up to 1e-10 relative at a million.)"""
    gap = 0.0
    a = before + 1
    stop = before + n
    while a <= stop and a < EXACT_HARMONIC:
        gap += 1.0 / a
        a += 1
    if a > stop:
        return gap
    b = stop + 1
    ia, ib = 1.0 / a, 1.0 / b
    a2, b2 = ia * ia, ib * ib
    a4, b4 = a2 * a2, b2 * b2
    series = 0.5 * (ia - ib) + (a2 - b2) / 12.0 - (a4 - b4) / 120.0
    series += (a4 * a2 - b4 * b2) / 252.0 - (a4 * a4 - b4 * b4) / 240.0
    return gap + math.log1p((b - a) / a) + series


@numba.njit(nogil=True, cache=True, error_model="numpy")
def summarise_histogram(other, relevant, tie, ball_sums):
    """From one query's histogram (``other``/``relevant``: items per bucket), its expected, best and worst AP over
    the orders of tied items into ``tie`` (3,), and the precision and recall of the ball up to each bucket added to
    ``ball_sums`` (2, n_buckets). Returns its number of relevant items.

    For a group of n tied items holding r relevant ones, after C items and R relevant ones ranked before it:
    - expected (He et al. 2018): a relevant item sits at each position i = 1..n with probability 1/n and has
      (i-1)(r-1)/(n-1) relevant items before it inside the group, so the group adds
      (r/n) * sum_i (R + 1 + (i-1)(r-1)/(n-1)) / (C + i), summed with harmonic numbers;
    - best: relevant first, sum_{j=1..r} (R+j)/(C+j); worst: relevant last, sum_j (R+j)/(C+n-r+j).
    Each is divided by the query's number of relevant items (0 when it has none)."""
    n_relevant = 0
    for s in range(relevant.shape[0]):
        n_relevant += relevant[s]
    expected = best = worst = 0.0
    c_before = 0
    r_before = 0
    for s in range(relevant.shape[0]):
        r = relevant[s]
        n = other[s] + r
        if r > 0:  # a bucket without relevant items adds nothing to any of the three
            gap = _harmonic_gap(c_before, n)
            pairs = (r - 1) / (n - 1) if n > 1 else 0.0
            expected += r / n * ((r_before + 1) * gap + pairs * (n - (c_before + 1) * gap))
            best += r + (r_before - c_before) * _harmonic_gap(c_before, r)
            worst += r + (r_before - c_before - n + r) * _harmonic_gap(c_before + n - r, r)
        c_before += n
        r_before += r
        if c_before > 0:
            ball_sums[0, s] += r_before / c_before
        if n_relevant > 0:
            ball_sums[1, s] += r_before / n_relevant
    if n_relevant > 0:
        tie[0] = expected / n_relevant
        tie[1] = best / n_relevant
        tie[2] = worst / n_relevant
    else:
        tie[:] = 0.0
    return n_relevant


@numba.njit(nogil=True, cache=True, error_model="numpy")
def summarise_histograms(hist, tie, n_relevant, ball_sums):
    """``summarise_histogram`` for each row of ``hist`` (n, n_buckets, 2), e.g. those another device counted."""
    for i in range(hist.shape[0]):
        n_relevant[i] = summarise_histogram(hist[i, :, 0], hist[i, :, 1], tie[i], ball_sums)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _fullest_lanes(q_labels, d_labels, multi_label, most):
    """For each row of ``q_labels``, the relevant items of its fullest lane of the database into ``most``. One-word
    labels (the common case) take a vectorised loop on the flat labels, counting in 32 bits: the count truncated
    each step lets LLVM add as many counts a vector as it compares labels (numba widens integer sums to 64 bits),
    3x faster."""
    n_d = d_labels.shape[0]
    lane = n_d // LANES
    flat = d_labels.reshape(-1)
    for i in range(q_labels.shape[0]):
        most[i] = 0
        y = q_labels[i, 0]
        for lane_id in range(LANES):
            start = lane_id * lane
            stop = n_d if lane_id == LANES - 1 else start + lane
            if d_labels.shape[1] > 1 or stop - start >= 1 << 32:
                labels = d_labels[start:stop]
                count = 0
                for t in range(labels.shape[0]):
                    count += _relevant(q_labels[i], labels, t, multi_label)
                most[i] = max(most[i], count)
                continue
            count32 = np.uint32(0)
            if multi_label:
                for t in range(stop - start):
                    count32 = np.uint32(count32 + ((flat[np.uint64(start) + np.uint64(t)] & y) != 0))
            else:
                for t in range(stop - start):
                    count32 = np.uint32(count32 + (flat[np.uint64(start) + np.uint64(t)] == y))
            most[i] = max(most[i], np.int64(count32))


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _count_segment(flat_keys, m, m_last, counters, hits, positions):
    """Pass 2 over one query's keyed segment: ``m`` items of each lane, ``m_last`` of the last one. Counter ``key``
    is at ``counters[key + 1]``, the relevant bit lowest: a relevant item's other key, ``key ^ 1``, is ``key - 1``, at
    ``counters[key]``, an address mode away (a non-relevant item reads a value it never keeps; slot 0 is padding).
    The count in the counters' low bits goes up by 1, an immediate: 7 instructions an item. Indexed with unsigned
    integers: no index needs the wrap-around of negative indices. ``positions``: the lanes' write positions in
    ``hits``, each lane's list in a range of its own."""
    n0, n1, n2, n3 = positions[0], positions[1], positions[2], positions[3]
    for t in range(m):
        u = np.uint64(t)
        k = np.uint64(flat_keys[u])
        hits[n0] = counters[k]
        counters[k + _ONE] += 1
        n0 += k & _ONE
        k = np.uint64(flat_keys[_SEGMENT + u])
        hits[n1] = counters[k]
        counters[k + _ONE] += 1
        n1 += k & _ONE
        k = np.uint64(flat_keys[np.uint64(2) * _SEGMENT + u])
        hits[n2] = counters[k]
        counters[k + _ONE] += 1
        n2 += k & _ONE
        k = np.uint64(flat_keys[np.uint64(3) * _SEGMENT + u])
        hits[n3] = counters[k]
        counters[k + _ONE] += 1
        n3 += k & _ONE
    for t in range(m, m_last):
        k = np.uint64(flat_keys[np.uint64(3) * _SEGMENT + np.uint64(t)])
        hits[n3] = counters[k]
        counters[k + _ONE] += 1
        n3 += k & _ONE
    positions[0], positions[1], positions[2], positions[3] = n0, n1, n2, n3


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _precisions(ranks, lo, hi):
    """The sum of k / ranks[k - 1] over k = lo+1..hi: the precisions of the k-th relevant items by rank."""
    total = 0.0
    for k in range(lo, hi):
        total += (k + 1) / ranks[k]
    return total


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _rank_hits(counters, lists, positions, count_bits, short_marks, other, relevant, scratch, mark_sums, mark_hits):
    """Pass 3 for one query: its histogram into ``other``/``relevant`` and, per mark, the precisions of its
    relevant items summed and counted into ``mark_sums``/``mark_hits`` (rows). ``lists``: the lanes' lists of
    relevant items (each lane a quarter of the list: lane l's from l * capacity to positions[l]), and a table of
    top + 1 bytes, top being one past the largest of ``short_marks``, the marks short of the database (sorted).

    One pass over the lists sums every item's precision and writes the ranks of the items of the buckets that can
    reach a mark short of the database (fewer nearer items than the largest such mark) to the front of the list.
    Those ranks are marked present in the table, which is then read in rank order: every relevant item ranked
    inside a mark is in the front, so the k-th present rank is the k-th relevant item's. Ranking the front items
    a second time, as before, cost 1.3 ms more of the 80 at the CIFAR-10 shape."""
    rank_offset, next_relevant_rank, can_reach_mark = scratch
    hits, present = lists
    n_buckets = other.shape[0]
    mask = (_ONE << np.uint64(count_bits)) - _ONE
    n_marks = mark_sums.shape[0]
    # Per (bucket, lane), at = bucket * LANES + lane, the low bits of an item's value: rank = rank_offset + (non-
    # relevant items of the bucket before the item in its lane) + its relevant rank, rank_offset being the items in
    # nearer buckets + the non-relevant items of the bucket in earlier lanes - the relevant items in nearer buckets.
    # Relevant ranks count on from next_relevant_rank, after the relevant items in nearer buckets and in earlier
    # lanes. An item's rank is at least its nearer items + 1: below top only if that is.
    top = present.shape[0] - 1
    nearer = 0
    nearer_relevant = 0
    for s in range(n_buckets):
        other_in = relevant_in = 0  # of the bucket, in the lanes so far: in registers, not in other and relevant
        for lane_id in range(LANES):
            at = s * LANES + lane_id
            rank_offset[at] = nearer + other_in - nearer_relevant
            next_relevant_rank[at] = nearer_relevant + relevant_in + 1
            can_reach_mark[at] = nearer + 1 < top
            other_in += np.int64(counters[2 * at + 1] & mask)
            relevant_in += np.int64(counters[2 * at + 2] & mask)
        other[s], relevant[s] = other_in, relevant_in
        nearer += other_in + relevant_in
        nearer_relevant += relevant_in
    total = 0.0  # the precisions of all relevant items, summed in a register
    n_total = 0
    n_front = np.uint64(0)  # never past the item read: the front holds only items read before
    capacity = hits.shape[0] // LANES
    for lane_id in range(LANES):
        start = np.uint64(lane_id * capacity)
        n_total += np.int64(positions[lane_id] - start)
        for h in range(start, positions[lane_id]):
            value = hits[h]
            at = value >> np.uint64(count_bits)
            relevant_rank = next_relevant_rank[at]
            next_relevant_rank[at] = relevant_rank + 1
            rank = rank_offset[at] + np.int64(value & mask) + relevant_rank
            total += relevant_rank / rank
            hits[n_front] = rank
            n_front += can_reach_mark[at]
    # Every relevant item ranked inside a mark short of the database is in the front, ranked below top. The k-th
    # of them by rank is the k-th relevant item: its precision is k / rank. Each mark's present ranks are written
    # in order over the front (read already), so only relevant ranks are divided, without a branch.
    present[:] = 0
    for h in range(n_front):
        present[min(np.int64(hits[h]), top)] = 1
    mark_sums[:] = 0.0
    mark_hits[:] = 0
    found = 0
    first_rank = 1
    for mark in range(short_marks.shape[0]):
        before = found
        for r in range(first_rank, short_marks[mark] + 1):
            hits[found] = r
            found += present[r]
        first_rank = short_marks[mark] + 1
        mark_hits[mark] = found - before
        mark_sums[mark] = _precisions(hits, before, found)
    for mark in range(n_marks - 1):
        total -= mark_sums[mark]
        n_total -= mark_hits[mark]
    mark_sums[n_marks - 1] = total  # the last mark, the whole database: every relevant item not counted yet
    mark_hits[n_marks - 1] = n_total


@numba.njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _add_distances(keys, to, words, at, n, x, first):
    """keys[to + t] = (or +=, unless ``first``) popcount(x ^ words[at + t]) for t < n: one word of the distances."""
    if first:
        for t in range(n):
            u = np.uint64(t)
            keys[to + u] = _popcount(x ^ words[at + u])
    else:
        for t in range(n):
            u = np.uint64(t)
            keys[to + u] += _popcount(x ^ words[at + u])


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _scan_chunk(
    lo, hi, q_words, d_words, q_labels, d_labels, multi_label, fullest_lanes, buckets, keys, counter, short_marks, out
):
    """Queries lo..hi-1, GROUP at a time: each segment of the database is read from memory once for the group.
    ``out``: per query, for each sorted cutoff ("mark"), the sum of the precisions of the relevant items ranked
    after the previous mark and up to it and their number (``mark_sums``, ``mark_hits``, (n_q, n_marks)), the
    tie-aware APs (n_q, 3) and the relevant items (n_q,); the ball sums of these queries (2, n_buckets).
    ``fullest_lanes``: per query, the relevant items of its fullest lane (``_fullest_lanes``). ``keys``: (GROUP,
    LANES * SEGMENT) scratch, uint16 or else uint32 (see ``scan``); ``counter``: an empty array of the counters'
    dtype, uint32 where (bucket, lane) and a lane's count fit in it (the list of relevant items, copies of counters,
    then takes half the memory and cache), else uint64;
    ``short_marks``: the sorted marks short of the database, the first of the marks."""
    mark_sums, mark_hits, tie, n_relevant, ball_sums = out
    n_d = d_words.shape[0]
    n_buckets = ball_sums.shape[1]
    n_counters = 2 * n_buckets * LANES  # (bucket b, lane l, relevant r) at 2 * (b * LANES + l) + r
    lane = n_d // LANES  # lanes 0..2 hold `lane` items each; lane 3 the rest, up to LANES - 1 more
    last_lane = n_d - (LANES - 1) * lane
    count_bits = 1  # the bits of a lane's count, a counter's low bits (b * LANES + l above them)
    while (1 << count_bits) <= last_lane:
        count_bits += 1
    # Hamming distances and one label word (the common cases) are keyed here, on flat arrays: no call, no view per
    # segment. Codes of several words are first copied, PLANE items at a time, into a plane per word (word w of
    # each item), so that each word's popcount loop reads contiguous words and is vectorised: `evaluate` 0.106-0.109
    # against 0.126 s at 1,000 x 54,000 x 128 bits, 0.166-0.170 against 0.216-0.221 at 256, the copy included.
    # One-word codes are their own plane.
    spherical = buckets.shape[0] > 1
    n_words = d_words.shape[1]
    planes = np.empty(n_words * PLANE if not spherical and n_words > 1 else 0, d_words.dtype)
    flat_codes, flat_labels, flat_keys = d_words.reshape(-1), d_labels.reshape(-1), keys.reshape(-1)
    counters = np.empty((GROUP, n_counters + 1), counter.dtype)
    # The lists of relevant items sized once, exactly (growing one would copy it): a slot for each relevant item
    # of the fullest lane of these queries, and one for the store after the last.
    most = fullest_lanes[lo:hi].max()
    capacity = most + 1
    hits = np.empty((GROUP, capacity * LANES), counter.dtype)
    positions = np.empty((GROUP, LANES), np.uint64)
    # The ranks inside a mark short of the database are below top; one slot more for all the others.
    top = short_marks[-1] + 1 if short_marks.shape[0] else 1
    present = np.empty(top + 1, np.uint8)
    other = np.empty((GROUP, n_buckets), np.int64)
    relevant = np.empty((GROUP, n_buckets), np.int64)
    by_lane = n_buckets * LANES
    scratch = (np.empty(by_lane, np.int64), np.empty(by_lane, np.int64), np.empty(by_lane, np.uint64))
    for first in range(lo, hi, GROUP):
        group = min(GROUP, hi - first)
        for g in range(group):
            for k in range(n_counters):
                counters[g, k + 1] = (k >> 1) << count_bits
            for lane_id in range(LANES):
                positions[g, lane_id] = lane_id * capacity
        for a in range(0, last_lane, SEGMENT):
            m = max(0, min(SEGMENT, lane - a))
            m_last = min(SEGMENT, last_lane - a)
            for lane_id in range(LANES):
                start = lane_id * lane + a
                stop = start + (m_last if lane_id == LANES - 1 else m)
                if planes.shape[0]:  # codes of several words: their distances, PLANE items at a time
                    for b in range(start, stop, PLANE):
                        n = min(PLANE, stop - b)
                        for w in range(n_words):
                            to, at = np.uint64(w * PLANE), np.uint64(b * n_words + w)
                            for t in range(n):
                                u = np.uint64(t)
                                planes[to + u] = flat_codes[at + u * np.uint64(n_words)]
                        for g in range(group):
                            to = np.uint64(g * LANES * SEGMENT + lane_id * SEGMENT + b - start)
                            for w in range(n_words):
                                x = q_words[first + g, w]
                                _add_distances(flat_keys, to, planes, np.uint64(w * PLANE), n, x, w == 0)
                for g in range(group):  # the segment is read from memory for the first query, from cache after
                    i = first + g
                    # the buckets (the distances of codes of several words: above), then the keys (see step 1)
                    to, at = np.uint64(g * LANES * SEGMENT + lane_id * SEGMENT), np.uint64(start)
                    segment_keys = slice(lane_id * SEGMENT, lane_id * SEGMENT + stop - start)  # a view only where used
                    if spherical:
                        _spherical_buckets(q_words[i], d_words[start:stop], buckets, keys[g, segment_keys])
                    elif n_words == 1:
                        _add_distances(flat_keys, to, flat_codes, at, stop - start, q_words[i, 0], True)
                    y = q_labels[i, 0]
                    if d_labels.shape[1] > 1:
                        _relevance_keys(q_labels[i], d_labels[start:stop], multi_label, keys[g, segment_keys], lane_id)
                    elif multi_label:
                        for t in range(stop - start):
                            u = np.uint64(t)
                            key = flat_keys[to + u] * LANES + lane_id
                            flat_keys[to + u] = 2 * key + ((flat_labels[at + u] & y) != 0)
                    else:
                        for t in range(stop - start):
                            u = np.uint64(t)
                            key = flat_keys[to + u] * LANES + lane_id
                            flat_keys[to + u] = 2 * key + (flat_labels[at + u] == y)
            for g in range(group):
                _count_segment(keys[g], m, m_last, counters[g], hits[g], positions[g])
        for g in range(group):  # the group's rank passes, then its summaries: measured faster than alternated
            i = first + g
            row = (mark_sums[i], mark_hits[i])
            lists = (hits[g], present)
            _rank_hits(counters[g], lists, positions[g], count_bits, short_marks, other[g], relevant[g], scratch, *row)
        for g in range(group):
            n_relevant[first + g] = summarise_histogram(other[g], relevant[g], tie[first + g], ball_sums)


_BYTE_LOW_BITS = np.uint64(0x0101010101010101)
_GATHER_LOW_BITS = np.uint64(0x0102040810204080)  # times the low bits of 8 bytes: byte j's at bit 56 + j


@numba.njit(nogil=True, cache=True, error_model="numpy")
def pack_byte_codes(words, out):
    """Codes of one byte a value, read 8 values a uint64 word (``words``: (n, n_bits / 8)), checked and packed in
    one pass: bit j of byte j // 8 of ``out`` is set where value j is 1 (little bit order). Returns whether some
    byte is 0xFF (-1 as int8), some is 0, and some is neither 0, 1 nor 0xFF. Per byte: bit 7 spread over the byte
    and or-ed with bit 0 gives back the byte only for 0, 1 and 0xFF; the value is 1 where bit 0 is set and bit 7
    is not; the multiply gathers 8 such bits into the top byte (each lands on a bit of its own: no carries)."""
    negative = zero = wrong = np.uint64(0)
    for i in range(words.shape[0]):
        for j in range(words.shape[1]):
            w = words[i, j]
            sign = (w >> np.uint64(7)) & _BYTE_LOW_BITS
            low = w & _BYTE_LOW_BITS
            wrong |= w ^ (sign * np.uint64(0xFF) | low)
            negative |= sign
            zero |= ~w & _BYTE_LOW_BITS
            out[i, j] = np.uint8(((low & ~sign) * _GATHER_LOW_BITS) >> np.uint64(56))
    return negative != 0, zero != 0, wrong != 0


def word_dtype(n_bits: int) -> np.dtype:
    """The unsigned word the kernel reads ``n_bits`` bits in: 32-bit words up to 32 bits, else 64-bit words. (8- and
    16-bit words would save 3 or 2 bytes an item of codes that short, for a compiled kernel each: seconds of
    compilation on a fresh install, for every word type met.)"""
    return np.dtype(np.uint32 if n_bits <= 32 else np.uint64)


def packed_width(n_bits: int) -> int:
    """Bytes per row in the kernel's layout: whole words of ``word_dtype``."""
    size = word_dtype(n_bits).itemsize
    return -(-n_bits // (8 * size)) * size


def as_words(packed: np.ndarray, n_bits: int) -> np.ndarray:
    """Bit-packed rows (n, bytes), little bit order, as the kernel's words: a view when the width and alignment
    allow, else a zero-padded copy (the size of the packed rows)."""
    width = packed_width(n_bits)
    dtype = word_dtype(n_bits)
    if packed.shape[1] != width or not packed.flags.c_contiguous or packed.ctypes.data % dtype.itemsize:
        padded = np.zeros((packed.shape[0], width), np.uint8)
        n_bytes = min(packed.shape[1], width)
        padded[:, :n_bytes] = packed[:, :n_bytes]
        packed = padded
    return packed.view(dtype)


@numba.njit(cache=True)
def _set_up() -> int:
    return 0


def set_up_numba_lean() -> None:
    """Set numba's compiler up now, without what it imports for features the kernels do not use: on its first call
    numba imports scipy.linalg (to check for BLAS) and cffi, when installed, 0.3-0.4 s of the 2 s ``bench evaluate``
    takes on a 2-core machine. They are hidden while numba sets up (importing a module set to None raises
    ImportError, which numba takes as "not installed") and importable again after it. Only for a process that does
    nothing but score, as ``bench evaluate``: numba there then compiles no BLAS or cffi calls."""
    hidden = [name for name in ("scipy.linalg", "cffi") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None
    try:
        _set_up()
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def n_threads() -> int:
    """NUMBA_NUM_THREADS (numba's own setting: NUMBA_NUM_THREADS=1 scans on one thread), at most the usable CPUs."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(numba.config.NUMBA_NUM_THREADS, usable))


class Scan:
    """What the scan of every query gives the summary, whichever device counted."""

    def __init__(self, n_queries: int, n_buckets: int, cutoffs, pn_grid, n_database: int):
        self.marks = np.unique(np.asarray([*cutoffs, *pn_grid, n_database], np.int64))
        self.cutoffs, self.pn_grid = np.asarray(cutoffs, np.int64), np.asarray(pn_grid, np.int64)
        self.mark_sums = np.zeros((n_queries, self.marks.size))
        self.mark_hits = np.zeros((n_queries, self.marks.size), np.int64)
        self.tie = np.empty((n_queries, 3))
        self.n_relevant = np.empty(n_queries, np.int64)
        self.ball_sums = np.zeros((2, n_buckets))

    def ap(self) -> np.ndarray:
        """(n_q, len(cutoffs)): AP at each cutoff, normalised by the relevant items inside it (0 if none)."""
        at = np.searchsorted(self.marks, self.cutoffs)
        prefix_sums, inside = np.cumsum(self.mark_sums, 1)[:, at], np.cumsum(self.mark_hits, 1)[:, at]
        return np.where(inside > 0, prefix_sums / np.maximum(inside, 1), 0.0)

    def pn_hits(self) -> np.ndarray:
        """(n_q, len(pn_grid)): relevant items among the first N."""
        return np.cumsum(self.mark_hits, 1)[:, np.searchsorted(self.marks, self.pn_grid)]


def scan(
    q_words, d_words, n_bits: int, q_labels, d_labels, multi_label: bool, cutoffs, pn_grid, buckets=None, threads=None
) -> Scan:
    """Scan every query against the database (``Scan``). ``q_words``/``d_words``: bit-packed codes as unsigned words
    (``as_words``); labels: (n, 1) unsigned class ids or (n, words) multi-hot bit words, of one dtype. ``buckets``:
    None for Hamming distance (n_bits + 1 buckets), else the (n_bits+1, n_bits+1) table of spherical-distance ranks
    by (xor count, and count). ``threads``: default ``n_threads()``."""
    n_q, n_d = q_words.shape[0], d_words.shape[0]
    n_buckets = n_bits + 1 if buckets is None else int(buckets.max()) + 1
    table = np.zeros((1, 1), np.int64) if buckets is None else np.ascontiguousarray(buckets, np.int64)
    result = Scan(n_q, n_buckets, cutoffs, pn_grid, n_d)
    short_marks = np.ascontiguousarray(result.marks[result.marks < n_d])
    starts = range(0, n_q, QUERY_CHUNK)
    n_places = n_buckets * LANES  # (bucket, lane) pairs
    # Keys of at least 16 bits: LLVM keeps the key loop's arithmetic on 16-bit vector lanes, but on one-byte keys it
    # falls back to 64-bit lanes (the lane, a loop-invariant addend, defeats the narrowing): 89 against 63-66 ms
    # at 1,000 x 54,000 x 16 bits.
    key_dtype = np.uint16 if 2 * n_places <= 1 << 16 else np.uint32
    counter_bits = (n_places - 1).bit_length() + (n_d // LANES + LANES).bit_length()  # (bucket, lane), then a count
    counter_dtype = np.uint32 if counter_bits <= 32 else np.uint64
    ball_sums = np.zeros((len(starts), 2, n_buckets))

    workers = (threads or n_threads()) if n_q * n_d >= SMALL_WORK else 1
    # Queries with the same labels have the same relevant items: they are counted once for each distinct row, on
    # the scan's threads (with multi-hot labels most rows can be distinct).
    if q_labels.shape[1] == 1:  # class ids or one label word: numpy's unique of values, 20x its unique of rows
        distinct, query_row = np.unique(q_labels[:, 0], return_inverse=True)
        distinct = distinct.reshape(-1, 1)
    else:
        distinct, query_row = np.unique(q_labels, axis=0, return_inverse=True)
    fullest_lanes = np.empty(distinct.shape[0], np.int64)

    def count(chunk: int) -> None:
        rows = slice(chunk * QUERY_CHUNK, (chunk + 1) * QUERY_CHUNK)
        _fullest_lanes(distinct[rows], d_labels, multi_label, fullest_lanes[rows])

    run_chunks(count, -(-distinct.shape[0] // QUERY_CHUNK), workers)
    fullest_lanes = fullest_lanes[query_row.reshape(-1)]

    def run(chunk: int) -> None:
        lo = starts[chunk]
        out = (result.mark_sums, result.mark_hits, result.tie, result.n_relevant, ball_sums[chunk])
        hi = min(lo + QUERY_CHUNK, n_q)
        keys = np.empty((GROUP, LANES * SEGMENT), key_dtype)
        counter = np.empty(0, counter_dtype)
        labels = (q_labels, d_labels, multi_label, fullest_lanes)
        _scan_chunk(lo, hi, q_words, d_words, *labels, table, keys, counter, short_marks, out)

    run_chunks(run, len(starts), workers)
    result.ball_sums = ball_sums.sum(0)  # in chunk order, whatever thread ran which
    return result


def run_chunks(task, n_chunks: int, threads: int) -> None:
    """``task(c)`` for c in range(n_chunks) on ``threads`` threads, each taking the next chunk when it is free."""
    if threads <= 1 or n_chunks <= 1:
        for chunk in range(n_chunks):
            task(chunk)
        return
    with ThreadPoolExecutor(min(threads, n_chunks)) as pool:
        list(pool.map(task, range(n_chunks)))
