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
# class ids and multi-hot labels of two words (70 labels); cutoffs short of the database and the whole of it.
CHECK = """
import json, sys
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from conftest import random_case
from bench import _cuda_scan, _kernels, metrics

rng = np.random.default_rng(3)
out = []
for n_bits, multi, n_classes in [(70, False, 4), (16, True, 70)]:
    q, d, ql, dl = random_case(rng, 3, 150, n_bits, n_classes=n_classes, multi_label=multi)
    q, d = q.astype(np.int8), d.astype(np.int8)
    cutoffs, pn = [150, 40], [10, 100]
    words = [metrics.code_words(c, n_bits) for c in (q, d)]
    labels = metrics.label_words(metrics.check_labels(ql, 3, "q"), metrics.check_labels(dl, 150, "d"))
    cpu = _kernels.scan(*words, n_bits, *labels, multi, cutoffs, pn, None)
    codes = (torch.from_numpy(q), torch.from_numpy(d))
    label_tensors = (metrics._label_tensor(ql, "cpu"), metrics._label_tensor(dl, "cpu"))
    cuda = _cuda_scan.scan(*codes, *label_tensors, cutoffs, pn, slice_len=64, block=16)
    out.append({
        "hits_equal": bool(np.array_equal(cpu.mark_hits, cuda.mark_hits)),
        "sums_diff": float(np.abs(cpu.mark_sums - cuda.mark_sums).max()),
        "histogram_equal": bool(np.array_equal(cpu.n_relevant, cuda.n_relevant) and np.array_equal(cpu.tie, cuda.tie)),
        "ball_diff": float(np.abs(cpu.ball_sums - cuda.ball_sums).max()),
        "hits": int(cpu.mark_hits.sum()),
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
        assert case["sums_diff"] < 1e-12 and case["ball_diff"] == 0.0, case


def test_counting_scan_is_named_and_hamming_only():
    codes, labels = [[1, -1], [-1, 1]], [0, 1]
    with pytest.raises(BenchError, match=r"unknown CUDA scan 'counts'.*choices: count, sort"):
        evaluate(codes, codes, labels, labels, cuda_scan="counts")
    with pytest.raises(BenchError, match="Hamming distance only"):
        evaluate(codes, codes, labels, labels, distance="spherical", cuda_scan="count")
