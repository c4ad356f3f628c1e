"""Clustering: NMI/ACC against their brute-force definitions, the clustering protocols in the runner, the k-means
baseline, every method's codes clustered, and the clustering table."""

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.executors import run_grid
from bench.method import Method, kmeans
from bench.metrics import clustering_accuracy, evaluate_clustering, nmi
from bench.registry import get_registry
from bench.runner import Cell, run_cell
from bench.tables import build, render

QUIET = {"log": lambda s: None}


def brute_nmi(y, c, normalizer):
    """I(Y;C) and the entropies from their definitions, item by item."""
    n = len(y)

    def p(**values):  # the fraction of items whose labels (y=..., c=...) are the given values
        return sum(all({"y": y, "c": c}[name][i] == v for name, v in values.items()) for i in range(n)) / n

    def h(name, labels):
        return -sum(p(**{name: v}) * math.log(p(**{name: v})) for v in set(labels))

    mutual = 0.0
    for a in set(y):
        for b in set(c):
            joint = p(y=a, c=b)
            if joint > 0:
                mutual += joint * math.log(joint / (p(y=a) * p(c=b)))
    norm = math.sqrt(h("y", y) * h("c", c)) if normalizer == "geometric" else (h("y", y) + h("c", c)) / 2
    return mutual / norm


def brute_acc(y, c):
    """The best accuracy over every one-to-one map of cluster ids onto class ids (clusters may outnumber
    classes: an unmatched cluster counts as wrong)."""
    classes, clusters = sorted(set(y)), sorted(set(c))
    slots = classes + [None] * max(0, len(clusters) - len(classes))
    best = 0
    for image in itertools.permutations(slots, len(clusters)):
        m = dict(zip(clusters, image))
        best = max(best, sum(m[b] == a for a, b in zip(y, c)))
    return best / len(y)


@pytest.mark.parametrize("seed", range(6))
def test_nmi_and_acc_match_their_definitions(seed):
    rng = np.random.default_rng(seed)
    n, k_y, k_c = int(rng.integers(5, 40)), int(rng.integers(2, 5)), int(rng.integers(2, 6))
    # the first two items differ in both labellings, so every draw has two classes and two clusters
    y = [0, 1] + rng.integers(0, k_y, n - 2).tolist()
    c = [1, 0] + rng.integers(0, k_c, n - 2).tolist()
    for normalizer in ("geometric", "arithmetic"):
        assert nmi(y, c, normalizer) == pytest.approx(brute_nmi(y, c, normalizer), abs=1e-12)
    assert clustering_accuracy(y, c) == pytest.approx(brute_acc(y, c))


def test_scores_ignore_cluster_names_and_reach_one_on_a_perfect_clustering():
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    renamed = np.array([7, 7, 3, 3, 5, 5, 5])
    assert evaluate_clustering(y, renamed) == {"nmi": 1.0, "nmi_arithmetic": 1.0, "acc": 1.0}
    swapped = np.array([3, 7, 3, 3, 5, 5, 5])
    assert evaluate_clustering(y, swapped)["acc"] == pytest.approx(6 / 7)
    # the normalisers differ when the two labellings have different entropies
    assert nmi(y, [0, 0, 0, 1, 1, 1, 1]) != nmi(y, [0, 0, 0, 1, 1, 1, 1], "arithmetic")


def test_bad_clustering_inputs_are_named():
    with pytest.raises(BenchError, match="equal, non-zero length"):
        evaluate_clustering([0, 1, 1], [0, 1])
    with pytest.raises(BenchError, match="NMI normaliser 'max'"):
        nmi([0, 1], [1, 0], "max")


def test_kmeans_runs_once_on_a_clustering_protocol_and_records_how(results_dir):
    records = run_grid([Cell("kmeans", "digits-clustering", b, 0) for b in (16, 32)], results_dir=results_dir, **QUIET)
    assert len(records) == 1  # no codes: --bits does not matter, one run
    r = records[0]
    assert r["n_bits"] == 0 and r["task"] == "clustering" and set(r["metrics"]) == {"nmi", "nmi_arithmetic", "acc"}
    assert r["sizes"] == {"query": 0, "database": 1797, "train": 1797} and r["counts"]["n_clusters"] == 10
    assert r["clustering"]["nmi_normalizer"] == "geometric" and "own clusters" in r["clustering"]["assignments"]
    # k-means on digits pixels is a strong clustering (far above chance, ~0.1), not a perfect one
    assert 0.6 < r["metrics"]["nmi"] < 0.95 and 0.6 < r["metrics"]["acc"] < 0.95


def test_tasks_are_checked_before_any_work(results_dir):
    with pytest.raises(
        BenchError,
        match=r"kmeans does not run on retrieval protocols .*choices for kmeans: "
        r"digits-clustering, mnist, usps",
    ):
        run_cell(Cell("kmeans", "digits", 16, 0), results_dir=results_dir)
    assert not results_dir.exists()


def clusters_in_its_own_way(cls) -> bool:
    """Whether a clustering run of ``cls`` differs from its retrieval fit: no codes, clusters of its own, or
    model selection that a clustering protocol takes away (it has no held-out labels)."""
    return "retrieval" not in cls.tasks or cls.cluster is not Method.cluster or cls.uses_validation


ALL_METHODS = sorted(get_registry().methods.values(), key=lambda m: m.name)
# Random clusters of digits score NMI about 0.01; the bar is ten times that, below every method's smoke config.
NMI_BAR = 0.1


@pytest.mark.parametrize("cls", [m for m in ALL_METHODS if clusters_in_its_own_way(m)], ids=lambda c: c.name)
def test_methods_that_cluster_in_their_own_way_run_on_a_clustering_protocol(cls, results_dir):
    """The runner's whole clustering path for the methods where it is their own: better than chance, the record
    says whose clusters they are, and no labels chose anything."""
    record, ran = run_cell(
        Cell(cls.name, "digits-clustering", 16, 0, overrides=tuple(cls.smoke.items())), results_dir=results_dir
    )
    assert ran and record["metrics"]["nmi"] > NMI_BAR, record["metrics"]
    expected = "k-means on the codes" if "retrieval" in cls.tasks else "own clusters"
    assert expected in record["clustering"]["assignments"]
    if cls.uses_validation:  # scored on its own training items: no labels may select anything
        assert "no validation" in record["training"]["selection"]


@pytest.mark.parametrize("cls", [m for m in ALL_METHODS if not clusters_in_its_own_way(m)], ids=lambda c: c.name)
def test_every_other_method_s_codes_cluster(cls, fitted):
    """Every other hashing method fits alike on both tasks, and the runner clusters its codes with k-means (that
    path runs above for dh), so its session smoke fit is reused: k-means on the codes of every digit beats chance."""
    fit = fitted(cls, 32)
    assert fit.method.cluster(fit.split.x_query) is None  # the runner will cluster the codes
    codes = torch.cat([fit.codes("query"), fit.codes("database")])
    y = torch.cat([fit.split.y_query, fit.split.y_database])
    assignments, _ = kmeans(codes.to(torch.float32), 10, seed=0)
    assert evaluate_clustering(y, assignments)["nmi"] > NMI_BAR


def test_clustering_table_shows_ours_beside_the_paper(results_dir):
    spec = get_registry().table("dizaji2018-table2")
    block = dict(spec.blocks[0], protocol="digits-clustering", label="Digits")
    rows = tuple(dict(r, published={"digits-clustering": r.get("published", {}).get("mnist", {})}) for r in spec.rows)
    table = dataclasses.replace(spec, blocks=(block,), rows=rows)
    records = run_grid([Cell("kmeans", "digits-clustering", 32, s) for s in (0, 1)], results_dir=results_dir, **QUIET)
    by_label = {r["label"]: r for r in build(table, results_dir)["rows"]}
    mean, std, n = by_label["K-means"]["ours"][0]
    assert n == 2 and mean == pytest.approx(np.mean([r["metrics"]["nmi"] for r in records]))
    assert by_label["K-means"]["paper"][0] == 0.5  # scale 1: NMI as the paper prints it
    assert by_label["DEPICT"]["paper"] == [0.917, 0.965] and by_label["DEPICT"]["ours"] == [None, None]
    assert by_label["HashGAN"]["ours"] == [None, None]  # no runs of it stored
    md = render(table, "markdown", results_dir)
    assert "Digits" in md and f"**{mean:.3f}** ± {std:.3f} (0.500)" in md
    assert "ties broken" not in md and "Values x" not in md
