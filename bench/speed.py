"""Speed benchmarks, each timing ours against baselines in the same run.

``bench bench-eval``: the evaluator (all metrics, end to end from {-1,+1} int8 codes) against
- the floor: what any exact evaluator must do, on codes already bit-packed: Hamming distances by popcount written
  as keys ``2 * distance + relevant`` in one vectorised pass, then a per-query histogram of the keys in a second
  pass (four interleaved sub-histograms); same inputs, threads and query chunks as ours (``floor_scan``);
- the per-query argsort reference (``bench.reference.reference_evaluate`` with numpy's default sort, as the
  popular repositories call it), timed on the first queries and given per pair; it computes fewer metrics than
  ours (mAP, mAP@K, P@H<=2), which only favours it. Its mAP with a stable sort (ties by index, our policy) is
  checked against ours on the same queries;
- faiss's exact binary kNN (``IndexBinaryFlat``, top 1,000) when faiss is installed (``pip install
  hashbench[faiss]``): a search, not an evaluation, so it computes far less.
It also reports the peak memory the evaluation adds to the process (its resident set size) against the size of
the packed codes plus the labels. On CUDA it times both CUDA scans (``metrics.CUDA_SCANS``) and checks each against
the CPU on the first queries.

The codes are synthetic but shaped like real ones (class prototypes with 30% of the bits flipped), so the
Hamming ranking has the heavy ties of real codes; multi-label items carry a popular first label and others at
random (about a third of the pairs relevant, like NUS-WIDE).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import numba
import numpy as np
import torch

from bench import _kernels
from bench.errors import BenchError, unknown
from bench.method import seeded
from bench.metrics import CUDA_SCANS, code_words, evaluate, label_words, pack_codes, relevance
from bench.reference import reference_evaluate


@dataclasses.dataclass(frozen=True)
class EvalShape:
    queries: int
    database: int
    bits: int
    classes: int = 10
    multi_label: bool = False
    topk: int = 1000

    @property
    def name(self) -> str:
        return f"{self.queries}x{self.database}x{self.bits}" + ("ml" if self.multi_label else "")


# The issue's three shapes: CIFAR-10's protocol, NUS-WIDE's (21 labels, MAP@5000), and a million-item database.
SHAPES = {
    "cifar10": EvalShape(1000, 54000, 64, 10),
    "nuswide": EvalShape(2100, 193734, 64, 21, multi_label=True, topk=5000),
    "million": EvalShape(10000, 1000000, 64, 10),
}
REFERENCE_QUERIES = 100  # the argsort reference is timed on this many queries (it takes ~1 ms a query at 54,000)


def parse_shape(text: str, classes: int = 10, multi_label: bool = False, topk: int = 1000) -> EvalShape:
    """A name of ``SHAPES`` or QUERIESxDATABASExBITS (the other fields from the arguments)."""
    if text in SHAPES:
        return SHAPES[text]
    try:
        queries, database, bits = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise unknown("evaluator shape", text, [*SHAPES, "QUERIESxDATABASExBITS"]) from None
    if min(queries, database, bits) < 1 or bits > 1024:
        raise BenchError(f"shape {text!r}: queries and database must be >= 1 and bits 1..1024")
    return EvalShape(queries, database, bits, classes, multi_label, topk)


def synthetic_codes(shape: EvalShape, seed: int = 0):
    """int8 {-1,+1} query and database codes and their labels: class ids, or multi-hot uint8 rows."""
    rng = np.random.default_rng(seed)
    prototypes = rng.choice(np.array([-1, 1], np.int8), (shape.classes, shape.bits))
    popularity = 1.0 / np.arange(1, shape.classes + 1)

    def draw(n):
        first = rng.choice(shape.classes, n, p=popularity / popularity.sum()) if shape.multi_label else None
        labels = rng.integers(0, shape.classes, n) if first is None else first
        codes = prototypes[labels] * np.where(rng.random((n, shape.bits)) < 0.3, -1, 1).astype(np.int8)
        if shape.multi_label:
            labels = (rng.random((n, shape.classes)) < 0.08).astype(np.uint8)
            labels[np.arange(n), first] = 1
        return codes, labels

    (q, y_q), (d, y_d) = draw(shape.queries), draw(shape.database)
    return q, d, y_q, y_d


@numba.njit(nogil=True, cache=True)
def _floor_chunk(lo, hi, q_words, d_words, q_labels, d_labels, multi_label, keys, hist):
    partial = np.zeros((4, hist.shape[1]), np.int64)
    n_d = d_words.shape[0]
    for i in range(lo, hi):
        x, y = q_words[i, 0], q_labels[i, 0]
        if d_words.shape[1] == 1 and d_labels.shape[1] == 1:  # the vectorised pass, one word a code
            if multi_label:
                for j in range(n_d):
                    keys[j] = 2 * _kernels._popcount(x ^ d_words[j, 0]) + ((d_labels[j, 0] & y) != 0)
            else:
                for j in range(n_d):
                    keys[j] = 2 * _kernels._popcount(x ^ d_words[j, 0]) + (d_labels[j, 0] == y)
        else:
            for j in range(n_d):
                keys[j] = _kernels._popcount(x ^ d_words[j, 0])
            for w in range(1, d_words.shape[1]):
                x = q_words[i, w]
                for j in range(n_d):
                    keys[j] += _kernels._popcount(x ^ d_words[j, w])
            for j in range(n_d):
                shared = d_labels[j, 0] & y if multi_label else d_labels[j, 0] == y
                for w in range(1, d_labels.shape[1]):
                    shared |= d_labels[j, w] & q_labels[i, w]
                keys[j] = 2 * keys[j] + (shared != 0)
        partial[:] = 0
        body = n_d - n_d % 4
        for j in range(0, body, 4):
            partial[0, keys[j]] += 1
            partial[1, keys[j + 1]] += 1
            partial[2, keys[j + 2]] += 1
            partial[3, keys[j + 3]] += 1
        for j in range(body, n_d):
            partial[0, keys[j]] += 1
        for k in range(hist.shape[1]):
            hist[i, k] = partial[0, k] + partial[1, k] + partial[2, k] + partial[3, k]


def floor_scan(q_words, d_words, n_bits, q_labels, d_labels, multi_label, threads=None) -> np.ndarray:
    """The floor: per query the histogram (n_q, 2 * (n_bits + 1)) of keys 2 * distance + relevant, on the inputs
    of ``bench._kernels.scan``, with its threads and query chunks."""
    n_q, n_d = q_words.shape[0], d_words.shape[0]
    hist = np.zeros((n_q, 2 * (n_bits + 1)), np.int64)
    key_dtype = np.uint8 if n_bits <= 127 else np.uint16

    def run(chunk):
        lo = chunk * _kernels.QUERY_CHUNK
        hi = min(lo + _kernels.QUERY_CHUNK, n_q)
        _floor_chunk(lo, hi, q_words, d_words, q_labels, d_labels, multi_label, np.empty(n_d, key_dtype), hist)

    chunks = -(-n_q // _kernels.QUERY_CHUNK)
    _kernels.run_chunks(run, chunks, (threads or _kernels.n_threads()) if n_q * n_d >= _kernels.SMALL_WORK else 1)
    return hist


def _times(repeats: int, named: dict) -> tuple[dict, dict]:
    """Each function of ``named`` run ``repeats`` times, interleaved (a busy machine slows all alike): the best wall
    time of each, and its best CPU time (of all threads), which other work on the machine barely changes."""
    wall, cpu = {name: [] for name in named}, {name: [] for name in named}
    for _ in range(repeats):
        for name, fn in named.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: min(t) for name, t in wall.items()}, {name: min(t) for name, t in cpu.items()}


def peak_memory_above_inputs(shape: EvalShape) -> float | None:
    """MB by which scoring ``shape``'s codes raises the peak resident memory of a fresh process above what it holds
    with the inputs loaded (Linux; else None). The process allocates large blocks with mmap, so that freed memory
    leaves the resident set and the peak counts only what the evaluation holds at once."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    code = f"from bench.speed import _measure_memory; _measure_memory({dataclasses.asdict(shape)!r})"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return float(done.stdout) if done.returncode == 0 and done.stdout.strip() not in ("", "None") else None


def _measure_memory(fields: dict) -> None:
    shape = EvalShape(**fields)
    q, d, y_q, y_d = synthetic_codes(shape)
    evaluate(q[:2], d[:100], y_q[:2], y_d[:100], topk=(shape.topk,))  # loads the kernels: their memory is no input
    before = _status_mb("VmRSS:")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the peak (VmHWM) starts again from the current size
    except OSError:
        print(None)
        return
    evaluate(q, d, y_q, y_d, topk=(shape.topk,))
    print(round(max(0.0, _status_mb("VmHWM:") - before), 1))


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024


def _faiss_knn(q, d, k: int, threads: int, repeats: int):
    """Seconds of faiss IndexBinaryFlat's exact top-k search, or None without faiss (or bits not a multiple of 8)."""
    try:
        import faiss
    except ImportError:
        return None
    if q.shape[1] % 8:
        return None
    faiss.omp_set_num_threads(threads)
    index = faiss.IndexBinaryFlat(q.shape[1])
    index.add(pack_codes(d)[0])
    packed_q = pack_codes(q)[0]
    return _times(repeats, {"faiss": lambda: index.search(packed_q, min(k, d.shape[0]))})[0]["faiss"]


def benchmark_evaluator(
    shape: EvalShape,
    *,
    device="cpu",
    repeats=3,
    reference=True,
    reference_queries=REFERENCE_QUERIES,
    faiss=True,
    memory=True,
    log=None,
) -> dict:
    """Time ``shape`` (see the module docstring); returns the report, times in seconds (best of ``repeats``).
    ``memory``: also measure the peak memory of one evaluation, in a fresh process."""
    q, d, y_q, y_d = synthetic_codes(shape)
    pairs = shape.queries * shape.database
    topk, key = (shape.topk,), f"map@{shape.topk}"
    report = {"shape": dataclasses.asdict(shape), "device": device}
    if device.startswith("cuda"):
        report.update(_benchmark_cuda(q, d, y_q, y_d, topk, device, repeats, reference_queries))
        return report
    threads = _kernels.n_threads()
    packed_q, packed_d = pack_codes(q)[0], pack_codes(d)[0]
    words = [code_words(c, shape.bits) for c in (q, d)]
    labels = label_words(y_q, y_d)
    results = {}

    def ours():
        results["ours"] = evaluate(q, d, y_q, y_d, topk=topk)

    def ours_packed():
        results["packed"] = evaluate(packed_q, packed_d, y_q, y_d, topk=topk, packed_bits=shape.bits)

    def floor():
        floor_scan(*words, shape.bits, *labels, shape.multi_label)

    evaluate(q[:2], d[:100], y_q[:2], y_d[:100], topk=topk)  # loads (or compiles) the kernels
    floor_scan(*(w[:100] for w in words), shape.bits, *(lab[:100] for lab in labels), shape.multi_label)
    if log:
        log(f"{shape.name}: timing floor and ours, {repeats} times each, {threads} thread(s)")
    best, best_cpu = _times(repeats, {"floor": floor, "ours": ours, "ours_packed": ours_packed})
    result = results["ours"]
    if abs(results["packed"]["map"] - result["map"]) > 1e-12:
        raise AssertionError("packed and unpacked codes scored differently")
    report.update(
        {
            "threads": threads,
            "floor_s": round(best["floor"], 4),
            "ours_s": round(best["ours"], 4),
            "ours_to_floor": round(best["ours"] / best["floor"], 2),
            "ours_to_floor_cpu_time": round(best_cpu["ours"] / best_cpu["floor"], 2),
            "ours_packed_input_s": round(best["ours_packed"], 4),
            "ours_ns_per_pair": round(best["ours"] / pairs * 1e9, 3),
            "ours_map": result["map"],
            f"ours_{key}": result[key],
            "inputs_mb": round(sum(a.nbytes for a in (q, d, y_q, y_d)) / 2**20, 1),
            "packed_codes_plus_labels_mb": round(sum(a.nbytes for a in (packed_q, packed_d, y_q, y_d)) / 2**20, 1),
            "peak_memory_above_inputs_mb": peak_memory_above_inputs(shape) if memory else None,
        }
    )
    faiss_s = _faiss_knn(q, d, 1000, threads, repeats) if faiss else None
    if faiss_s is not None:
        report.update({"faiss_knn1000_s": round(faiss_s, 4), "ours_to_faiss": round(best["ours"] / faiss_s, 2)})
    if reference:
        report.update(_reference(q, d, y_q, y_d, topk, reference_queries, best["ours"] / pairs))
    return report


def _reference(q, d, y_q, y_d, topk, n_queries, ours_per_pair) -> dict:
    """The argsort reference on the first ``n_queries`` queries: its time per pair against ours, and its mAP with a
    stable sort against ours on the same queries."""
    n = min(n_queries, q.shape[0])
    sub = (q[:n], d, y_q[:n], y_d)
    start = time.perf_counter()
    reference_evaluate(*sub, topk=topk, sort_kind="quicksort")
    per_pair = (time.perf_counter() - start) / (n * d.shape[0])
    stable, ours = reference_evaluate(*sub, topk=topk, sort_kind="stable"), evaluate(*sub, topk=topk)
    key = f"map@{topk[0]}"
    return {
        "reference_queries": n,
        "reference_s": round(per_pair * q.shape[0] * d.shape[0], 3),  # extrapolated to every query
        "speedup": round(per_pair / ours_per_pair, 1),
        "map_abs_diff_vs_stable_reference": abs(stable["map"] - ours["map"]),
        f"{key}_abs_diff_vs_stable_reference": abs(stable[key] - ours[key]),
    }


def _benchmark_cuda(q, d, y_q, y_d, topk, device, repeats, check_queries) -> dict:
    """Ours on CUDA (inputs already on the device), and the largest difference of any metric from the CPU's on the
    first ``check_queries`` queries."""
    on_device = [torch.from_numpy(a).to(device) for a in (q, d, y_q, y_d)]
    q_dev, d_dev, y_q_dev, y_d_dev = on_device
    n = min(check_queries, q.shape[0])
    cpu = evaluate(q[:n], d, y_q[:n], y_d, topk=topk)
    scalar = [k for k, v in cpu.items() if isinstance(v, float)]
    report = {"gpu": torch.cuda.get_device_name(device), "cpu_check_queries": n}
    for scan in CUDA_SCANS:  # "sort" is reported as ours_s, the others as ours_<scan>_s

        def ours(scan=scan):
            out = evaluate(*on_device, topk=topk, device=device, cuda_scan=scan)
            torch.cuda.synchronize(device)
            return out

        name = "" if scan == "sort" else f"_{scan}"
        try:  # one scan failing (a kernel that does not build on this GPU, say) leaves the other's numbers
            gpu = evaluate(q_dev[:n], d_dev, y_q_dev[:n], y_d_dev, topk=topk, device=device, cuda_scan=scan)
            torch.cuda.reset_peak_memory_stats(device)
            best = _times(repeats, {"ours": ours})[0]["ours"]
        except Exception as error:  # reported in the record, not raised
            report[f"ours{name}_error"] = f"{type(error).__name__}: {error}"[:2000]
            continue
        report[f"ours{name}_s"] = round(best, 4)
        report[f"peak_gpu_memory{name}_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        report[f"max_abs_diff{name}_vs_cpu"] = max(abs(cpu[k] - gpu[k]) for k in scalar)
    return report


def table(reports: list[dict]) -> str:
    """The reports as rows: the ratios that matter, measured in the same run."""
    from tabulate import tabulate

    columns = [
        ("shape", lambda r: EvalShape(**r["shape"]).name),
        ("threads", lambda r: r.get("threads", r["device"])),
        ("floor s", lambda r: r.get("floor_s")),
        ("ours s", lambda r: r.get("ours_s")),
        ("ours/floor", lambda r: r.get("ours_to_floor")),
        ("ours/floor CPU", lambda r: r.get("ours_to_floor_cpu_time")),
        ("packed input s", lambda r: r.get("ours_packed_input_s")),
        ("faiss kNN s", lambda r: r.get("faiss_knn1000_s")),
        ("ours/faiss", lambda r: r.get("ours_to_faiss")),
        ("argsort ref. s", lambda r: r.get("reference_s")),
        ("ref./ours", lambda r: r.get("speedup")),
        ("peak MB above inputs", lambda r: r.get("peak_memory_above_inputs_mb")),
        ("packed+labels MB", lambda r: r.get("packed_codes_plus_labels_mb")),
    ]
    if any("ours_count_s" in r for r in reports):  # CUDA: the counting scan beside the sort
        columns.insert(4, ("ours count s", lambda r: r.get("ours_count_s")))
    rows = [["-" if (v := get(r)) is None else v for _, get in columns] for r in reports]
    return tabulate(rows, headers=[name for name, _ in columns], disable_numparse=True)


# ------------------------------------------------------------------------------------------ bench-loader


def benchmark_loader(
    protocol: str = "cifar10-cao2018",
    *,
    device="cpu",
    backbone="small_cnn",
    n_bits=64,
    batch_size=256,
    iterations: int | None = None,
    workers=4,
    data_root=None,
) -> dict:
    """One HashNet training epoch (or ``iterations`` steps) on ``protocol``'s training set, fed two ways in one
    run: (a) ours, minibatches indexed from the device-resident uint8 tensor and cropped/flipped/resized on the
    device (``bench.deep``); (b) the popular repositories' pipeline, a torchvision ``DataLoader`` over PIL images
    with ``RandomCrop`` + ``RandomHorizontalFlip`` + ``Resize`` + ``ToTensor`` + ``Normalize``, ``workers``
    processes, pinned memory. Same network, loss (HashNet's weighted pairwise likelihood on tanh outputs) and SGD
    step; each way runs a warm-up step first. Returns images per second of both and their ratio."""
    import torchvision.transforms as T
    from PIL import Image

    from bench.backbones import BACKBONES, IMAGENET_MEAN, IMAGENET_STD, INPUT_SIZE, HashNetwork
    from bench.deep import SupervisedConfig, iteration_batches, pair_weights, pairwise_likelihood, sgd

    if backbone not in BACKBONES:  # before loading anything
        raise unknown("backbone", backbone, BACKBONES)
    split = load_split_for(protocol, device, data_root)
    x, y = split.x_train, split.y_train
    steps = iterations or max(1, x.shape[0] // batch_size)
    config = SupervisedConfig(backbone=backbone, batch_size=batch_size)

    def make():  # the same initial network for both pipelines
        with seeded(0, device):
            net = HashNetwork(backbone, x.shape[1], "", n_bits, activation="linear").to(device).train()
        return net, sgd(net, config)[0]

    def step(net, opt, inputs, labels):
        h = torch.tanh(net(inputs))
        s = relevance(labels, labels)
        loss = pairwise_likelihood(h, h, s, 10 / n_bits, pair_weights(s, exclude_self=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync():
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()

    g = torch.Generator().manual_seed(0)

    def ours():
        net, opt = make()
        batches = list(iteration_batches(x.shape[0], batch_size, steps + 1, g, x.device))
        for i, idx in enumerate(batches):
            if i == 1:  # after the warm-up step
                sync()
                t = time.perf_counter()
            step(net, opt, net.backbone.augment(x[idx], g, config.crop, config.flip), y[idx])
        sync()
        return time.perf_counter() - t

    size = INPUT_SIZE[backbone]
    images, labels = x.cpu().numpy(), y.cpu()
    mean_std = ([0.5] * x.shape[1], [0.5] * x.shape[1]) if backbone == "small_cnn" else (IMAGENET_MEAN, IMAGENET_STD)
    crop = round(images.shape[-1] * config.crop)
    transform = T.Compose(
        [T.RandomCrop(crop), T.RandomHorizontalFlip(), T.Resize((size, size)), T.ToTensor(), T.Normalize(*mean_std)]
    )

    class PILImages(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            image = images[i].transpose(1, 2, 0)
            pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
            if backbone != "small_cnn" and pil.mode == "L":
                pil = pil.convert("RGB")
            return transform(pil), labels[i]

    def dataloader():
        net, opt = make()
        loader = torch.utils.data.DataLoader(
            PILImages(),
            batch_size=batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            pin_memory=str(device).startswith("cuda"),
            persistent_workers=False,
        )
        done, t = 0, None
        while done <= steps:
            for inputs, batch_labels in loader:
                if done == 1:
                    sync()
                    t = time.perf_counter()
                if done > steps:
                    break
                step(net, opt, inputs.to(device, non_blocking=True), batch_labels.to(device))
                done += 1
        sync()
        return time.perf_counter() - t

    ours_s, loader_s = ours(), dataloader()
    n_images = steps * batch_size
    return {
        "protocol": protocol,
        "backbone": backbone,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if str(device).startswith("cuda") else "cpu",
        "batch_size": batch_size,
        "steps_timed": steps,
        "dataloader_workers": workers,
        "device_resident_images_per_s": round(n_images / ours_s, 1),
        "dataloader_images_per_s": round(n_images / loader_s, 1),
        "speedup": round(loader_s / ours_s, 2),
    }


def load_split_for(protocol: str, device, data_root=None):
    """The protocol's images on the device (an unknown name is a BenchError listing the choices)."""
    from bench.data import load_split
    from bench.registry import get_registry

    return load_split(get_registry().protocol(protocol), "images", str(device), str(data_root) if data_root else None)
