"""Cao et al. 2018 pieces: the shared pairwise losses, real-valued ranking, CNNH's stage 1, the similarity
embedding, list-file datasets, count-based multi-label splits and ablation rows of the paper tables."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import random_case

from bench.data import ListFile, Protocol, load_split
from bench.deep import pair_weights, pairwise_likelihood, random_crop_flip
from bench.errors import BenchError
from bench.executors import run_grid
from bench.method import FitContext, make_config, seeded
from bench.metrics import evaluate_real, relevance
from bench.reference import _ap, _relevant
from bench.runner import Cell, run_cell
from bench.tables import build


def test_pair_weights_balance_similar_and_dissimilar_pairs():
    s = torch.tensor([[1, 0, 0], [0, 1, 1], [0, 1, 1]])
    w = pair_weights(s, "balanced", exclude_self=True)  # off-diagonal: 2 similar, 4 dissimilar of 6
    assert w.diagonal().eq(0).all()
    assert w[1, 2] == pytest.approx(6 / 2) and w[0, 1] == pytest.approx(6 / 4)
    assert pair_weights(s, "one", exclude_self=True)[0, 1] == 1.0


def test_pairwise_likelihood_is_the_weighted_logistic_loss():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 6, generator=g), torch.randn(5, 6, generator=g)
    s = torch.rand(4, 5, generator=g) > 0.5
    w = torch.rand(4, 5, generator=g)
    for cosine in (False, True):
        expected, total = 0.0, 0.0
        for i in range(4):
            for j in range(5):
                x = 0.7 * (torch.nn.functional.cosine_similarity(a[i], b[j], 0) if cosine else a[i] @ b[j])
                expected += w[i, j] * (torch.log1p(torch.exp(x)) - float(s[i, j]) * x)
                total += w[i, j]
        assert pairwise_likelihood(a, b, s, 0.7, w, cosine) == pytest.approx(float(expected / total), rel=1e-5)


def test_crop_flip_keeps_shape_and_is_the_identity_without_crop_or_flip():
    x = torch.rand(3, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert random_crop_flip(x, g, 0.75, True).shape == x.shape
    assert torch.allclose(random_crop_flip(x, g, 1.0, False), x, atol=1e-5)


@pytest.mark.parametrize("multi_label", [False, True])
def test_real_valued_ranking_matches_a_brute_force_sort(multi_label):
    rng = np.random.default_rng(0)
    _, _, ql, dl = random_case(rng, 7, 40, 8, multi_label=multi_label)
    q, d = rng.normal(size=(7, 5)), rng.normal(size=(40, 5))
    aps, aps10 = [], []
    for i in range(7):
        rel = _relevant(ql[i], dl)[np.argsort(-(d @ q[i]), kind="stable")]
        aps.append(_ap(rel))
        aps10.append(_ap(rel[:10]))
    result = evaluate_real(q, d, ql, dl, topk=(10,), pn=(5,))
    assert result["map"] == pytest.approx(np.mean(aps)) and result["map@10"] == pytest.approx(np.mean(aps10))
    assert "p@h<=2" not in result and result["curves"]["p@n"]["n"] == [5]


def test_cnnh_stage_one_lowers_the_error_and_recovers_the_classes():
    from baselines.cnnh import approximate_codes

    y = torch.arange(60) % 3
    s = relevance(y, y).float() * 2 - 1
    codes, errors = approximate_codes(s, 8, 5, torch.Generator().manual_seed(0))
    assert all(b <= a for a, b in zip(errors, errors[1:])) and errors[-1] < errors[0]
    agree = (codes @ codes.T / 8 > 0) == (s > 0)
    assert agree.float().mean() > 0.95


def test_similarity_embedding_is_non_negative_and_fits_the_pairs():
    from plugins.hashgan_cao2018 import fit_embedding

    y = torch.arange(50) % 5
    s = relevance(y, y).float()
    v = fit_embedding(s, 32, torch.Generator().manual_seed(0))
    assert (v >= 0).all() and ((v @ v.T - s) ** 2).mean() < 0.01


def make_list_dataset(root, n=60, n_labels=5, size=12):
    """A tiny NUS-WIDE-like folder: PNG images and thuml-format lists (test.txt, database.txt; train.txt a
    sample of database.txt, so lines repeat across lists)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = root / "tiny"
    (folder / "images").mkdir(parents=True)
    lines = []
    for i in range(n):
        labels = (rng.random(n_labels) < 0.4).astype(int)
        labels[i % n_labels] = 1
        colour = (np.array([labels[0], labels[1], labels[2]]) * 200 + rng.integers(0, 40, 3)).astype(np.uint8)
        Image.fromarray(np.tile(colour, (size, size, 1))).save(folder / "images" / f"{i}.png")
        lines.append(f"images/{i}.png " + " ".join(map(str, labels)))
    (folder / "test.txt").write_text("\n".join(lines[:10]) + "\n")
    (folder / "database.txt").write_text("\n".join(lines[10:]) + "\n")
    (folder / "train.txt").write_text("\n".join(lines[10:30]) + "\n")
    return folder


def test_list_file_dataset_and_count_based_multi_label_split(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHBENCH_CACHE", str(tmp_path / "cache"))
    make_list_dataset(tmp_path / "data")
    loader = ListFile("tiny", size=16)
    data = loader(tmp_path / "data", False)
    assert data.x.shape == (60, 3, 16, 16) and data.x.dtype == np.uint8 and data.y.shape == (60, 5)
    assert list((tmp_path / "cache" / "lists").glob("tiny-60-16-*.npz"))  # decoded once, cached
    protocol = Protocol("tiny-lists", "test", loader, 0, topk=(20,), query_count=10, train_count=15)
    split = load_split(protocol, "images", "cpu", str(tmp_path / "data"))
    idx = split.indices
    assert len(idx["query"]) == 10 and len(idx["database"]) == 50 and len(idx["train"]) == 15
    assert not set(idx["query"]) & set(idx["database"]) and set(idx["train"]) <= set(idx["database"])
    assert split.y_train.shape == (15, 5)
    assert len(split.validation(per_class=1).y_query) >= 1  # multi-label validation draws random items
    with pytest.raises(BenchError, match="needs more than 50 queries"):
        Protocol("too-small", "", loader, 0, query_count=50, train_count=20).split_indices(data.y)


def test_list_file_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(BenchError, match="tiny not found under"):
        ListFile("tiny")(tmp_path, False)
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "test.txt").write_text("a.png 0 1\nb.png 0 x\n")
    with pytest.raises(BenchError, match=r"test.txt:2: labels must be 0/1"):
        ListFile("tiny")(tmp_path, False)
    (tmp_path / "tiny" / "test.txt").write_text("a.png 0 1\n")
    with pytest.raises(BenchError, match="image a.png \\(listed\\) not found"):
        ListFile("tiny")(tmp_path, False)


SMOKE = (("iterations", "20"), ("batch_size", "32"), ("gan_width", "8"), ("n_critic", "1"))
# For what needs no training: one iteration.
SHORTEST = (("iterations", "1"), ("batch_size", "16"), ("gan_width", "8"), ("n_critic", "1"))


def test_hashgan_b_ranks_real_valued_outputs(results_dir):
    record, _ = run_cell(
        Cell("hashgan-cao2018", "digits", 8, 0, overrides=SHORTEST + (("binarize", "false"),)), results_dir=results_dir
    )
    assert record["distance"] == "inner_product" and "p@h<=2" not in record["metrics"]
    assert "inner product" in record["semantics"]["distance"] and record["metrics"]["map"] > 0.1


def test_semi_supervised_methods_get_the_database_without_labels(monkeypatch):
    """On a protocol whose labelled training set is apart from the database, the runner passes the database
    images as ``context.unlabelled`` (never their labels)."""
    from bench import runner
    from bench.data import load_digits
    from plugins.hashgan_cao2018 import HashGANCao

    seen = {}
    original = HashGANCao.fit

    def spy(self, x, y=None, context=FitContext()):
        seen["unlabelled"] = None if context.unlabelled is None else context.unlabelled.shape[0]
        return original(self, x, y, context)

    monkeypatch.setattr(HashGANCao, "fit", spy)
    digits_cao = Protocol(
        "digits-cao", "digits, 5 queries and 30 training images per class", load_digits, 5, train_per_class=30
    )
    registry = runner.get_registry()
    monkeypatch.setitem(registry.protocols, "digits-cao", digits_cao)
    method, split, _ = runner.fit_method(
        runner.prepare(Cell("hashgan-cao2018", "digits-cao", 8, 0, overrides=SHORTEST))
    )
    assert seen["unlabelled"] == split.x_database.shape[0] == 1797 - 50 - 300
    assert method.training_["unlabelled_images"] == seen["unlabelled"]


def _tiny_digits(n: int):
    """The first ``n`` digits as the uint8 images (n, 1, 8, 8) and class ids the runner would give fit()."""
    from bench.data import load_digits

    data = load_digits(None, False)
    return torch.from_numpy(data.x[:n]), torch.from_numpy(data.y[:n]).long()


@pytest.mark.parametrize("method", ["hashgan-cao2018", "hashgan-cao2018-official"])
def test_hashgan_cao_fit_takes_the_unlabelled_images_from_its_context_and_repeats_under_one_seed(method):
    """Both schedules (the paper's joint one, the code's GAN stage then F) train on ``context.unlabelled`` in the
    GAN, log each stage, and draw only from the run's generator and the seeded global one: two fits agree."""
    from bench.registry import get_registry

    cls = get_registry().method(method)
    x, y = _tiny_digits(120)
    config = make_config(
        cls, {"iterations": 3, "batch_size": 16, "gan_width": 8, "n_critic": 2, "gan_iterations": 2, "embedding_dim": 8}
    )
    fits = []
    for _ in range(2):
        with seeded(0):
            fits.append(cls(8, config, seed=0).fit(x[:80], y[:80], FitContext(unlabelled=x[80:])))
    first, second = fits
    assert first.training_["unlabelled_images"] == 40
    stages = [entry.get("stage") for entry in first.training_["log"]]
    assert stages == (["gan", None] if config.schedule == "two_stage" else [None])
    assert all(key in first.training_["log"][-1] for key in ("loss_f", "likelihood_synthetic", "quantization"))
    assert first.training_["log"] == second.training_["log"]
    assert torch.equal(first.encode(x[:20]), second.encode(x[:20]))
    assert torch.equal(first.sample(4), second.sample(4))


def test_cpu_reduced_recipes_are_the_reduced_schedule_of_both_variants():
    from bench.recipes import resolve
    from bench.registry import get_registry

    for method, gan_iterations in (("hashgan-cao2018", 0), ("hashgan-cao2018-official", 500)):
        config = resolve(get_registry().method(method), 16, "cpu-reduced")
        assert (config.iterations, config.batch_size, config.gan_width, config.n_critic) == (500, 64, 16, 1)
        assert config.gan_iterations == gan_iterations


def test_ablation_rows_and_a_table_recipe_pick_their_runs(results_dir, monkeypatch):
    """Table 2's rows differ only by a Config switch (each row's ``set``); a table-wide recipe (a reduced
    schedule) is laid under every row whose method declares it, and under no other."""
    from bench.registry import get_registry
    from plugins.hashgan_cao2018 import HashGANCao

    spec = get_registry().table("cao2018-table2")
    block = dict(spec.blocks[1], protocol="digits", label="Digits")
    rows = tuple(dict(r, published={"digits": r["published"].get("cifar10-cao2018", {})}) for r in spec.rows)
    spec = dataclasses.replace(spec, blocks=(block,), rows=rows, bits=(8,))
    monkeypatch.setattr(HashGANCao, "recipes", {"tiny": dict(SHORTEST)})
    cells = [
        Cell("hashgan-cao2018", "digits", 8, 0, "tiny", extra)
        for extra in ((), (("beta", "0"),), (("use_gan", "false"),))
    ]
    records = run_grid(cells, results_dir=results_dir, log=lambda s: None)
    table = build(spec, results_dir, "tiny")
    ours = {r["label"]: r["ours"][0] for r in table["rows"]}
    for label, record in zip(("HashGAN", "HashGAN-Q", "HashGAN-G"), records):
        assert ours[label][0] == pytest.approx(100 * record["metrics"]["map"]) and ours[label][2] == 1
    assert ours["HashGAN-B"] is None
    assert any("recipe 'tiny'" in n and "iterations=" in n for n in table["notes"])
    assert all(c is None for r in build(spec, results_dir)["rows"] for c in r["ours"])  # not the default config
    assert json.dumps(records[1]["config"]["beta"]) == "0.0"
