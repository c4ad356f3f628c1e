"""The papers' figures, drawn from stored runs and saved as PNG and PDF (default folder: results/tables/).

- ``pr``: precision-recall curves by Hamming radius, one panel per code length, one line per method (mean over
  the seeds of a protocol's records at today's default config, the runs the tables use; the radius-r point is the Hamming ball of radius r).
- ``tsne``: a t-SNE map of one method's database codes, coloured by class.
- ``samples``: a grid of a generative method's synthetic images.
``tsne`` and ``samples`` need the fitted model: they fit it as its run does (``bench.runner.fit_method``), so a deep
method whose run finished on this machine resumes from its checkpoint instead of training again.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.errors import BenchError
from bench.results import is_current_default, read_records

KINDS = ("pr", "tsne", "samples")


def _figure_module():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def _save(fig, out_dir, name: str) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.{ext}" for ext in ("png", "pdf")]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight")
    _figure_module().close(fig)
    return paths


def pr_curves(protocol: str, bits, methods=None, results_dir=None, out_dir="results/tables") -> list[Path]:
    """PR curves of every (or the named) method with default-config records on ``protocol``."""
    records = [r for r in read_records(results_dir) if r["protocol"] == protocol and is_current_default(r)
               and (not methods or r["method"] in methods) and r.get("curves", {}).get("pr_radius")]
    if not records:
        raise BenchError(f"no stored default-config retrieval runs on {protocol!r}"
                         + (f" for {', '.join(methods)}" if methods else "") + "; run them first (bench run)")
    plt = _figure_module()
    fig, axes = plt.subplots(1, len(bits), figsize=(4 * len(bits), 3.6), squeeze=False)
    keys = sorted({(r["method"], r["input"]) for r in records})
    styles = {k: dict(color=f"C{i % 10}", linestyle=("-", "--", ":")[i // 10 % 3]) for i, k in enumerate(keys)}
    legend = {}
    for ax, n_bits in zip(axes[0], bits):
        at_bits = [r for r in records if r["n_bits"] == n_bits]
        for key in keys:
            runs = [r["curves"]["pr_radius"] for r in at_bits if (r["method"], r["input"]) == key]
            if runs:
                recall = np.mean([c["recall"] for c in runs], 0)
                precision = np.mean([c["precision"] for c in runs], 0)
                line, = ax.plot(recall, precision, marker=".", markersize=3, **styles[key])
                legend.setdefault(f"{key[0]} ({key[1]})", line)
        ax.set(title=f"{protocol}, {n_bits} bits", xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1))
        ax.grid(alpha=0.3)
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=min(6, len(legend)), fontsize=7,
               bbox_to_anchor=(0.5, -0.02 - 0.045 * ((len(legend) - 1) // 6)))
    fig.suptitle("Precision-recall by Hamming radius (stored default-config runs, mean over their seeds)",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return _save(fig, out_dir, f"pr-{protocol}")


def tsne(cell, n_points: int = 2000, device="cpu", data_root=None, out_dir="results/tables") -> list[Path]:
    """t-SNE of ``n_points`` database codes (a fixed random subset) of the cell's method, coloured by class.
    Euclidean distance between +-1 codes is 2 sqrt(Hamming), so the neighbourhoods are the Hamming ones."""
    from sklearn.manifold import TSNE
    from bench.runner import fit_method
    method, split, _, _ = fit_method(cell, device=device, data_root=data_root)
    pick = np.random.default_rng(0).permutation(split.x_database.shape[0])[:n_points]
    index = torch.from_numpy(pick).to(split.x_database.device)
    codes = method.encode(split.x_database[index]).to(torch.float32).cpu().numpy()
    labels = split.y_database[index].cpu().numpy()
    xy = TSNE(2, init="pca", random_state=0, perplexity=min(30.0, (len(pick) - 1) / 3)).fit_transform(codes)
    plt = _figure_module()
    fig, ax = plt.subplots(figsize=(5, 5))
    points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=3)
    ax.legend(*points.legend_elements(), fontsize=6, title="class", title_fontsize=7, loc="best")
    ax.set(title=f"t-SNE of {cell.method} codes, {cell.protocol}, {cell.n_bits} bits (seed {cell.seed})",
           xticks=[], yticks=[])
    ax.title.set_fontsize(8)
    return _save(fig, out_dir, f"tsne-{cell.method}-{cell.protocol}-{cell.n_bits}b")


def samples(cell, n: int = 64, device="cpu", data_root=None, out_dir="results/tables") -> list[Path]:
    """A grid of ``n`` synthetic images from the cell's (generative) method."""
    from torchvision.utils import make_grid
    from bench.registry import get_registry
    from bench.runner import fit_method
    cls = get_registry().method(cell.method)
    if not hasattr(cls, "sample"):
        generative = sorted(m.name for m in get_registry().methods.values() if hasattr(m, "sample"))
        raise BenchError(f"{cell.method} generates no images (choices: {', '.join(generative)})")
    method = fit_method(cell, device=device, data_root=data_root)[0]
    images = method.sample(n).cpu().clamp(-1, 1).add(1).div(2)  # [-1, 1] -> [0, 1]
    grid = make_grid(images, nrow=int(np.ceil(np.sqrt(n))), padding=1).permute(1, 2, 0).numpy()
    plt = _figure_module()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(grid.squeeze(), cmap="gray" if images.shape[1] == 1 else None)
    ax.set(title=f"{cell.method} samples, {cell.protocol}, {cell.n_bits} bits (seed {cell.seed})", xticks=[],
           yticks=[])
    ax.title.set_fontsize(8)
    return _save(fig, out_dir, f"samples-{cell.method}-{cell.protocol}-{cell.n_bits}b")
