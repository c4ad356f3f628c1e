"""Running, storing and loading: records, skipping, atomicity, concurrency, and what a bad run leaves behind."""

import dataclasses
import errno
import hashlib
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import Method, binarize, executors, results
from bench.deep import Checkpoint
from bench.errors import BenchError
from bench.executors import execute, run_grid
from bench.recipes import config_hash
from bench.registry import get_registry
from bench.results import SCHEMA_VERSION, identity_of, load_results, read_records, run_id, write_record
from bench.runner import Cell, checkpoint_path, code_version, prepare, run_cell

KEYS = {
    "schema_version",
    "run_id",
    "method",
    "config",
    "config_hash",
    "evaluation",
    "recipe",
    "overrides",
    "protocol",
    "input",
    "n_bits",
    "seed",
    "metrics",
    "semantics",
    "timings",
    "environment",
    "curves",
    "counts",
    "sizes",
    "created",
}


def test_record_holds_everything_and_loads_into_one_frame(results_dir):
    records = run_grid([Cell("itq", "digits", b, 0) for b in (8, 16)], results_dir=results_dir, log=lambda s: None)
    stored = read_records(results_dir)
    assert len(stored) == 2 and KEYS <= set(stored[0])
    r = stored[0]
    assert r["schema_version"] == SCHEMA_VERSION and r["config"] == {"n_iter": 50}
    assert r["config_hash"] == config_hash(r["config"]) and r["run_id"] == run_id(identity_of(r))
    assert r["evaluation"] == {"topk": [1000], "tie_policy": "index"}
    assert r["semantics"]["tie_policy"] == "index" and "AP 0" in r["semantics"]["zero_relevant"]
    assert set(r["timings"]) == {"fit_s", "encode_s", "evaluate_s"}
    assert {"torch", "numpy"} <= set(r["environment"]["packages"]) and r["environment"]["device"] == "cpu"
    assert r["sizes"] == {"query": 100, "database": 1697, "train": 1697}
    assert len(r["curves"]["pr_radius"]["precision"]) == r["n_bits"] + 1
    frame = load_results(results_dir)
    assert set(frame["n_bits"]) == {8, 16}
    assert {"map", "map@1000", "map_tie_aware", "p@h<=2"} <= set(frame["metric"])
    maps = frame[frame.metric == "map"].set_index("n_bits")["value"]
    assert [maps[x["n_bits"]] for x in records] == pytest.approx([x["metrics"]["map"] for x in records])


def test_a_recipe_and_the_same_fields_by_set_are_one_run(results_dir, monkeypatch):
    """A run is what it ran: asked for by a recipe or by --set, the same config is the same cell."""
    from baselines.itq import ITQ

    monkeypatch.setattr(ITQ, "recipes", {"ten": {"n_iter": 10}})
    by_recipe, ran = run_cell(Cell("itq", "digits", 8, 0, recipe="ten"), results_dir=results_dir)
    by_set, ran_again = run_cell(Cell("itq", "digits", 8, 0, overrides=(("n_iter", "10"),)), results_dir=results_dir)
    assert ran and not ran_again and by_set["run_id"] == by_recipe["run_id"] and by_recipe["recipe"] == "ten"
    with pytest.raises(BenchError, match="recipe of itq.*'eleven'.*default, ten"):
        run_cell(Cell("itq", "digits", 8, 0, recipe="eleven"), results_dir=results_dir)


def _as_v1(record: dict, config: dict) -> dict:
    """A record as schema 1 stored it: the config as the method had it then, no hash, no evaluation field."""
    old = {k: v for k, v in record.items() if k not in ("config_hash", "evaluation", "recipe", "overrides")}
    return old | {"schema_version": 1, "config": config, "config_is_default": True, "run_id": "v1"}


def test_migration_completes_resolves_and_renames_schema_1_records(results_dir, capsys):
    from bench.cli import main
    from bench.results import record_path

    [itq] = run_grid([Cell("itq", "digits", 8, 0)], results_dir=results_dir, log=lambda s: None)
    runs = results_dir / "runs"
    (runs / "itq_v1.json").write_text(json.dumps(_as_v1(itq, itq["config"])))
    default = json.loads(json.dumps(dataclasses.asdict(get_registry().method("hashgan-dizaji").Config())))
    # a 64-bit run made before data_init, collab_decay_start and weights_for_bits existed ...
    before_fields = {
        k: v for k, v in default.items() if k not in ("data_init", "collab_decay_start", "weights_for_bits")
    }
    gan = dict(itq, method="hashgan-dizaji", n_bits=64, input="images")
    (runs / "gan_a.json").write_text(json.dumps(_as_v1(gan, before_fields)))
    # ... and one of today's default, whose weights scale with the code length
    (runs / "gan_b.json").write_text(json.dumps(_as_v1(dict(gan, created="2099-01-01T00:00:00+0000"), default)))
    with pytest.warns(UserWarning, match="gan_a.json has schema version 1"):
        in_memory = {r["created"]: r for r in read_records(results_dir) if r["method"] == "hashgan-dizaji"}
    assert main(["migrate", "--results", str(results_dir)]) == 0 and "3 record(s)" in capsys.readouterr().out
    assert main(["migrate", "--results", str(results_dir)]) == 0 and "0 record(s)" in capsys.readouterr().out
    stored = read_records(results_dir)  # no warning now: every file is schema 2
    assert len(stored) == 4 and {r["schema_version"] for r in stored} == {SCHEMA_VERSION}
    # the schema-1 copy of the itq run is the same cell: the same run id, its file kept beside the other's
    assert [r["run_id"] for r in stored if r["method"] == "itq"] == [itq["run_id"]] * 2
    assert len(list(runs.glob(f"itq_*{itq['run_id']}*.json"))) == 2
    assert {record_path(results_dir, r).name for r in stored if r["method"] != "itq"} <= {
        p.name for p in runs.iterdir()
    }
    old, new = sorted((r for r in stored if r["method"] == "hashgan-dizaji"), key=lambda r: r["created"])
    assert old["config"]["data_init"] is False and old["config"]["collab_decay_start"] == 1.0
    assert old["config"]["w_entropy"] == default["w_entropy"] and old["config"]["weights_for_bits"] == 0
    assert new["config"]["w_entropy"] == pytest.approx(default["w_entropy"] / 2)  # resolved at 64 bits
    assert new["config"]["weights_for_bits"] == 0 and new["config"]["data_init"] is True
    assert in_memory[new["created"]]["config"] == new["config"]


def test_stored_cells_are_skipped_unless_forced(results_dir):
    cell = Cell("lsh", "digits", 16, 1)
    first, ran = run_cell(cell, results_dir=results_dir)
    again, ran_again = run_cell(cell, results_dir=results_dir)
    assert ran and not ran_again and again == first
    forced, ran_forced = run_cell(cell, results_dir=results_dir, force=True)
    assert ran_forced and forced["metrics"] == first["metrics"] and forced["created"] >= first["created"]


@pytest.mark.slow
def test_an_interrupted_deep_run_resumes_and_force_trains_from_scratch(results_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HASHBENCH_CACHE", str(tmp_path / "cache"))  # the training checkpoint goes there
    cell = Cell("hashgan-dizaji", "digits", 8, 0, overrides=(("epochs", 1), ("batch_size", 64)))
    fresh, _ = run_cell(cell, results_dir=results_dir)
    prepare(cell).record_path(results_dir).unlink()  # killed before its record was written: the checkpoint is left
    resumed, _ = run_cell(cell, results_dir=results_dir)  # resumes at the checkpoint's last epoch
    forced, _ = run_cell(cell, results_dir=results_dir, force=True)
    assert fresh["training"]["resumed_from_epoch"] == 0 and "fit_s" in fresh["timings"]
    assert resumed["training"]["resumed_from_epoch"] == 1
    assert "fit_s" not in resumed["timings"] and "fit_resumed_s" in resumed["timings"]
    assert resumed["metrics"]["map"] == pytest.approx(fresh["metrics"]["map"])  # same model, restored
    assert forced["training"]["resumed_from_epoch"] == 0 and "fit_s" in forced["timings"]
    assert forced["metrics"]["map"] == pytest.approx(fresh["metrics"]["map"])  # trained again, to the same model


def test_a_checkpoint_is_keyed_by_cell_and_method_code_and_force_discards_it(results_dir, tmp_path, monkeypatch):
    """dh (a uses_validation method) with its fit replaced by one that notes whether a checkpoint awaits it."""
    from baselines.dh import DH

    monkeypatch.setenv("HASHBENCH_CACHE", str(tmp_path / "cache"))
    awaiting = []

    def noting_fit(self, x, y=None, context=None):
        awaiting.append(context.checkpoint.exists())
        raise BenchError("fit stopped by the test")

    monkeypatch.setattr(DH, "fit", noting_fit)
    plan = prepare(Cell("dh", "digits", 8, 0))
    path = checkpoint_path(plan)
    source = Path(inspect.getsourcefile(DH)).read_bytes()
    assert path.name == f"{plan.record_path(Path()).stem}-code{hashlib.sha1(source).hexdigest()[:10]}.pt"
    assert code_version(DH) != code_version(get_registry().method("hashgan-dizaji"))
    for force in (False, True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"an interrupted run's state")
        (outcome,) = execute([plan], force=force, results_dir=results_dir, log=lambda s: None)
        assert outcome.status == "failed" and "fit stopped by the test" in outcome.error
    assert awaiting == [True, False]  # resumed from it; --force: removed before the fit


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04 truncated zip"])
def test_a_corrupt_checkpoint_is_warned_about_by_path_and_discarded(tmp_path, content):
    path = tmp_path / "cell.pt"
    path.write_bytes(content)
    with pytest.warns(UserWarning, match=f"discarding unusable checkpoint {path}"):
        assert Checkpoint(path).load("cpu") is None
    assert not path.exists()


LSH = Cell("lsh", "digits", 8, 0)
UNUSABLE = {
    "truncated": '{"schema_version": 2, "run_id": "ab',
    "another schema": json.dumps({"schema_version": 99, "run_id": "x"}),
    "not a record": "[1, 2]",
    "a field missing": json.dumps({"schema_version": SCHEMA_VERSION, "run_id": "x"}),
}


@pytest.mark.parametrize("content", UNUSABLE.values(), ids=UNUSABLE.keys())
def test_an_unusable_stored_record_is_warned_about_and_its_cell_runs_again(results_dir, content):
    (first,) = run_grid([LSH], results_dir=results_dir, log=lambda s: None)
    path = prepare(LSH).record_path(results_dir)
    path.write_text(content)
    with pytest.warns(UserWarning, match=f"{path.name}: unusable stored record"):
        (again,) = run_grid([LSH], results_dir=results_dir, log=lambda s: None)
    assert again["created"] >= first["created"] and again["metrics"] == first["metrics"]
    assert json.loads(path.read_text()) == again  # replaced


def test_the_tables_warn_about_and_drop_the_record_the_runner_would_rerun(results_dir):
    run_grid([LSH, dataclasses.replace(LSH, n_bits=16)], results_dir=results_dir, log=lambda s: None)
    path = prepare(LSH).record_path(results_dir)
    path.write_text(json.dumps(json.loads(path.read_text()) | {"schema_version": 99}))
    with pytest.warns(UserWarning, match=f"skipping unusable run record .*{path.name}: schema version 99"):
        assert [r["n_bits"] for r in read_records(results_dir)] == [16]


def test_a_results_path_that_is_a_file_is_refused_before_any_cell_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(executors, "compute_record", _no_fit)
    path = tmp_path / "results"
    path.write_text("a file, not a folder")
    with pytest.raises(BenchError, match=f"results folder {path} cannot take records .*not a folder"):
        run_grid([LSH], results_dir=path, log=lambda s: None)
    assert path.read_text() == "a file, not a folder"


def test_a_read_only_results_folder_is_refused_before_any_cell_runs(results_dir, monkeypatch):
    monkeypatch.setattr(executors, "compute_record", _no_fit)
    results_dir.mkdir()
    results_dir.chmod(0o500)
    try:
        if os.access(results_dir, os.W_OK):
            pytest.skip("running as root: a read-only mode does not stop writes")
        with pytest.raises(BenchError, match="cannot take records \\(Permission denied\\)"):
            run_grid([LSH], results_dir=results_dir, log=lambda s: None)
    finally:
        results_dir.chmod(0o700)
    assert os.listdir(results_dir) == []


def test_a_full_disk_is_refused_before_any_cell_runs(results_dir, monkeypatch):
    monkeypatch.setattr(executors, "compute_record", _no_fit)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(BenchError, match=f"cannot take records \\({os.strerror(errno.ENOSPC)}\\)"):
        run_grid([LSH], results_dir=results_dir, log=lambda s: None)
    assert not results_dir.exists()  # the probe removed, and the folders made for it


def test_a_record_that_cannot_be_written_at_the_end_is_kept_in_the_cache_and_named(results_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HASHBENCH_CACHE", str(tmp_path / "cache"))
    write = results.write_record
    attempts = []

    def fails_once(path, record):
        attempts.append(path)
        if len(attempts) == 1:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        write(path, record)

    monkeypatch.setattr(results, "write_record", fails_once)
    (outcome,) = execute([prepare(LSH)], results_dir=results_dir, log=lambda s: None)
    fallback = tmp_path / "cache" / "unsaved-records" / prepare(LSH).record_path(results_dir).name
    assert outcome.status == "failed" and outcome.error.count("\n") == 0
    assert f"saved at {fallback} instead" in outcome.error and os.strerror(errno.EROFS) in outcome.error
    assert json.loads(fallback.read_text())["run_id"] == prepare(LSH).run_id
    assert not prepare(LSH).record_path(results_dir).exists()


def _no_fit(*args, **kwargs):
    raise AssertionError("a cell ran although the results folder cannot take its record")


def test_a_killed_write_leaves_no_partial_record(results_dir, monkeypatch):
    path = results_dir / "runs" / "x.json"

    def die(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", die)
    with pytest.raises(KeyboardInterrupt):
        write_record(path, {"schema_version": SCHEMA_VERSION})
    assert list((results_dir / "runs").iterdir()) == []


def test_two_processes_on_one_results_folder_lose_nothing(results_dir):
    args = [
        sys.executable,
        "-m",
        "bench.cli",
        "run",
        "--dataset",
        "digits",
        "--bits",
        "8",
        "16",
        "24",
        "--results",
        str(results_dir),
    ]
    procs = [
        subprocess.Popen(
            args + ["--method", "lsh", "--method", "pcah", "--seeds", *seeds],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for seeds in (["0", "1"], ["1", "2"])
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    records = read_records(results_dir)
    cells = {(r["method"], r["n_bits"], r["seed"]) for r in records}
    assert len(cells) == 2 * 3 * 3  # every cell of the union, each once
    assert len(records) == len(cells)
    assert not [p for p in (results_dir / "runs").iterdir() if p.name.startswith(".tmp")]


class Diverges(Method):
    name = "diverges"
    paper = "test double"
    supervision = "none"
    input = "vectors"

    @dataclasses.dataclass(frozen=True)
    class Config:
        pass

    def fit(self, x, y=None, context=None):
        self.w_ = torch.full((x.shape[1], self.n_bits), float("nan"))
        return self

    def encode(self, x):
        return binarize(x @ self.w_)


class WrongShape(Diverges):
    name = "wrong-shape"

    def encode(self, x):
        return torch.ones(x.shape[0], self.n_bits + 1, dtype=torch.int8)


class NotBinary(Diverges):
    name = "not-binary"

    def encode(self, x):
        return torch.zeros(x.shape[0], self.n_bits, dtype=torch.int8)


class IntegerOutputs(Diverges):
    name = "integer-outputs"
    ranking_distance = "inner_product"  # promises real-valued outputs

    def encode(self, x):
        return torch.ones(x.shape[0], self.n_bits, dtype=torch.int8)


@pytest.mark.parametrize(
    "cls,message",
    [
        (Diverges, "NaN or inf"),
        (WrongShape, "shape"),
        (NotBinary, "other than -1/\\+1"),
        (IntegerOutputs, "expected a float"),
    ],
)
def test_a_bad_method_output_is_an_error_and_stores_nothing(cls, message, results_dir, monkeypatch):
    monkeypatch.setitem(get_registry().methods, cls.name, cls)
    with pytest.raises(BenchError, match=message):
        run_cell(Cell(cls.name, "digits", 8, 0), results_dir=results_dir)
    assert not (results_dir / "runs").exists() or not os.listdir(results_dir / "runs")


def test_a_bad_cell_fails_before_any_work(results_dir):
    with pytest.raises(BenchError, match="unknown --set key"):
        run_grid(
            [Cell("itq", "digits", 8, 0), Cell("lsh", "digits", 8, 0, overrides=(("n_iter", "3"),))],
            results_dir=results_dir,
            log=lambda s: None,
        )
    assert not (results_dir / "runs").exists()
