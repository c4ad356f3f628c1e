"""The modern deep-hashing tables: the methods' own published numbers (modern-deep) and our reduced-budget
comparisons (modern-deep-reduced, modern-unsupervised-reduced), as specs every other part of the harness reads."""

import math

import pytest

from bench import recipes
from bench.cli import main
from bench.data import VIEWS
from bench.registry import get_registry
from bench.tables import PUBLISHED, TableSpec, build

NAMES = {"modern-deep": "paper", "modern-deep-reduced": "recipes", "modern-unsupervised-reduced": "recipes"}


@pytest.fixture(scope="module", params=sorted(NAMES))
def spec(request):
    return TableSpec.from_file(PUBLISHED / f"{request.param}.json")


def runnable_rows(spec):
    return [row for row in spec.rows if not row.get("published_only")]


def test_a_spec_loads_under_its_file_name_and_kind(spec):
    assert NAMES[spec.name] == spec.kind
    assert spec.bits == tuple(sorted(set(spec.bits))) and all(isinstance(n, int) and 1 <= n <= 1024 for n in spec.bits)
    assert len({row["label"] for row in spec.rows}) == len(spec.rows), "two rows share a label"
    assert len({block["label"] for block in spec.blocks}) == len(spec.blocks), "two blocks share a label"
    assert get_registry().table(spec.name).rows == spec.rows  # the registry serves the same file


def test_every_row_names_a_registered_method_and_a_recipe_it_declares(spec):
    methods = get_registry().methods
    missing = sorted({row["method"] for row in runnable_rows(spec)} - set(methods))
    assert not missing, f"{spec.name}: methods not registered: {missing}"
    for row in runnable_rows(spec):
        cls = methods[row["method"]]
        recipe = row.get("recipe", recipes.DEFAULT)
        assert recipe == recipes.DEFAULT or recipe in cls.recipes, f"{row['label']}: {cls.name} has no {recipe!r}"
        for n_bits in spec.bits:  # what `bench table` and `bench reproduce` resolve for the row
            assert recipes.hash_of(cls, n_bits, recipe, row.get("set"))


def test_every_block_names_a_registered_protocol_and_metrics_it_scores(spec):
    protocols = get_registry().protocols
    for block in spec.blocks:
        assert block["protocol"] in protocols, f"{spec.name}: protocol {block['protocol']!r} is not registered"
        protocol = protocols[block["protocol"]]
        assert protocol.task == "retrieval"
        scored = {"map"} | {f"map@{k}" for k in protocol.topk}
        assert set(block["metrics"]) <= scored, f"{block['label']}: {block['metrics']} not all in {sorted(scored)}"
        assert block["input"] in VIEWS and block["paper_setup"].strip()


def test_every_row_runs_on_a_view_its_method_takes(spec):
    """A deep method gets images; a vector method never gets uint8 images (its block's pixels or GIST)."""
    methods = get_registry().methods
    for row in runnable_rows(spec):
        cls = methods[row["method"]]
        for block in spec.blocks:
            view = row.get("input", block["input"])
            assert view in VIEWS
            assert (view == "images") == (cls.input == "images"), f"{row['label']} on {block['label']}: view {view}"


def published_cells(spec):
    """(row label, protocol, metric, index, value) of every published entry of the spec."""
    return [
        (row["label"], protocol, metric, i, value)
        for row in spec.rows
        for protocol, by_metric in row.get("published", {}).items()
        for metric, values in by_metric.items()
        for i, value in enumerate(values)
    ]


def test_every_published_number_is_a_percentage_at_a_column_the_table_shows(spec):
    blocks = {block["protocol"]: block for block in spec.blocks}
    for row in spec.rows:
        for protocol, by_metric in row.get("published", {}).items():
            assert protocol in blocks, f"{row['label']}: published for {protocol!r}, which no block shows"
            for metric, values in by_metric.items():
                assert metric in blocks[protocol]["metrics"], f"{row['label']}: {metric!r} not shown on {protocol}"
                assert len(values) == len(spec.bits), f"{row['label']} {protocol} {metric}: one value per code length"
    for label, protocol, metric, i, value in published_cells(spec):
        if value is not None:
            assert isinstance(value, float) and math.isfinite(value), (label, protocol, metric, i, value)
            assert 0.0 <= value <= 100.0, (label, protocol, metric, spec.bits[i], value)


def test_the_reduced_tables_publish_nothing_and_say_what_reduced_means():
    for name in ("modern-deep-reduced", "modern-unsupervised-reduced"):
        spec = TableSpec.from_file(PUBLISHED / f"{name}.json")
        assert not [c for c in published_cells(spec) if c[-1] is not None], f"{name} shows published numbers"
        assert any("Reduced" in note for note in spec.notes) and any("not the papers'" in note for note in spec.notes)


def test_every_paper_row_with_a_number_has_its_source_line():
    spec = TableSpec.from_file(PUBLISHED / "modern-deep.json")
    with_numbers = {label for label, *_, value in published_cells(spec) if value is not None}
    assert with_numbers, "the paper table shows no published number at all"
    for row in spec.rows:
        lines = [note for note in spec.notes if note.startswith(f"{row['label']}: ")]
        assert len(lines) == 1, f"{row['label']}: {len(lines)} source lines"
        if row["label"] in with_numbers:
            assert "20" in lines[0] and ("Table" in lines[0] or "README" in lines[0] or "issue" in lines[0])


def test_the_paper_table_renders_on_an_empty_results_folder(capsys, results_dir):
    code = main(["table", "modern-deep", "--format", "markdown", "--results", str(results_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    spec = get_registry().table("modern-deep")
    for block in spec.blocks:
        assert f"{block['label']}: protocol {block['protocol']}" in out and "no runs yet" in out
    assert "| CSQ " in out and "– (85.10)" in out and "– (59.50)" in out  # papers' numbers beside no runs of ours
    table = build(spec, results_dir)
    shown = sum(p is not None for r in table["rows"] for p in r["paper"])
    assert shown == sum(v is not None for *_, v in published_cells(spec))  # every published number has a column
    assert all(o is None for r in table["rows"] for o in r["ours"])


@pytest.mark.parametrize("name", ["modern-deep-reduced", "modern-unsupervised-reduced"])
def test_the_reduced_tables_render_with_each_rows_recipe(capsys, results_dir, name):
    code = main(["table", name, "--format", "markdown", "--results", str(results_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    for row in get_registry().table(name).rows:
        assert f"{row['label']}: {row['method']} recipe {row.get('recipe', recipes.DEFAULT)!r}" in out


@pytest.mark.parametrize("path", sorted(PUBLISHED.glob("*.json")), ids=lambda p: p.stem)
def test_every_table_publishes_only_numbers_a_column_shows(path):
    """A published number under a metric its block does not show is never rendered (it reads as missing)."""
    spec = TableSpec.from_file(path)
    shown = {block["protocol"]: set(block["metrics"]) for block in spec.blocks}
    for row in spec.rows:
        for protocol, by_metric in row.get("published", {}).items():
            assert set(by_metric) <= shown.get(protocol, set()), f"{row['label']}: {protocol} {sorted(by_metric)}"
