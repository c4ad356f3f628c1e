"""The CUDA counting scan (Triton) against the CPU kernel, run by Triton's interpreter: no GPU needed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.metrics import evaluate

pytest.importorskip("triton")

# Heavy ties (few prototypes), codes of two words (70 bits), a database of several slices with a partial last block,
# class ids and multi-hot labels of two words (70 labels); cutoffs short of the database (blocks past them skip the
# marks) and the whole of it.
CHECK = """
import json, sys
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from conftest import random_case
from bench import _cuda_scan, _kernels, metrics

rng = np.random.default_rng(3)
out = []
for n_bits, multi, n_classes, cutoffs, pn in [(70, False, 4, [150, 40], [10, 100]), (16, True, 70, [150, 12], [5])]:
    q, d, ql, dl = random_case(rng, 3, 150, n_bits, n_classes=n_classes, multi_label=multi)
    q, d = q.astype(np.int8), d.astype(np.int8)
    words = [metrics.code_words(c, n_bits) for c in (q, d)]
    labels = metrics.label_words(metrics.check_labels(ql, 3, "q"), metrics.check_labels(dl, 150, "d"))
    cpu = _kernels.scan(*words, n_bits, *labels, multi, cutoffs, pn, None)
    codes = (torch.from_numpy(q), torch.from_numpy(d))
    label_tensors = (metrics._label_tensor(ql, "cpu"), metrics._label_tensor(dl, "cpu"))
    cuda = _cuda_scan.scan(*codes, *label_tensors, cutoffs, pn, slice_len=64)
    on_cpu = metrics.evaluate(q, d, ql, dl, topk=cutoffs[1:], pn=pn)
    on_device = metrics.evaluate(q, d, ql, dl, topk=cutoffs[1:], pn=pn, device="cpu:0", cuda_scan="count")
    out.append({
        "hits_equal": bool(np.array_equal(cpu.mark_hits, cuda.mark_hits)),
        "sums_diff": float(np.abs(cpu.mark_sums - cuda.mark_sums).max()),
        "histogram_equal": bool(np.array_equal(cpu.n_relevant, cuda.n_relevant) and np.array_equal(cpu.tie, cuda.tie)),
        "ball_diff": float(np.abs(cpu.ball_sums - cuda.ball_sums).max()),
        "hits": int(cpu.mark_hits.sum()),
        # evaluate's own CUDA branch, on torch's CPU ("cpu:0" is not "cpu", so it takes the device path)
        "evaluate_diff": max(abs(v - on_cpu[k]) for k, v in on_device.items() if isinstance(v, float)),
    })
print(json.dumps(out))
"""


def test_counting_scan_equals_the_cpu_kernel():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    tests = Path(__file__).parent
    done = subprocess.run([sys.executable, "-c", CHECK, str(tests)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    for case in json.loads(done.stdout.strip().splitlines()[-1]):
        assert case["hits"] > 0
        assert case["hits_equal"] and case["histogram_equal"], case
        assert case["sums_diff"] < 1e-12 and case["ball_diff"] == 0.0 and case["evaluate_diff"] < 1e-12, case


def test_counting_scan_is_named_and_hamming_only():
    codes, labels = [[1, -1], [-1, 1]], [0, 1]
    with pytest.raises(BenchError, match=r"unknown CUDA scan 'counts'.*choices: count, sort"):
        evaluate(codes, codes, labels, labels, cuda_scan="counts")
    with pytest.raises(BenchError, match="Hamming distance only"):
        evaluate(codes, codes, labels, labels, distance="spherical", cuda_scan="count")


@pytest.mark.parametrize("multi", [False, True])
def test_kernels_compile_for_an_h200(multi):
    """What the interpreter lets through, the compiler may not: both kernels compiled to a Hopper (sm_90) binary,
    with the argument types of ``_cuda_scan.scan``'s launches, on a machine without a GPU."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from bench import _cuda_scan

    codes = {"q_ptr": "*i64", "d_ptr": "*i64", "ql_ptr": "*i64", "dl_ptr": "*i64"}
    shape = {"n_words": 1, "n_label_words": 2 if multi else 1, "multi": multi, "SLICE_": _cuda_scan.SLICE}
    shape |= {"BLOCK_": _cuda_scan.BLOCK, "NB": 128}
    sizes = {"first_query": "i32", "n_d": "i32", "n_slices": "i32"}
    count = {**codes, "hist_ptr": "*i32", **sizes, **dict.fromkeys(shape, "constexpr")}
    outputs = {"base_ptr": "*i32", "marks_ptr": "*i64", "sums_ptr": "*fp64", "hits_ptr": "*i32"}
    rank = {**codes, **outputs, **sizes, "n_marks": "i32", **dict.fromkeys([*shape, "NM"], "constexpr")}
    target, options = GPUTarget("cuda", 90, 32), {"num_warps": _cuda_scan.WARPS}
    for kernel, signature, constants in [
        (_cuda_scan._count_slices, count, shape),
        (_cuda_scan._rank_slices, rank, {**shape, "NM": 16}),
    ]:
        compiled = triton.compile(ASTSource(kernel, signature, constants), target=target, options=options)
        assert compiled.asm["cubin"], kernel.__name__


def test_a_failing_cuda_scan_leaves_the_other_scans_numbers(monkeypatch):
    """`bench bench-eval --device cuda` times each CUDA scan; one that breaks is reported, the others still run.
    The CPU stands in for the GPU here."""
    import dataclasses

    import torch

    from bench import speed

    for name in ("synchronize", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a stand-in")
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 0)
    cpu_evaluate = speed.evaluate

    def evaluate(*args, device=None, cuda_scan="sort", **kwargs):
        if cuda_scan == "count":
            raise RuntimeError("no such instruction")
        return cpu_evaluate(*args, **kwargs)

    monkeypatch.setattr(speed, "evaluate", evaluate)
    shape = speed.parse_shape("20x300x16")
    report = speed._benchmark_cuda(*speed.synthetic_codes(shape), (100,), "cpu", 1, 10)
    assert report["ours_s"] > 0 and report["max_abs_diff_vs_cpu"] == 0.0
    assert report["ours_count_error"] == "RuntimeError: no such instruction" and "ours_count_s" not in report
    rendered = speed.table([{"shape": dataclasses.asdict(shape), "device": "cuda", **report}])
    assert "ours count s" not in rendered and str(report["ours_s"]) in rendered
