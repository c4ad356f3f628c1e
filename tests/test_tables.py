"""Tables rendered from stored records: the papers' layout, the runs each row means, and the committed renders."""

import dataclasses
import json
from pathlib import Path

import pytest

from bench.executors import run_grid
from bench.registry import get_registry
from bench.results import read_records
from bench.runner import Cell
from bench.tables import build, committed_renders, render

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def digits_table():
    """The Dizaji table laid over the digits protocol, so the test needs no MNIST."""
    spec = get_registry().table("dizaji2018-table1")
    block = dict(spec.blocks[0], protocol="digits", label="Digits")
    rows = tuple(dict(r, published={"digits": r["published"].get("mnist-dizaji2018", {})}) for r in spec.rows)
    return dataclasses.replace(spec, blocks=(block,), rows=rows)


def row(table, label):
    return next(r for r in table["rows"] if r["label"] == label)


def quiet(cells, results_dir):
    return run_grid(cells, results_dir=results_dir, log=lambda s: None)


def test_a_paper_table_shows_ours_and_the_papers_number_per_dataset(digits_table, results_dir):
    records = quiet(
        [Cell(m, "digits", b, s) for m in ("itq", "lsh") for b in (16, 32, 64) for s in (0, 1)], results_dir
    )
    quiet([Cell("itq", "digits", 16, 0, overrides=(("n_iter", "0"),))], results_dir)  # an ablation: left out
    t = build(digits_table, results_dir)
    itq16 = [r["metrics"]["map"] * 100 for r in records if r["method"] == "itq" and r["n_bits"] == 16]
    mean, std, n = row(t, "ITQ")["ours"][0]
    assert n == 2 and mean == pytest.approx(sum(itq16) / 2) and row(t, "ITQ")["paper"][0] == 41.18
    assert row(t, "PCAH")["paper"][0] == 27.33 and row(t, "PCAH")["ours"][0] is None  # no runs of ours

    md = render(digits_table, "markdown", results_dir)
    assert f"**{mean:.2f}** ± {std:.2f} (41.18)" in md and "| – (27.33)" in md
    assert "Digits, mAP@1000" in md and "mAP@1000 64" in md and "ITQ [0, 1]" in md
    assert "ties broken by database index" in md
    assert "fit" not in md.split("- Source")[0]  # times live in the speed table
    assert max(len(line) for line in md.split("\n- ")[0].splitlines()) <= 160
    tex = render(digits_table, "latex", results_dir)
    assert r"\toprule" in tex and r"\multicolumn{3}{c}{mAP@1000}" in tex and r"$\pm$" in tex
    assert r"\multicolumn{6}{c}{Digits}" in tex and r"\textbf{" in tex and "(41.18)" in tex


def test_the_speed_table_holds_fit_and_encode_seconds(digits_table, results_dir):
    records = quiet([Cell("itq", "digits", 64, s) for s in (0, 1)], results_dir)
    t = build(digits_table.speed(), results_dir)
    fit = [c.metric for c in t["columns"]].index("fit_s")
    assert row(t, "ITQ")["ours"][fit][0] == pytest.approx(sum(r["timings"]["fit_s"] for r in records) / 2)
    assert "encode (s)" in render(digits_table.speed(), "markdown", results_dir)


def test_best_of_ours_is_bold(digits_table, results_dir):
    quiet([Cell(m, "digits", 16, 0) for m in ("itq", "lsh", "pcah")], results_dir)
    t = build(digits_table, results_dir)
    ours = {r["label"]: r["ours"][0][0] for r in t["rows"] if r["ours"][0] is not None}
    assert len(ours) == 3
    best_row = next(i for i, j in t["best"] if j == 0)
    assert t["rows"][best_row]["label"] == max(ours, key=ours.get)


def test_a_cell_stored_twice_counts_once_the_newest(digits_table, results_dir):
    [record] = quiet([Cell("itq", "digits", 16, 0)], results_dir)
    older = dict(record, run_id="older", created="2000-01-01T00:00:00+0000", metrics=dict(record["metrics"], map=0.0))
    (results_dir / "runs" / "itq_older.json").write_text(json.dumps(older))
    mean, std, n = row(build(digits_table, results_dir), "ITQ")["ours"][0]
    assert n == 1 and mean == pytest.approx(100 * record["metrics"]["map"])
    ours = next(line for line in render(digits_table, "markdown", results_dir).splitlines() if "| ITQ " in line)
    assert f"{mean:.2f}" in ours and "±" not in ours  # one seed: no spread shown


def test_a_run_is_what_it_ran_a_new_default_does_not_relabel_it(digits_table, results_dir, monkeypatch):
    """Selection is by config hash: after a default changes, the old runs leave the default row, and a row that
    names a recipe resolving to their config shows them again."""
    from baselines.itq import ITQ

    [record] = quiet([Cell("itq", "digits", 16, 0)], results_dir)
    assert row(build(digits_table, results_dir), "ITQ")["ours"][0][2] == 1
    monkeypatch.setattr(ITQ, "Config", dataclasses.make_dataclass("Config", [("n_iter", int, 99)], frozen=True))
    assert row(build(digits_table, results_dir), "ITQ")["ours"][0] is None
    monkeypatch.setattr(ITQ, "recipes", {"fifty": {"n_iter": record["config"]["n_iter"]}})
    spec = dataclasses.replace(
        digits_table,
        rows=digits_table.rows + ({"method": "itq", "label": "ITQ, old default", "recipe": "fifty", "published": {}},),
    )
    assert row(build(spec, results_dir), "ITQ, old default")["ours"][0][2] == 1


def test_a_rows_own_recipe_and_set_win_over_the_tables_recipe(digits_table, results_dir, monkeypatch):
    from baselines.itq import ITQ

    monkeypatch.setattr(ITQ, "recipes", {"short": {"n_iter": 5}})
    spec = dataclasses.replace(
        digits_table,
        rows=digits_table.rows
        + ({"method": "itq", "label": "ITQ, 10 iterations", "published": {}, "set": {"n_iter": 10}},),
    )
    [ten] = quiet([Cell("itq", "digits", 16, 0, overrides=(("n_iter", "10"),))], results_dir)
    [five] = quiet([Cell("itq", "digits", 16, 0, recipe="short")], results_dir)
    t = build(spec, results_dir, recipe="short")
    assert row(t, "ITQ, 10 iterations")["ours"][0][0] == pytest.approx(100 * ten["metrics"]["map"])
    assert row(t, "ITQ")["ours"][0][0] == pytest.approx(100 * five["metrics"]["map"])
    assert any("recipe 'short'" in note and "itq (n_iter=5)" in note for note in t["notes"])


def test_a_table_recipe_no_method_declares_is_named():
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="recipe for the rows of dizaji2018-table1.*'no-such'.*cpu-reduced"):
        build(get_registry().table("dizaji2018-table1"), records=[], recipe="no-such")


RENDERS = committed_renders(list(get_registry().tables.values()))


@pytest.mark.parametrize("spec, recipe, stem", RENDERS, ids=[stem for _, _, stem in RENDERS])
def test_committed_tables_come_from_committed_records(spec, recipe, stem):
    """results/tables/ holds what `bench table --all` renders from results/runs/ (regenerate both together)."""
    committed = ROOT / "results" / "tables" / f"{stem}.md"
    assert committed.exists(), f"{committed} is not committed: bash results/render.sh tables"
    assert committed.read_text() == render(spec, "markdown", ROOT / "results", recipe)


def test_every_number_of_the_tables_committed_before_schema_2_is_unchanged():
    """The tables committed before records stored their full config (schema 2) and tables named recipes: every
    (table, reduced variant, row, dataset, metric, bits) number they showed is shown now, equal, by the paper
    table, its -recipes or its -speed table at the same table-wide recipe."""
    before = json.loads((ROOT / "tests" / "data" / "table_numbers_before_v2.json").read_text())
    variant_recipe = {"": None, "cpu": "cpu-reduced", "cpu500": "cpu-reduced"}
    records = read_records(ROOT / "results")
    now = {}
    for spec, recipe, _ in RENDERS:
        table = spec.name.removesuffix("-speed").removesuffix("-recipes")
        t = build(spec, records=records, recipe=recipe)
        for r in t["rows"]:
            for c, ours in zip(t["columns"], r["ours"]):
                if ours is not None:
                    now[(table, recipe, r["label"], c.block["protocol"], c.metric, c.bits)] = ours
    assert len(before) > 500
    for b in before:
        key = (b["table"], variant_recipe[b["variant"]], b["row"], b["protocol"], b["metric"], b["bits"])
        assert key in now, f"{key} is no longer shown"
        mean, std, n = now[key]
        assert (round(mean, 6), round(std, 6), n) == pytest.approx((b["mean"], b["std"], b["n"]), abs=2e-6), key
