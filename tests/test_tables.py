"""Paper tables rendered from stored records."""
import dataclasses

import pytest

from bench.registry import get_registry
from bench.runner import Cell, run_grid
from bench.tables import build, render


@pytest.fixture
def digits_table():
    """The Dizaji table laid over the digits protocol, so the test needs no MNIST."""
    spec = get_registry().table("dizaji2018-table1")
    block = dict(spec.blocks[0], protocol="digits", label="Digits")
    rows = tuple(dict(r, published={"digits": r["published"].get("mnist-dizaji2018", {})}) for r in spec.rows)
    return dataclasses.replace(spec, blocks=(block,), rows=rows)


def row(table, label):
    return next(cells for name, cells in table["rows"] if name == label)


def test_table_shows_mean_std_paper_and_difference(digits_table, results_dir):
    records = run_grid([Cell(m, "digits", b, s) for m in ("itq", "lsh") for b in (16, 32, 64) for s in (0, 1)],
                       results_dir=results_dir, log=lambda s: None)
    # An ablation run must not leak into a paper table.
    run_grid([Cell("itq", "digits", 16, 0, (("n_iter", "0"),))], results_dir=results_dir, log=lambda s: None)
    t = build(digits_table, results_dir)
    itq16 = [r["metrics"]["map"] * 100 for r in records if r["method"] == "itq" and r["n_bits"] == 16]
    mean, std, n, paper = row(t, "ITQ (ours)")[0]
    assert n == 2 and mean == pytest.approx(sum(itq16) / 2) and paper == 41.18
    assert row(t, "PCAH (paper)")[0] == 27.33 and row(t, "PCAH (ours)")[0] is None  # paper value, no runs of ours
    fit = [c.metric for c in t["columns"]].index("fit_s")
    itq64 = [r["timings"]["fit_s"] for r in records if r["method"] == "itq" and r["n_bits"] == 64]
    assert row(t, "ITQ (ours)")[fit][0] == pytest.approx(sum(itq64) / 2)  # seconds, not x100

    md = render(digits_table, "markdown", results_dir)
    assert "| ITQ (paper)" in md and "41.18" in md and f"**{mean:.2f}** ± {std:.2f} ({mean - 41.18:+.2f})" in md
    assert "Digits mAP 16" in md and "ITQ [0, 1]" in md and "ties broken by database index" in md
    tex = render(digits_table, "latex", results_dir)
    assert r"\toprule" in tex and r"\multicolumn{3}{c}{mAP@1000}" in tex and r"$\pm$" in tex
    assert r"\multicolumn{2}{c}{time (s), 64 bits}" in tex and "Digits time (s), 64 bits fit" in md
    assert r"\textbf{" in tex and tex.count(r"\\") >= 8


def test_best_of_ours_is_bold(digits_table, results_dir):
    run_grid([Cell(m, "digits", 16, 0) for m in ("itq", "lsh", "pcah")], results_dir=results_dir,
             log=lambda s: None)
    t = build(digits_table, results_dir)
    ours = {label: cells[0][0] for label, cells in t["rows"] if label.endswith("(ours)") and cells[0] is not None}
    assert len(ours) == 3
    best_row = next(i for i, j in t["best"] if j == 0)
    assert t["rows"][best_row][0] == max(ours, key=ours.get)


@pytest.mark.parametrize("name", sorted(get_registry().tables))
def test_committed_tables_come_from_committed_records(name):
    """results/tables/ holds what `bench table` renders from results/runs/ (regenerate both together)."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "results"
    committed = root / "tables" / f"{name}.md"
    if not committed.exists():
        pytest.skip(f"no rendered {name} committed")
    assert committed.read_text() == render(get_registry().table(name), "markdown", root)


def _overridden_renders():
    import json
    from pathlib import Path
    manifest = Path(__file__).resolve().parents[1] / "results" / "tables" / "renders.json"
    return sorted(json.loads(manifest.read_text()).items()) if manifest.exists() else []


@pytest.mark.parametrize("file, how", _overridden_renders())
def test_committed_tables_of_reduced_runs_come_from_committed_records(file, how):
    """Tables of runs at a non-default config (``bench table NAME --set ...``), listed in renders.json with
    their table and settings, are what the command renders from results/runs/."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "results"
    text = render(get_registry().table(how["table"]), "markdown", root, how["set"])
    assert (root / "tables" / file).read_text() == text


def test_a_cell_stored_twice_counts_once(digits_table, results_dir):
    import json
    [record] = run_grid([Cell("itq", "digits", 16, 0)], results_dir=results_dir, log=lambda s: None)
    older = dict(record, run_id="older", created="2000-01-01T00:00:00+0000",
                 metrics=dict(record["metrics"], map=0.0))
    (results_dir / "runs" / "itq_older.json").write_text(json.dumps(older))
    mean, std, n, _ = row(build(digits_table, results_dir), "ITQ (ours)")[0]
    assert n == 1 and mean == pytest.approx(100 * record["metrics"]["map"])
    ours = next(line for line in render(digits_table, "markdown", results_dir).splitlines() if "ITQ (ours)" in line)
    assert f"{mean:.2f}" in ours and "±" not in ours  # one seed: no spread shown


def test_only_runs_of_todays_default_config_enter_a_table(digits_table, results_dir):
    """A run stored as default under an older default is history; a field added since (absent from the record,
    at a default that keeps the old behaviour) does not exclude a run."""
    import json
    [record] = run_grid([Cell("itq", "digits", 16, 0)], results_dir=results_dir, log=lambda s: None)
    older = dict(record, run_id="older", config={"n_iter": 10}, created="2000-01-01T00:00:00+0000",
                 metrics=dict(record["metrics"], map=0.0))
    (results_dir / "runs" / "itq_older.json").write_text(json.dumps(older))
    mean, _, n, _ = row(build(digits_table, results_dir), "ITQ (ours)")[0]
    assert n == 1 and mean == pytest.approx(100 * record["metrics"]["map"])  # the older default is left out

    from bench.results import is_current_default
    assert is_current_default(dict(record, config={})) and not is_current_default(older)
    assert not is_current_default(dict(record, config={"n_iter": 50, "removed_field": 1}))


def test_a_field_added_with_a_new_default_reads_older_runs_at_the_value_they_used(results_dir, monkeypatch):
    """A record made before a field existed lacks it; when the field's default is not what those runs did, the
    method's ``former_defaults`` says what they did, and the run is placed there, not at today's default."""
    from baselines.itq import ITQ
    from bench.results import config_overrides
    [record] = run_grid([Cell("itq", "digits", 16, 0)], results_dir=results_dir, log=lambda s: None)
    older = dict(record, config={k: v for k, v in record["config"].items() if k != "n_iter"})
    assert config_overrides(older) == {}  # no former value named: read at the current default
    monkeypatch.setattr(ITQ, "former_defaults", {"n_iter": 10})
    assert config_overrides(older) == {"n_iter": 10}
    assert config_overrides(record) == {}  # a record that has the field is read as stored


def test_a_rows_own_setting_wins_over_the_tables(digits_table, results_dir):
    """A row with its own ``set`` (an ablation) keeps its runs when the table asks for another value of the same
    field, whether the table names the method (``itq.n_iter``) or not."""
    spec = dataclasses.replace(digits_table, rows=digits_table.rows + (
        {"method": "itq", "label": "ITQ, 10 iterations", "published": {}, "set": {"n_iter": 10}},))
    [record] = run_grid([Cell("itq", "digits", 16, 0, overrides=(("n_iter", "10"),))], results_dir=results_dir,
                        log=lambda s: None)
    for table_wide in ({"itq.n_iter": 20}, {"n_iter": 20}):
        table = build(spec, results_dir, table_wide)
        mean, _, n, _ = row(table, "ITQ, 10 iterations (ours)")[0]
        assert n == 1 and mean == pytest.approx(100 * record["metrics"]["map"])
        assert row(table, "ITQ (ours)")[0] is None  # no run at n_iter=20
