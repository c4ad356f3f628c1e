"""The evaluator against slow, obvious definitions (bench.reference), plus properties."""

import numpy as np
import pytest
import torch
from conftest import needs_cuda, random_case
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import _kernels
from bench.errors import BenchError
from bench.metrics import (
    CUDA_SCANS,
    _scan_torch,
    code_words,
    evaluate,
    label_words,
    pack_codes,
    spherical_buckets,
    unpack_codes,
)
from bench.reference import brute_force_tie_ap, reference_evaluate, reference_pr_radius

CASES = [(bits, multi, patterns) for bits in (8, 16, 32, 64) for multi in (False, True) for patterns in (2, 6)]


@pytest.mark.parametrize("n_bits,multi_label,n_patterns", CASES)
def test_matches_reference(n_bits, multi_label, n_patterns):
    rng = np.random.default_rng(n_bits * 10 + multi_label + n_patterns)
    q, d, ql, dl = random_case(rng, 25, 300, n_bits, multi_label=multi_label, n_patterns=n_patterns)
    ours = evaluate(q, d, ql, dl, topk=(1, 10, 50, 300), pn=(5, 20, 100))
    ref = reference_evaluate(q, d, ql, dl, topk=(1, 10, 50, 300), pn=(5, 20, 100))
    for key in ("map", "map@1", "map@10", "map@50", "map@300", "p@h<=2"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key
    assert ours["map@300"] == pytest.approx(ours["map"], abs=1e-12)
    assert ours["curves"]["p@n"]["precision"] == pytest.approx([ref["p@5"], ref["p@20"], ref["p@100"]], abs=1e-12)
    precision, recall = reference_pr_radius(q, d, ql, dl)
    assert ours["curves"]["pr_radius"]["precision"] == pytest.approx(precision, abs=1e-12)
    assert ours["curves"]["pr_radius"]["recall"] == pytest.approx(recall, abs=1e-12)


@pytest.mark.parametrize("multi_label", [False, True])
def test_tie_aware_matches_enumeration_of_all_orders(multi_label):
    rng = np.random.default_rng(7 + multi_label)
    for _ in range(3):
        q, d, ql, dl = random_case(rng, 4, 7, 4, n_classes=3, multi_label=multi_label, n_patterns=3, flip=0.2)
        ours = evaluate(q, d, ql, dl)
        expected, best, worst = brute_force_tie_ap(q, d, ql, dl)
        assert ours["map_tie_aware"] == pytest.approx(expected, abs=1e-12)
        assert ours["map_tie_best"] == pytest.approx(best, abs=1e-12)
        assert ours["map_tie_worst"] == pytest.approx(worst, abs=1e-12)


def _cpu_scan(q, d, ql, dl, cutoffs, pn_grid, buckets=None, threads=None):
    n_bits = q.shape[1]
    words = [code_words(c, n_bits) for c in (q, d)]
    return _kernels.scan(*words, n_bits, *label_words(ql, dl), ql.ndim == 2, cutoffs, pn_grid, buckets, threads)


def _assert_same_scan(a, b):
    """Equal counts; equal precisions to 1e-12 (the ball sums, over queries, relative to their size)."""
    assert np.array_equal(a.n_relevant, b.n_relevant) and np.array_equal(a.pn_hits(), b.pn_hits())
    for x, y in ((a.ap(), b.ap()), (a.tie, b.tie), (a.ball_sums / len(a.tie), b.ball_sums / len(b.tie))):
        assert np.allclose(x, y, atol=1e-12, rtol=0)


def test_torch_scan_equals_cpu_kernel_and_chunking_changes_nothing():
    rng = np.random.default_rng(3)
    q, d, ql, dl = random_case(rng, 37, 500, 32, multi_label=True)
    cpu = _cpu_scan(q, d, ql, dl, [500, 10, 100], [100, 200])
    codes = [torch.as_tensor(c, dtype=torch.int8) for c in (q, d)]
    labels = [torch.as_tensor(y, dtype=torch.float32) for y in (ql, dl)]
    for chunk in (1, 5, 37, 1000):
        _assert_same_scan(_scan_torch(*codes, *labels, [500, 10, 100], [100, 200], chunk), cpu)
    assert evaluate(q, d, ql, dl, topk=(10, 100))["map"] == pytest.approx(float(cpu.ap()[:, 0].mean()), abs=1e-12)


def test_cpu_threads_change_no_bit_and_query_chunks_nothing(monkeypatch):
    rng = np.random.default_rng(4)
    q, d, ql, dl = random_case(rng, 150, 3001, 64, n_patterns=5)
    whole = _cpu_scan(q, d, ql, dl, [3001, 7, 1000], [10, 500], threads=1)
    monkeypatch.setattr(_kernels, "QUERY_CHUNK", 9)  # chunks that divide neither the queries nor the groups
    monkeypatch.setattr(_kernels, "SMALL_WORK", 0)  # threads even for this small a case
    one = _cpu_scan(q, d, ql, dl, [3001, 7, 1000], [10, 500], threads=1)
    _assert_same_scan(one, whole)
    for threads in (2, 3):
        by_threads = _cpu_scan(q, d, ql, dl, [3001, 7, 1000], [10, 500], threads=threads)
        for name in ("mark_sums", "mark_hits", "tie", "n_relevant", "ball_sums"):
            assert np.array_equal(getattr(by_threads, name), getattr(one, name)), name


def test_lanes_of_several_segments_of_relevant_items():
    """Lanes of several segments, nine tenths of their items relevant, then all, then a database sorted by class
    (one lane's items all of one class): each lane's list of relevant items is sized by counts made before the scan,
    up to a slot for every item of the (longest) last lane."""
    rng = np.random.default_rng(6)
    n_d = 4 * 3 * _kernels.SEGMENT + 5
    q, d, _, _ = random_case(rng, 3, n_d, 16, flip=0.3)
    ql = np.array([0, 1, 0])
    lane = n_d // 4
    lanes = np.split(np.arange(n_d), [lane, 2 * lane, 3 * lane])  # the last lane holds one item more
    by_class = (np.arange(n_d) >= 3 * lane).astype(np.int64)
    for dl in (np.where(np.arange(n_d) % 10 == 0, 1, 0), np.zeros(n_d, np.int64), by_class):
        fullest = np.empty(3, np.int64)
        _kernels._fullest_lanes(*label_words(ql, dl), False, fullest)
        assert list(fullest) == [max(int((dl[lane] == y).sum()) for lane in lanes) for y in ql]
        ours = evaluate(q, d, ql, dl, topk=(100, n_d), pn=(5, 2000))
        ref = reference_evaluate(q, d, ql, dl, topk=(100, n_d), pn=(5, 2000))
        for key in ("map", "map@100", f"map@{n_d}"):
            assert ours[key] == pytest.approx(ref[key], abs=1e-12), key
        assert ours["curves"]["p@n"]["precision"] == pytest.approx([ref["p@5"], ref["p@2000"]], abs=1e-12)


@pytest.mark.parametrize("n_labels", [5, 70])  # one label word (the vectorised count), two
def test_fullest_lanes_of_multi_hot_labels(n_labels):
    rng = np.random.default_rng(8)
    n_d = 4 * _kernels.SEGMENT + 3
    ql, dl = (rng.random((n, n_labels)) < 0.05 for n in (6, n_d))
    ql[0] = False  # a query with no label: nothing is relevant
    lanes = np.split(np.arange(n_d), [n_d // 4 * k for k in (1, 2, 3)])
    fullest = np.empty(6, np.int64)
    _kernels._fullest_lanes(*label_words(ql, dl), True, fullest)
    assert list(fullest) == [max(int((dl[lane] & y).any(1).sum()) for lane in lanes) for y in ql]


def test_cutoffs_just_short_of_the_database():
    """With a cutoff one short of the database every bucket can reach it: the rank pass moves every relevant item
    to the front of its list, onto the very slot it reads, and ranks them all again."""
    rng = np.random.default_rng(7)
    n_d = 4 * _kernels.SEGMENT + 3
    for multi_label in (False, True):
        q, d, ql, dl = random_case(rng, 5, n_d, 20, multi_label=multi_label, flip=0.3)
        ours = evaluate(q, d, ql, dl, topk=(1, n_d - 1), pn=(n_d - 2, n_d - 1))
        ref = reference_evaluate(q, d, ql, dl, topk=(1, n_d - 1), pn=(n_d - 2, n_d - 1))
        for key in ("map", "map@1", f"map@{n_d - 1}"):
            assert ours[key] == pytest.approx(ref[key], abs=1e-12), key
        expected = [ref[f"p@{n_d - 2}"], ref[f"p@{n_d - 1}"]]
        assert ours["curves"]["p@n"]["precision"] == pytest.approx(expected, abs=1e-12)


@needs_cuda
def test_cuda_equals_cpu():
    rng = np.random.default_rng(5)
    for multi in (False, True):
        q, d, ql, dl = random_case(rng, 64, 3000, 64, multi_label=multi)
        cpu = evaluate(q, d, ql, dl, topk=(100,))
        for scan in CUDA_SCANS:
            gpu = evaluate(q, d, ql, dl, topk=(100,), device="cuda", chunk_size=7, cuda_scan=scan)
            for key in ("map", "map@100", "map_tie_aware", "map_tie_best", "map_tie_worst", "p@h<=2"):
                assert gpu[key] == pytest.approx(cpu[key], abs=1e-12), (scan, key)
            for curve in ("pr_radius", "p@n"):
                for key in ("precision", "recall"):
                    assert np.allclose(gpu["curves"][curve][key], cpu["curves"][curve][key], atol=1e-12), scan


def test_perfect_codes_score_one():
    rng = np.random.default_rng(0)
    protos = rng.choice([-1, 1], (5, 32))
    yq, yd = np.repeat(np.arange(5), 3), np.repeat(np.arange(5), 40)
    r = evaluate(protos[yq], protos[yd], yq, yd, topk=(10,))
    for key in ("map", "map@10", "map_tie_aware", "map_tie_best", "map_tie_worst", "p@h<=2"):
        assert r[key] == pytest.approx(1.0), key


def test_zero_one_codes_and_one_hot_labels_mean_the_same():
    rng = np.random.default_rng(1)
    q, d, ql, dl = random_case(rng, 10, 80, 16)
    pm = evaluate(q, d, ql, dl)
    binary = evaluate((q > 0).astype(int), (d > 0).astype(int), np.eye(4)[ql], np.eye(4)[dl])
    for key in ("map", "map@1000", "map_tie_aware", "p@h<=2"):
        assert binary[key] == pytest.approx(pm[key], abs=1e-12)


def test_zero_relevant_queries_count_as_zero():
    q = np.array([[1, 1, 1, 1], [-1, -1, -1, -1]])
    d = np.array([[1, 1, 1, 1], [1, 1, 1, -1]])
    r = evaluate(q, d, np.array([0, 9]), np.array([0, 0]))
    assert r["zero_relevant_queries"] == 1
    assert r["map"] == pytest.approx(0.5)  # (1 + 0) / 2: the relevant-less query is kept at 0, not dropped
    assert r["p@h<=2"] == pytest.approx(0.5)  # query 2 has an empty ball: 0


code_arrays = st.integers(1, 5).flatmap(
    lambda n_bits: st.tuples(
        st.lists(st.lists(st.sampled_from([-1, 1]), min_size=n_bits, max_size=n_bits), min_size=1, max_size=6),
        st.lists(st.lists(st.sampled_from([-1, 1]), min_size=n_bits, max_size=n_bits), min_size=2, max_size=40),
    )
)


@settings(max_examples=60, deadline=None)
@given(code_arrays, st.randoms(use_true_random=False))
def test_tie_aware_is_invariant_to_database_order_and_bounded(arrays, rnd):
    q, d = np.array(arrays[0]), np.array(arrays[1])
    ql = np.array([rnd.randrange(3) for _ in range(len(q))])
    dl = np.array([rnd.randrange(3) for _ in range(len(d))])
    perm = list(range(len(d)))
    rnd.shuffle(perm)
    a = evaluate(q, d, ql, dl)
    b = evaluate(q, d[perm], ql, dl[perm])
    assert a["map_tie_aware"] == pytest.approx(b["map_tie_aware"], abs=1e-12)
    assert a["map_tie_best"] == pytest.approx(b["map_tie_best"], abs=1e-12)
    assert a["map_tie_worst"] - 1e-12 <= a["map_tie_aware"] <= a["map_tie_best"] + 1e-12
    assert a["map_tie_worst"] - 1e-12 <= a["map"] <= a["map_tie_best"] + 1e-12
    ref = reference_evaluate(q, d, ql, dl, topk=(3,))
    assert a["map"] == pytest.approx(ref["map"], abs=1e-12)


@pytest.mark.parametrize(
    "args,message",
    [
        (([[1, 0, 2]], [[1, 1, 1]], [0], [0]), "found values 0, 1, 2"),
        (([[1, 1]], [[1, 1, 1]], [0], [0]), "bits"),
        (([[1, 1, 1]], [[1, 1, 1]], [0, 1], [0]), "query labels"),
        (([1, 1, 1], [[1, 1, 1]], [0], [0]), "2-D"),
        (([[1.0, float("nan"), 1.0]], [[1, 1, 1]], [0], [0]), "NaN"),
        (([[1, 1, 1]], [[1, 1, 1]], [[1, 0]], [0]), "differ in kind"),
    ],
)
def test_bad_inputs_are_named(args, message):
    with pytest.raises(BenchError, match=message):
        evaluate(*args)


@pytest.mark.parametrize("n_bits,multi_label", [(8, False), (16, True), (64, False)])
def test_spherical_distance_matches_reference(n_bits, multi_label):
    rng = np.random.default_rng(n_bits)
    q, d, ql, dl = random_case(rng, 20, 250, n_bits, multi_label=multi_label, n_patterns=5, flip=0.2)
    ours = evaluate(q, d, ql, dl, topk=(10, 100), pn=(50,), distance="spherical")
    ref = reference_evaluate(q, d, ql, dl, topk=(10, 100), pn=(50,), distance="spherical")
    for key in ("map", "map@10", "map@100"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key
    assert ours["curves"]["p@n"]["precision"] == pytest.approx([ref["p@50"]], abs=1e-12)
    assert "p@h<=2" not in ours and "pr_radius" not in ours["curves"]
    args = [torch.as_tensor(a) for a in (q, d, ql, dl)]
    scan = _scan_torch(
        args[0].to(torch.int8), args[1].to(torch.int8), args[2], args[3], [250, 10], [50], 7, spherical_buckets(n_bits)
    )
    assert float(scan.ap()[:, 0].mean()) == pytest.approx(ours["map"], abs=1e-12)


def test_spherical_tie_aware_matches_enumeration():
    rng = np.random.default_rng(11)
    q, d, ql, dl = random_case(rng, 3, 7, 6, n_classes=3, n_patterns=3, flip=0.3)
    ours = evaluate(q, d, ql, dl, distance="spherical")
    expected, best, worst = brute_force_tie_ap(q, d, ql, dl, distance="spherical")
    assert (ours["map_tie_aware"], ours["map_tie_best"], ours["map_tie_worst"]) == pytest.approx(
        (expected, best, worst), abs=1e-12
    )


def test_unknown_distance_is_named():
    with pytest.raises(BenchError, match="unknown distance 'cosine'"):
        evaluate([[1, 1]], [[1, -1]], [0], [0], distance="cosine")


@pytest.mark.parametrize("n_bits", [1, 3, 7, 9, 31, 33, 63, 65, 100, 127, 128, 129, 255, 256, 1024])
@pytest.mark.parametrize("multi_label", [False, True])
def test_any_code_length_matches_reference(n_bits, multi_label):
    rng = np.random.default_rng(n_bits + 1000 * multi_label)
    q, d, ql, dl = random_case(rng, 6, 90, n_bits, multi_label=multi_label, n_patterns=3)
    ours = evaluate(q, d, ql, dl, topk=(1, 20, 500), pn=(5, 90), radius=n_bits // 3)
    ref = reference_evaluate(q, d, ql, dl, topk=(1, 20, 500), pn=(5, 90), radius=n_bits // 3)
    for key in ("map", "map@1", "map@20", "map@500", f"p@h<={n_bits // 3}"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key
    assert ours["curves"]["p@n"]["precision"] == pytest.approx([ref["p@5"], ref["p@90"]], abs=1e-12)


@pytest.mark.parametrize(("multi_label", "n_classes"), [(False, 4), (True, 4), (True, 70)])
def test_codes_of_several_words_over_several_segments_match_reference(multi_label, n_classes):
    """Codes of several words are copied into word planes PLANE items at a time: a database of more than two
    segments a lane, lanes of unequal length; labels of one word, and of two (70 labels)."""
    rng = np.random.default_rng(31 + multi_label + n_classes)
    n_database = 2 * _kernels.LANES * _kernels.SEGMENT + 7
    q, d, ql, dl = random_case(rng, 4, n_database, 130, n_classes, multi_label, n_patterns=5)
    ours = evaluate(q, d, ql, dl, topk=(100, n_database), pn=(50,))
    ref = reference_evaluate(q, d, ql, dl, topk=(100, n_database), pn=(50,))
    for key in ("map", "map@100", f"map@{n_database}"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key
    assert ours["curves"]["p@n"]["precision"] == pytest.approx([ref["p@50"]], abs=1e-12)


def test_more_labels_than_a_word_and_many_classes():
    rng = np.random.default_rng(12)
    q, d, ql, dl = random_case(rng, 8, 300, 24, n_classes=70, multi_label=True, flip=0.2)
    ref = reference_evaluate(q, d, ql, dl, topk=(50,))
    assert evaluate(q, d, ql, dl, topk=(50,))["map@50"] == pytest.approx(ref["map@50"], abs=1e-12)
    q, d, ql, dl = random_case(rng, 8, 300, 24, n_classes=300)
    ids = [np.array([-(2**40), 7, 2**40])[y % 3] * 1000 + y for y in (ql, dl)]  # ids wider than any small dtype
    assert evaluate(q, d, *ids)["map"] == pytest.approx(reference_evaluate(q, d, *ids)["map"], abs=1e-12)


def test_every_input_form_scores_the_same():
    rng = np.random.default_rng(13)
    q, d, ql, dl = random_case(rng, 12, 400, 40, multi_label=True)
    expected = evaluate(q, d, ql, dl)
    packed = [pack_codes(c)[0] for c in (q, d)]
    forms = {
        "bool": ((q > 0), (d > 0), ql.astype(bool), dl.astype(bool)),
        "uint8 0/1": ((q > 0).astype(np.uint8), (d > 0).astype(np.uint8), ql, dl),
        "float32": (q.astype(np.float32), d.astype(np.float32), ql.astype(np.float32), dl.astype(np.float32)),
        "torch": tuple(torch.as_tensor(a) for a in (q, d, ql, dl)),
        "lists": (q.tolist(), d.tolist(), ql.tolist(), dl.tolist()),
    }
    for name, arrays in forms.items():
        assert evaluate(*arrays) == expected, name
    assert evaluate(*packed, ql, dl, packed_bits=40) == expected
    assert np.array_equal(unpack_codes(packed[0], 40), q)


def test_packed_codes_are_faiss_layout_little_bit_order():
    codes = -np.ones((1, 12), np.int8)
    codes[0, [0, 3, 9]] = 1
    packed, n_bits = pack_codes(codes)
    assert n_bits == 12 and packed.tolist() == [[0b00001001, 0b00000010]]


@pytest.mark.parametrize("n_bits", [8, 24, 64, 72])
def test_one_pass_byte_codes_pack_and_check_as_numpy(n_bits):
    """int8, uint8 and bool codes in whole bytes take one compiled pass: the same bytes as numpy's packbits, and
    the same one-line error for every value outside -1/+1 or 0/1 (a value a byte, placed anywhere in the word)."""
    rng = np.random.default_rng(n_bits)
    pm1 = rng.choice(np.array([-1, 1], np.int8), (33, n_bits))
    expected = np.packbits(pm1 > 0, axis=1, bitorder="little")
    for codes in (pm1, (pm1 > 0).astype(np.int8), (pm1 > 0).astype(np.uint8), pm1 > 0):
        assert np.array_equal(pack_codes(codes)[0], expected), codes.dtype
    offset = np.empty(pm1.size + 1, np.int8)[1:].reshape(pm1.shape)  # not 8-byte aligned: checked, then packed
    offset[:] = pm1
    assert np.array_equal(pack_codes(offset)[0], expected)
    bad = [(np.int8, v) for v in (2, -2, 127, -128, -127, 64)] + [(np.uint8, v) for v in (2, 255, 128)]
    for dtype, value in bad:
        for at in ((0, 0), (5, n_bits - 1), (32, n_bits // 2)):
            codes = (pm1 > 0).astype(dtype)
            codes[at] = value
            with pytest.raises(BenchError, match=r"only -1/\+1 or only 0/1; found values"):
                pack_codes(codes)
    no_zero = np.ones_like(pm1, np.uint8)
    no_zero[3, 1] = 255  # the byte of int8 -1, not a code value in uint8
    with pytest.raises(BenchError, match="found values 1, 255"):
        pack_codes(no_zero)
    mixed = pm1.copy()
    mixed[3, 1] = 0  # -1 and 0 together
    with pytest.raises(BenchError, match="found values -1, 0, 1"):
        pack_codes(mixed)


@pytest.mark.parametrize(
    "codes,packed_bits,message",
    [
        (np.array([[0, 16]], np.uint8), 12, "padding bits after bit 12"),
        (np.array([[1, 0, 1]], np.uint8), 16, "padding bits after bit 16"),
        (np.array([[1, 1]], np.int16), 16, "must be uint8 rows"),
        (np.array([[1]], np.uint8), 16, "at least 2 bytes"),
    ],
)
def test_bad_packed_codes_are_named(codes, packed_bits, message):
    with pytest.raises(BenchError, match=message):
        evaluate(codes, codes, [0], [0], packed_bits=packed_bits)


def test_k_and_n_above_the_database_and_a_database_smaller_than_the_lanes():
    rng = np.random.default_rng(14)
    for n_d in (1, 2, 3, 5, 7):
        q, d, ql, dl = random_case(rng, 3, n_d, 8, n_classes=2)
        ours = evaluate(q, d, ql, dl, topk=(1, 4, 100), pn=(2, 50))
        ref = reference_evaluate(q, d, ql, dl, topk=(1, 4, 100), pn=(2,) if n_d >= 2 else ())
        for key in ("map", "map@1", "map@4", "map@100"):
            assert ours[key] == pytest.approx(ref[key], abs=1e-12), (n_d, key)
        assert ours["curves"]["p@n"]["n"] == ([2] if n_d >= 2 else [])


def test_harmonic_gaps_are_exact_to_rounding():
    from fractions import Fraction

    # Around EXACT_HARMONIC (32) the series is shortest: a term too few would be off by 1e-13 at (31, 1).
    cases = [(0, 1), (0, 200), (5, 300), (30, 1), (31, 1), (31, 2), (32, 5), (40, 1), (126, 3), (1000, 1)]
    for before, n in [*cases, (10**6, 5000), (3 * 10**6, 7)]:
        exact = float(sum(Fraction(1, i) for i in range(before + 1, before + n + 1)))
        assert _kernels._harmonic_gap(before, n) == pytest.approx(exact, rel=1e-15, abs=0)


@pytest.mark.parametrize("multi_label", [False, True])
def test_scoring_holds_at_most_the_packed_codes_and_the_labels(multi_label):
    """The issue's memory bound: what scoring adds at its peak is at most the codes packed (in the kernel's 64-bit
    words) plus the labels: no copy of the codes wider than their bits, no full-size temporary of validation or of
    the labels' conversion, the list of relevant items never grown by copying."""
    import tracemalloc

    rng = np.random.default_rng(15)
    q, d, ql, dl = random_case(rng, 40, 200_000, 96, n_classes=21, multi_label=multi_label)
    q, d = q.astype(np.int8), d.astype(np.int8)  # 19 MB of codes; packed: 2.4 MB (whole 64-bit words: 3.2 MB)
    if multi_label:
        ql, dl = ql.astype(np.uint8), dl.astype(np.uint8)  # most items relevant: the longest lists
    evaluate(q[:2], d[:10], ql[:2], dl[:10])
    tracemalloc.start()
    evaluate(q, d, ql, dl)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak <= 16 * (q.shape[0] + d.shape[0]) + ql.nbytes + dl.nbytes


def test_scoring_imports_only_what_it_uses(tmp_path):
    """Scoring imports no torch, pandas or tabulate; ``bench evaluate`` nor what numba would import on its first call
    for features the kernels do not use (scipy.linalg, cffi), which stay importable after it."""
    import subprocess
    import sys

    def imported(code: str, modules) -> list[str]:
        listed = f"print(*sorted(m for m in {tuple(modules)!r} if m in sys.modules), sep=',')"
        out = subprocess.run([sys.executable, "-c", f"import sys\n{code}\n{listed}"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return [m for m in out.stdout.splitlines()[-1].split(",") if m]

    scoring = "from bench import metrics\nmetrics.evaluate([[1, -1]], [[1, 1], [-1, 1]], [0], [0, 1])"
    assert imported(scoring, ["torch", "pandas", "tabulate"]) == []
    codes = tmp_path / "codes.npz"
    np.savez(codes, query_codes=np.ones((2, 8)), db_codes=np.ones((3, 8)), query_labels=[0, 1], db_labels=[0, 1, 1])
    command = f"from bench import cli\ncli.main(['evaluate', {str(codes)!r}])"
    assert imported(command, ["torch", "pandas", "tabulate", "scipy.linalg", "cffi"]) == []
    assert imported(command + "\nimport scipy.linalg, cffi", ["scipy.linalg", "cffi"]) == ["cffi", "scipy.linalg"]
