"""The papers' figures, drawn from stored runs and saved as PNG and PDF (default folder: results/tables/).

- ``pr``: precision-recall curves by Hamming radius, one panel per code length, one line per method (mean over
  the seeds of a protocol's records at the default config, or at the ``--recipe`` given for the methods that
  declare it, chosen as the tables choose them: ``bench.recipes``; the radius-r point is the Hamming ball of
  radius r).
- ``ph2``: precision within Hamming radius 2 against the code length, one line per method (Cao Fig. 2a).
- ``pn``: precision of the top N returned items against N, one panel per code length (Cao Fig. 4).
- ``tsne``: a t-SNE map of one method's database codes, coloured by class.
- ``samples``: a grid of a generative method's synthetic images; one row per class for a pair-conditional
  generator (Cao Fig. 6).
``tsne`` and ``samples`` need the fitted model: they fit it as its run does (``bench.runner.fit_method``), so a deep
method whose run finished on this machine resumes from its checkpoint instead of training again.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from bench import recipes
from bench.errors import BenchError
from bench.results import read_records

KINDS = ("pr", "ph2", "pn", "tsne", "samples")
RECORD_KINDS = ("pr", "ph2", "pn")  # drawn from stored records; the others from a fitted model


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


def _records(protocol: str, bits, methods=None, recipe=None, results_dir=None, need=lambda r: True) -> list[dict]:
    """The protocol's retrieval records at ``bits`` of the named methods (default: all registered), each at its
    default config or at ``recipe`` where it declares it, that ``need`` accepts."""
    from bench.registry import get_registry

    registry = get_registry()
    classes = [registry.method(m) for m in methods] if methods else list(registry.methods.values())
    stored = [
        r for r in read_records(results_dir) if r["protocol"] == protocol and r.get("task") != "clustering" and need(r)
    ]
    records = []
    for cls in classes:
        hashes = {n: recipes.hash_of(cls, n, under=recipe) for n in bits}
        records += recipes.select(stored, cls.name, hashes, protocol)
    if not records:
        which = f" for {', '.join(methods)}" if methods else ""
        config = f" at the recipe {recipe!r}" if recipe else " at the default config"
        raise BenchError(f"no stored retrieval runs on {protocol!r}{which}{config}; run them first (bench run)")
    return records


def _lines(records):
    """Line styles per (method, input) and the figure-wide legend they fill."""
    keys = sorted({(r["method"], r["input"]) for r in records})
    return keys, {k: dict(color=f"C{i % 10}", linestyle=("-", "--", ":")[i // 10 % 3]) for i, k in enumerate(keys)}


def _legend(fig, legend: dict, title: str) -> None:
    fig.legend(
        legend.values(),
        legend.keys(),
        loc="lower center",
        ncol=min(6, len(legend)),
        fontsize=7,
        bbox_to_anchor=(0.5, -0.02 - 0.045 * ((len(legend) - 1) // 6)),
    )
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))


def _suffix(recipe) -> str:
    return f"-{recipe}" if recipe else ""


def _runs_note(recipe) -> str:
    where = f"; recipe {recipe} for the methods that declare it, default for the others" if recipe else ""
    return f"(stored runs, mean over their seeds{where})"


def pr_curves(protocol: str, bits, methods=None, results_dir=None, out_dir="results/tables", recipe=None) -> list[Path]:
    """PR curves by Hamming radius of every (or the named) method's records on ``protocol``."""
    records = _records(protocol, bits, methods, recipe, results_dir, lambda r: r.get("curves", {}).get("pr_radius"))
    return _curves(
        records,
        protocol,
        bits,
        "pr_radius",
        "recall",
        "precision",
        out_dir,
        f"pr-{protocol}{_suffix(recipe)}",
        "Precision-recall by Hamming radius",
        unit_x=True,
        recipe=recipe,
    )


def pn_curves(protocol: str, bits, methods=None, results_dir=None, out_dir="results/tables", recipe=None) -> list[Path]:
    """P@N against N (the number of top returned items) of every (or the named) method's records."""
    records = _records(
        protocol, bits, methods, recipe, results_dir, lambda r: r.get("curves", {}).get("p@n", {}).get("n")
    )
    return _curves(
        records,
        protocol,
        bits,
        "p@n",
        "n",
        "precision",
        out_dir,
        f"pn-{protocol}{_suffix(recipe)}",
        "Precision of the top N returned items",
        unit_x=False,
        recipe=recipe,
    )


def _curves(records, protocol, bits, curve, x_key, y_key, out_dir, name, title, unit_x, recipe) -> list[Path]:
    plt = _figure_module()
    fig, axes = plt.subplots(1, len(bits), figsize=(4 * len(bits), 3.6), squeeze=False)
    keys, styles = _lines(records)
    legend = {}
    for ax, n_bits in zip(axes[0], bits):
        at_bits = [r for r in records if r["n_bits"] == n_bits]
        for key in keys:
            runs = [r["curves"][curve] for r in at_bits if (r["method"], r["input"]) == key]
            if runs:
                x = np.mean([c[x_key] for c in runs], 0)
                y = np.mean([c[y_key] for c in runs], 0)
                (line,) = ax.plot(x, y, marker=".", markersize=3, **styles[key])
                legend.setdefault(f"{key[0]} ({key[1]})", line)
        ax.set(title=f"{protocol}, {n_bits} bits", xlabel=x_key if x_key != "n" else "N", ylabel=y_key, ylim=(0, 1))
        if unit_x:
            ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
    _legend(fig, legend, f"{title} {_runs_note(recipe)}")
    return _save(fig, out_dir, name)


def ph2_curve(protocol: str, bits, methods=None, results_dir=None, out_dir="results/tables", recipe=None) -> list[Path]:
    """Precision within Hamming radius 2 against the code length, one line per method (mean over seeds)."""
    records = _records(protocol, bits, methods, recipe, results_dir, lambda r: "p@h<=2" in r["metrics"])
    plt = _figure_module()
    fig, ax = plt.subplots(figsize=(4.5, 3.6))
    keys, styles = _lines(records)
    legend = {}
    for key in keys:
        points = sorted({r["n_bits"] for r in records if (r["method"], r["input"]) == key})
        values = [
            np.mean([r["metrics"]["p@h<=2"] for r in records if (r["method"], r["input"]) == key and r["n_bits"] == b])
            for b in points
        ]
        (line,) = ax.plot(points, values, marker="o", markersize=3, **styles[key])
        legend[f"{key[0]} ({key[1]})"] = line
    ax.set(
        title=protocol,
        xlabel="number of bits",
        ylabel="precision (Hamming dist. <= 2)",
        ylim=(0, 1),
        xticks=sorted(bits),
    )
    ax.grid(alpha=0.3)
    _legend(fig, legend, f"Precision within Hamming radius 2 {_runs_note(recipe)}")
    return _save(fig, out_dir, f"ph2-{protocol}{_suffix(recipe)}")


def _settings(cell) -> str:
    """The cell's recipe and --set fields, for a figure's title (a figure of a non-default config says so)."""
    parts = ([] if cell.recipe == recipes.DEFAULT else [f"recipe {cell.recipe}"]) + [
        f"{k}={v}" for k, v in cell.overrides
    ]
    return "\n" + ", ".join(parts) if parts else ""


@lru_cache(maxsize=2)
def _fitted(cell, device, data_root):
    """The cell's method fitted as its run fits it, kept for the process: a t-SNE and a sample grid of one model
    cost one training."""
    from bench.runner import fit_method, prepare

    method, split, _ = fit_method(prepare(cell), device=device, data_root=data_root)
    return method, split


def tsne(cell, n_points: int = 2000, device="cpu", data_root=None, out_dir="results/tables") -> list[Path]:
    """t-SNE of ``n_points`` database codes (a fixed random subset) of the cell's method, coloured by class.
    Euclidean distance between +-1 codes is 2 sqrt(Hamming), so the neighbourhoods are the Hamming ones."""
    from sklearn.manifold import TSNE

    method, split = _fitted(cell, device, data_root)
    pick = np.random.default_rng(0).permutation(split.x_database.shape[0])[:n_points]
    index = torch.from_numpy(pick).to(split.x_database.device)
    codes = method.encode(split.x_database[index]).to(torch.float32).cpu().numpy()
    labels = split.y_database[index].cpu().numpy()
    xy = TSNE(2, init="pca", random_state=0, perplexity=min(30.0, (len(pick) - 1) / 3)).fit_transform(codes)
    plt = _figure_module()
    fig, ax = plt.subplots(figsize=(5, 5))
    points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=3)
    ax.legend(*points.legend_elements(), fontsize=6, title="class", title_fontsize=7, loc="best")
    ax.set(
        title=f"t-SNE of {cell.method} codes, {cell.protocol}, {cell.n_bits} bits (seed {cell.seed}){_settings(cell)}",
        xticks=[],
        yticks=[],
    )
    ax.title.set_fontsize(8)
    return _save(fig, out_dir, f"tsne-{cell.method}-{cell.protocol}-{cell.n_bits}b")


def samples(cell, n: int = 64, device="cpu", data_root=None, out_dir="results/tables") -> list[Path]:
    """A grid of ``n`` synthetic images from the cell's (generative) method."""
    from torchvision.utils import make_grid

    from bench.registry import get_registry

    cls = get_registry().method(cell.method)
    if not hasattr(cls, "sample"):
        generative = sorted(m.name for m in get_registry().methods.values() if hasattr(m, "sample"))
        raise BenchError(f"{cell.method} generates no images (choices: {', '.join(generative)})")
    method, split = _fitted(cell, device, data_root)
    if "classes" in inspect.signature(method.sample).parameters and split.y_train.ndim == 1:
        per_class = 8  # a pair-conditional generator: one row per class, from that class's embedding
        classes = torch.unique(split.y_train).repeat_interleave(per_class)
        images, columns = method.sample(len(classes), classes=classes), per_class
    else:
        images, columns = method.sample(n), int(np.ceil(np.sqrt(n)))
    images = images.cpu().clamp(-1, 1).add(1).div(2)  # [-1, 1] -> [0, 1]
    grid = make_grid(images, nrow=columns, padding=1).permute(1, 2, 0).numpy()
    plt = _figure_module()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(grid.squeeze(), cmap="gray" if images.shape[1] == 1 else None)
    ax.set(
        title=f"{cell.method} samples, {cell.protocol}, {cell.n_bits} bits (seed {cell.seed}){_settings(cell)}",
        xticks=[],
        yticks=[],
    )
    ax.title.set_fontsize(8)
    return _save(fig, out_dir, f"samples-{cell.method}-{cell.protocol}-{cell.n_bits}b")
