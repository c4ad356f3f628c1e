"""The evaluator against slow, obvious definitions (bench.reference), plus properties."""

import numpy as np
import pytest
import torch
from conftest import needs_cuda, random_case
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import _kernels
from bench.errors import BenchError
from bench.metrics import _scan_torch, evaluate, spherical_buckets
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


def test_torch_scan_equals_cpu_kernel_and_chunking_changes_nothing():
    rng = np.random.default_rng(3)
    q, d, ql, dl = random_case(rng, 37, 500, 32, multi_label=True)
    ref = evaluate(q, d, ql, dl, topk=(10, 100))
    args = [torch.as_tensor(a) for a in (q, d)] + [
        torch.as_tensor(ql, dtype=torch.float32),
        torch.as_tensor(dl, dtype=torch.float32),
    ]
    hist_k, ap_k, pn_k = (
        torch.as_tensor(a)
        for a in _kernels.scan(args[0].to(torch.int8), args[1].to(torch.int8), *args[2:], [500, 10, 100], [100, 200])
    )
    for chunk in (1, 5, 37, 1000):
        hist, ap, pn = _scan_torch(
            args[0].to(torch.int8), args[1].to(torch.int8), *args[2:], [500, 10, 100], [100, 200], chunk
        )
        assert torch.equal(hist, hist_k) and torch.equal(pn, pn_k)
        assert torch.allclose(ap, ap_k, atol=1e-12)
    assert ref["map"] == pytest.approx(float(ap_k[:, 0].mean()), abs=1e-12)


@needs_cuda
def test_cuda_equals_cpu():
    rng = np.random.default_rng(5)
    for multi in (False, True):
        q, d, ql, dl = random_case(rng, 64, 3000, 64, multi_label=multi)
        cpu = evaluate(q, d, ql, dl, topk=(100,))
        gpu = evaluate(q, d, ql, dl, topk=(100,), device="cuda", chunk_size=7)
        for key in ("map", "map@100", "map_tie_aware", "map_tie_best", "map_tie_worst", "p@h<=2"):
            assert gpu[key] == pytest.approx(cpu[key], abs=1e-12)
        for curve in ("pr_radius", "p@n"):
            for key in ("precision", "recall"):
                assert np.allclose(gpu["curves"][curve][key], cpu["curves"][curve][key], atol=1e-12)


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
    hist, ap, _ = _scan_torch(
        args[0].to(torch.int8), args[1].to(torch.int8), args[2], args[3], [250, 10], [50], 7, spherical_buckets(n_bits)
    )
    assert float(ap[:, 0].mean()) == pytest.approx(ours["map"], abs=1e-12)


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
