"""Speed benchmarks, each timing ours against a baseline in the same run.

``bench bench-eval``: our evaluator against the per-query argsort reference.

The codes are synthetic but shaped like real ones (class prototypes with 30% of the bits flipped), so the
Hamming ranking has the heavy ties of real codes. The reference is ``bench.reference.reference_evaluate`` with
numpy's default sort, as the popular repositories call it; it computes fewer metrics than ours (mAP, mAP@1000,
P@H<=2), which only favours it. Its mAP with a stable sort (ties by index, our policy) is checked against ours.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from bench.errors import unknown
from bench.method import seeded
from bench.metrics import evaluate, relevance
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


def benchmark_evaluator(
    n_queries=1000, n_database=54000, n_bits=64, n_classes=10, *, device="cpu", repeats=3, reference=True
) -> dict:
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
    report = {
        "shape": {"queries": n_queries, "database": n_database, "bits": n_bits, "classes": n_classes},
        "device": device,
        "ours_s": round(ours_s, 4),
        "ours_map": result["map"],
        "ours_map@1000": result["map@1000"],
    }
    if device.startswith("cuda"):
        report["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        report["gpu"] = torch.cuda.get_device_name()
    if reference:
        ref_s, ref = _best_of(1, lambda: reference_evaluate(q, d, yq, yd, topk=(1000,), sort_kind="quicksort"))
        stable = reference_evaluate(q, d, yq, yd, topk=(1000,), sort_kind="stable")
        report.update(
            {
                "reference_s": round(ref_s, 4),
                "speedup": round(ref_s / ours_s, 1),
                "reference_map_quicksort_ties": ref["map"],
                "reference_map_stable_ties": stable["map"],
                "map_abs_diff_vs_stable_reference": abs(stable["map"] - result["map"]),
                "map@1000_abs_diff_vs_stable_reference": abs(stable["map@1000"] - result["map@1000"]),
            }
        )
    return report


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
    from bench.deep import SupervisedConfig, iteration_batches, pair_weights, pairwise_likelihood, random_crop_flip, sgd

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
            step(net, opt, random_crop_flip(net.backbone.prepare(x[idx]), g, config.crop, config.flip), y[idx])
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
