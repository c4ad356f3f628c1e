"""``bench bench-eval``: our evaluator against the per-query argsort reference, timed in one run.

The codes are synthetic but shaped like real ones (class prototypes with 30% of the bits flipped), so the
Hamming ranking has the heavy ties of real codes. The reference is ``bench.reference.reference_evaluate`` with
numpy's default sort, as the popular repositories call it; it computes fewer metrics than ours (mAP, mAP@1000,
P@H<=2), which only favours it. Its mAP with a stable sort (ties by index, our policy) is checked against ours.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from bench.metrics import evaluate
from bench.reference import reference_evaluate


def synthetic_codes(n_queries, n_database, n_bits, n_classes, seed=0):
    rng = np.random.default_rng(seed)
    prototypes = rng.choice(np.array([-1, 1], np.int8), (n_classes, n_bits))
    y_db = rng.integers(0, n_classes, n_database)
    y_q = rng.integers(0, n_classes, n_queries)
    flip = lambda n: np.where(rng.random((n, n_bits)) < 0.3, -1, 1).astype(np.int8)  # noqa: E731
    return prototypes[y_q] * flip(n_queries), prototypes[y_db] * flip(n_database), y_q, y_db


def _best_of(repeats, fn):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def benchmark_evaluator(n_queries=1000, n_database=54000, n_bits=64, n_classes=10, *, device="cpu", repeats=3,
                        reference=True) -> dict:
    q, d, yq, yd = synthetic_codes(n_queries, n_database, n_bits, n_classes)
    on_device = [torch.from_numpy(a).to(device) for a in (q, d, yq, yd)]

    def ours():
        result = evaluate(*on_device, topk=(1000,), device=device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return result

    q_dev, d_dev, yq_dev, yd_dev = on_device
    evaluate(q_dev[:4], d_dev, yq_dev[:4], yd_dev, device=device)  # warm-up: compiles the kernel / starts CUDA
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    ours_s, result = _best_of(repeats, ours)
    report = {"shape": {"queries": n_queries, "database": n_database, "bits": n_bits, "classes": n_classes},
              "device": device, "ours_s": round(ours_s, 4), "ours_map": result["map"],
              "ours_map@1000": result["map@1000"]}
    if device.startswith("cuda"):
        report["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
        report["gpu"] = torch.cuda.get_device_name()
    if reference:
        ref_s, ref = _best_of(1, lambda: reference_evaluate(q, d, yq, yd, topk=(1000,), sort_kind="quicksort"))
        stable = reference_evaluate(q, d, yq, yd, topk=(1000,), sort_kind="stable")
        report.update({
            "reference_s": round(ref_s, 4),
            "speedup": round(ref_s / ours_s, 1),
            "reference_map_quicksort_ties": ref["map"],
            "reference_map_stable_ties": stable["map"],
            "map_abs_diff_vs_stable_reference": abs(stable["map"] - result["map"]),
            "map@1000_abs_diff_vs_stable_reference": abs(stable["map@1000"] - result["map@1000"]),
        })
    return report
