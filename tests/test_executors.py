"""Executors and ``bench reproduce``: every cell of a table, failures isolated, no cell computed twice, on this
process and on a real local Ray (``slow``: a Ray start takes seconds)."""

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.executors import execute, plans_of
from bench.registry import get_registry
from bench.reproduce import needed, reproduce
from bench.results import read_records
from bench.runner import Cell

TESTS = Path(__file__).resolve().parent
QUIET = {"log": lambda line: None}


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """The ``probe`` plugin (tests/executor_doubles.py) installed as a package would be: an entry point on the
    path of this process, of its subprocesses and of Ray's workers."""
    site = tmp_path / "site"
    info = site / "executor_doubles-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: executor_doubles\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[bench]\nexecutor_doubles = executor_doubles\n")
    path = os.pathsep.join([str(site), str(TESTS), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.syspath_prepend(str(site))
    get_registry.cache_clear()
    yield tmp_path
    get_registry.cache_clear()


def probe_cells(seeds, **config) -> list[Cell]:
    sets = tuple((k, str(v)) for k, v in config.items())
    return [Cell("probe", "digits", 8, s, overrides=sets) for s in seeds]


def fits_logged(log: Path) -> list[tuple[int, int]]:
    return [tuple(map(int, line.split()[:2])) for line in log.read_text().splitlines()] if log.exists() else []


# ------------------------------------------------------------------------------------------------- local


def test_a_failing_cell_leaves_the_others_stored_and_is_listed(probe, results_dir, capsys):
    log = probe / "fits.log"
    outcomes = execute(plans_of(probe_cells(range(3), log=log, fail_seed=1)), results_dir=results_dir, **QUIET)
    assert [o.status for o in outcomes] == ["ran", "failed", "ran"]
    assert outcomes[1].error == "RuntimeError: probe fails at seed 1"
    assert sorted(r["seed"] for r in read_records(results_dir)) == [0, 2]
    args = ["run", "--method", "probe", "--bits", "8", "--seeds", "0", "1", "2", "--results", str(results_dir)]
    assert main([*args, "--set", f"log={log}", "--set", "fail_seed=1", "--keep-going"]) == 1
    err = capsys.readouterr().err
    assert "1 of 3 cells failed" in err and "seed 1: FAILED: RuntimeError: probe fails at seed 1" in err
    assert fits_logged(log) == [(0, 8), (1, 8), (2, 8), (1, 8)]  # the second run retried only the failed cell


def test_without_keep_going_the_first_failure_stops_the_run_in_one_line(probe, results_dir, capsys):
    args = ["run", "--method", "probe", "--bits", "8", "--seeds", "1", "2", "--results", str(results_dir)]
    assert main([*args, "--set", "fail_seed=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "bench: error: probe on digits, 8 bits, seed 1: RuntimeError: probe fails at seed 1"
    assert read_records(results_dir) == []


def test_two_drivers_compute_each_cell_once(probe, results_dir):
    """Two processes given overlapping cells (each fit takes a second): every cell is computed by one of them,
    the other waits for its lock and finds the record."""
    log = probe / "fits.log"
    args = [sys.executable, "-m", "bench.cli", "run", "--method", "probe", "--bits", "8", "--results"]
    sets = ["--set", f"log={log}", "--set", "sleep=1"]
    procs = [
        subprocess.Popen([*args, str(results_dir), *sets, "--seeds", *seeds], stderr=subprocess.PIPE, text=True)
        for seeds in (["0", "1", "2"], ["2", "1", "0"])
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    assert sorted(fits_logged(log)) == [(0, 8), (1, 8), (2, 8)]
    assert sorted(r["seed"] for r in read_records(results_dir)) == [0, 1, 2]


def test_a_dead_driver_s_lock_is_taken_over(probe, results_dir):
    """A driver killed while it held a cell's lock: the operating system frees the lock with the process, so
    the next driver runs the cell at once."""
    [plan] = plans_of(probe_cells([0]))
    lock = results_dir / ".locks" / f"{plan.record_path(results_dir).stem}.lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import filelock, time; filelock.FileLock({str(lock)!r}).acquire(); print(1); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "1"  # it holds the lock
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    t = time.perf_counter()
    [outcome] = execute([plan], results_dir=results_dir, **QUIET)
    assert outcome.status == "ran" and time.perf_counter() - t < 60


# ------------------------------------------------------------------------------------------------ reproduce


def digits_table(monkeypatch):
    """dizaji2018-table1 on digits: its ITQ and LSH rows and a row the harness does not run."""
    spec = get_registry().table("dizaji2018-table1")
    by_label = {r["label"]: r for r in spec.rows}
    keep = [by_label["ITQ"], by_label["LSH"], {"method": "depict", "label": "DEPICT"}]
    block = {"label": "Digits", "protocol": "digits", "input": "pixels", "metrics": ["map"], "paper_setup": "-"}
    spec = dataclasses.replace(spec, name="digits-table", blocks=(block,), rows=tuple(keep), bits=(8, 16))
    monkeypatch.setitem(get_registry().tables, spec.name, spec)
    return spec


def test_reproduce_lists_fills_and_renders_a_table(monkeypatch, results_dir, tmp_path, capsys):
    spec = digits_table(monkeypatch)
    assert main(["reproduce", spec.name, "--seeds", "0", "1", "--results", str(results_dir), "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert "8 cells: 0 stored, 8 missing" in listed and "DEPICT" not in listed
    assert not results_dir.exists()  # a dry run stores nothing
    out = tmp_path / "tables"
    assert reproduce(spec.name, seeds=(0,), results_dir=results_dir, out_dir=out, log=print, cell_log=print) == 0
    text = capsys.readouterr().out
    assert "4 cells: 0 stored, 4 missing" in text and "[4/4] " in text
    assert "itq on digits, 16 bits, seed 0: mAP" in text and "lsh on digits, 8 bits, seed 0: mAP" in text
    md = (out / "digits-table.md").read_text()
    assert "Missing" not in md and (out / "digits-table.tex").exists()
    records = read_records(results_dir)
    itq16 = next(r for r in records if r["method"] == "itq" and r["n_bits"] == 16)
    assert f"{100 * itq16['metrics']['map']:.2f}" in md
    # a second seed: the first is stored, the table renders with what exists and says what is missing
    entries = needed(spec, results_dir, seeds=(0, 1))
    assert [e.stored for e in entries].count(True) == 4
    assert all(e.estimate_s is not None for e in entries)  # from the stored runs of the same method
    assert reproduce(spec.name, seeds=(0, 1), results_dir=results_dir, out_dir=out, dry_run=True, log=print) == 0
    assert "8 cells: 4 stored, 4 missing; estimated" in capsys.readouterr().out


def test_reproduce_refuses_bad_rows_bits_and_executors(monkeypatch, results_dir, capsys):
    spec = digits_table(monkeypatch)
    for args, message in (
        (["--rows", "ITK"], "digits-table has no row 'ITK' (choices: ITQ, LSH, DEPICT)"),
        (["--bits", "32"], "digits-table has no 32-bit columns (choices: 8, 16)"),
        (["--executor", "spark"], "unknown executor 'spark'"),
        (["--address", "auto"], "--address and --gpus-per-cell are options of --executor ray"),
    ):
        assert main(["reproduce", spec.name, "--results", str(results_dir), *args]) == 2
        assert message in capsys.readouterr().err
    assert not results_dir.exists()


# --------------------------------------------------------------------------------------------------- ray


@pytest.fixture
def local_ray(probe):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_gives_the_local_executor_s_run_ids_and_metrics(local_ray, tmp_path):
    cells = [Cell(m, "digits", b, 0) for m in ("itq", "lsh") for b in (8, 16)]
    local = execute(plans_of(cells), results_dir=tmp_path / "local", **QUIET)
    on_ray = execute(plans_of(cells), results_dir=tmp_path / "ray", executor="ray", **QUIET)
    assert [o.status for o in on_ray] == ["ran"] * 4
    assert [o.record["run_id"] for o in on_ray] == [o.record["run_id"] for o in local]
    assert [o.record["metrics"] for o in on_ray] == [o.record["metrics"] for o in local]
    assert sorted(p.name for p in (tmp_path / "ray" / "runs").iterdir()) == sorted(
        p.name for p in (tmp_path / "local" / "runs").iterdir()
    )


@pytest.mark.slow
def test_ray_isolates_a_failure_and_retries_a_killed_worker_once(local_ray, probe, results_dir):
    log, marker = probe / "fits.log", probe / "died"
    cells = probe_cells(range(4), log=log, fail_seed=1) + probe_cells([7], log=log, die_marker=marker)
    outcomes = execute(plans_of(cells), results_dir=results_dir, executor="ray", **QUIET)
    assert [o.status for o in outcomes] == ["ran", "failed", "ran", "ran", "ran"]
    assert outcomes[1].error == "RuntimeError: probe fails at seed 1"
    assert marker.exists() and fits_logged(log).count((7, 8)) == 2  # killed mid-fit, then retried once
    records = read_records(results_dir)
    assert sorted(r["seed"] for r in records) == [0, 2, 3, 7]  # one record each, none partial
    assert not [p for p in (results_dir / "runs").iterdir() if p.name.startswith(".tmp")]


@pytest.mark.slow
def test_a_ray_driver_and_a_local_driver_compute_each_cell_once(local_ray, probe, results_dir):
    log = probe / "fits.log"
    other = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.cli",
            "run",
            "--method",
            "probe",
            "--bits",
            "8",
            "--seeds",
            "3",
            "2",
            "1",
            "0",
            "--set",
            f"log={log}",
            "--set",
            "sleep=1",
            "--results",
            str(results_dir),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    outcomes = execute(
        plans_of(probe_cells(range(4), log=log, sleep=1)), results_dir=results_dir, executor="ray", **QUIET
    )
    assert other.wait(timeout=300) == 0, other.stderr.read()
    assert {o.status for o in outcomes} <= {"ran", "stored"}
    assert sorted(fits_logged(log)) == [(s, 8) for s in range(4)]
    assert sorted(r["seed"] for r in read_records(results_dir)) == [0, 1, 2, 3]
