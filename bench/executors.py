"""Where the cells of a grid run: in this process (``local``, the default) or on a Ray cluster (``ray``).

Both executors share what matters to a results folder:
- **No duplicate work.** A cell is run only by the driver holding its lock (``results/.locks/RUN.lock``, a
  ``filelock`` on the operating system's file lock, which dies with its process: a crashed driver's lock is free
  again at once). A driver that finds a cell locked runs its other cells first, then waits for the lock and skips
  the cell if the other driver stored it.
- **Failure isolation.** A failing cell (divergence, out of memory, a missing data file, a bug in a plugin) is
  reported on one line and the others go on (``keep_going``); the summary lists every failed cell.
- **Only the driver writes.** Ray workers may run on machines that do not share the driver's filesystem, so a
  worker returns the finished record to the driver, which writes it atomically (``bench.results.write_record``).
  A worker killed mid-cell leaves nothing behind; Ray restarts it and retries the cell once.

On Ray, the cells of one protocol and input view go to long-lived workers (actors) that load that split once and
keep it on their device (``bench.data.load_split`` caches it per process), so a 48-cell table block loads its
data once per worker, not 48 times. Shallow methods ask a worker for one CPU; deep (image) methods for
``gpus_per_cell`` GPUs (default one) when the cluster has GPUs. What is serial: the driver's enumeration,
locking and writing (milliseconds per cell); everything else runs in the workers, so N GPUs run N deep cells at
once.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import tempfile
import time
from pathlib import Path

from bench import progress
from bench.codes import Codes, codes_path, save_codes
from bench.errors import BenchError, unknown
from bench.metrics import DISTANCES
from bench.results import check_writable, default_results_dir, store_record
from bench.runner import Cell, Plan, compute_record, prepare, read_stored

EXECUTORS = ("local", "ray")


@dataclasses.dataclass
class Outcome:
    plan: Plan
    status: str  # "ran", "stored" (found, not run) or "failed"
    record: dict | None = None
    error: str | None = None  # the failure's one line
    seconds: float = 0.0
    codes: Codes | None = None  # with --save-codes: the run's codes, packed, stored beside its record

    def line(self) -> str:
        label = self.plan.cell.label()
        if self.status == "failed":
            return f"{label}: FAILED: {self.error}"
        m = self.record["metrics"]
        score = f"mAP {m['map']:.4f}" if "map" in m else f"NMI {m['nmi']:.4f}, ACC {m['acc']:.4f}"
        return f"{label}: {score}  ({f'{self.seconds:.1f}s' if self.status == 'ran' else 'stored, skipped'})"


def one_line(error: BaseException) -> str:
    """A failure as one line: a BenchError's message as it is, anything else with its type."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text if isinstance(error, BenchError) else f"{type(error).__name__}: {text}"


def plans_of(cells: list[Cell]) -> list[Plan]:
    """Every cell resolved before any work (a bad cell fails first); cells that resolve to one run (k-means at
    several --bits) kept once."""
    unique = {}
    for cell in cells:
        plan = prepare(cell)
        unique.setdefault(plan.run_id, plan)
    return list(unique.values())


def run_grid(cells: list[Cell], *, log=print, keep_going: bool = False, **kwargs) -> list[dict]:
    """Run the cells (``execute``) and return their records, stored or freshly run. Without ``keep_going`` the
    first failure is raised; with it, failed cells are left out and listed by ``execute``'s outcomes."""
    outcomes = execute(plans_of(cells), log=log, keep_going=keep_going, **kwargs)
    return [o.record for o in outcomes if o.record is not None]


def execute(
    plans: list[Plan],
    *,
    executor: str = "local",
    address: str | None = None,
    gpus_per_cell: float | None = None,
    keep_going: bool = True,
    force: bool = False,
    save_codes: bool = False,
    results_dir=None,
    device: str | None = None,
    data_root=None,
    download: bool = False,
    log=print,
) -> list[Outcome]:
    """Run the plans not stored yet (all of them with ``force``, trained from scratch) on ``executor``, one
    outcome per plan in order. ``save_codes``: keep each run's codes beside its record (``bench.codes``); a stored
    run that kept none runs again. ``log`` gets one line per cell (a tqdm bar on a terminal when ``log`` is None).
    A results folder that cannot take records is refused before any cell runs."""
    if executor not in EXECUTORS:
        raise unknown("executor", executor, EXECUTORS)
    results_dir = Path(results_dir or default_results_dir())
    check_writable(results_dir)
    outcomes = {}
    todo = []
    reuse = _Reuse(results_dir, force, save_codes)
    for plan in plans:
        stored = reuse(plan)
        if stored is not None:
            outcomes[plan.run_id] = Outcome(plan, "stored", stored)
        else:
            todo.append(plan)
    report = Report(len(plans), log)
    for o in outcomes.values():
        report(o)
    options = {"device": device, "data_root": data_root, "download": download, "fresh": force, "keep_codes": save_codes}
    try:
        if executor == "local" or not todo:
            ran = _run_local(todo, results_dir, reuse, keep_going, options, report)
        else:
            ran = _run_ray(todo, results_dir, reuse, keep_going, options, report, address, gpus_per_cell)
    finally:
        report.close()
    outcomes.update((o.plan.run_id, o) for o in ran)
    return [outcomes[p.run_id] for p in plans]


class Report:
    """One line per finished cell, to ``log`` (or a progress bar over the cells when ``log`` is None)."""

    def __init__(self, total: int, log):
        self.log, self.total, self.done = log, total, 0
        self.bar = progress.CellProgress(total) if log is None else None

    def __call__(self, outcome: Outcome) -> None:
        self.done += 1
        line = f"[{self.done}/{self.total}] {outcome.line()}"
        if self.bar is not None:
            self.bar.finished(line)
        else:
            self.log(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def summary_of_failures(outcomes: list[Outcome]) -> str:
    failed = [o for o in outcomes if o.status == "failed"]
    return "\n".join([f"{len(failed)} of {len(outcomes)} cells failed:"] + [f"  {o.line()}" for o in failed])


# ------------------------------------------------------------------------------------------------- locks


@dataclasses.dataclass(frozen=True)
class _Reuse:
    """Which stored record stands for a plan, so that the plan is not run: none with ``force``; with
    ``save_codes``, only one whose codes were kept (where the run ranks by codes: not a clustering protocol nor
    real-valued outputs)."""

    results_dir: Path
    force: bool
    save_codes: bool

    def __call__(self, plan: Plan, *, just_stored: bool = False) -> dict | None:
        """``just_stored``: the record another driver stored while this one waited for the cell's lock, which
        counts even with ``force`` (the cell has just been run)."""
        if self.force and not just_stored:
            return None
        stored = read_stored(plan, self.results_dir)
        if stored is not None and self.save_codes and stored.get("distance") in DISTANCES:  # it has codes to keep
            return stored if codes_path(plan.record_path(self.results_dir)).exists() else None
        return stored


def _claim(plan: Plan, reuse: _Reuse, wait: bool):
    """(the cell's lock, now held, or None if another driver holds it and ``wait`` is False; the stored record
    that stands for the cell (``reuse``), or None). The caller releases the lock."""
    from filelock import FileLock, Timeout

    results_dir = reuse.results_dir
    locks = results_dir / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    lock = FileLock(locks / f"{plan.record_path(results_dir).stem}.lock")
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        return None, None
    return lock, reuse(plan, just_stored=wait)


def _in_turn(plans: list[Plan], reuse: _Reuse):
    """Each plan with its lock held, free ones first; those another driver is running come last, waited for.
    Yields (plan, lock, record that driver stored or None); the consumer releases each lock."""
    busy = []
    for plan in plans:
        lock, stored = _claim(plan, reuse, wait=False)
        if lock is None:
            busy.append(plan)
        else:
            yield plan, lock, stored
    for plan in busy:
        yield (plan, *_claim(plan, reuse, wait=True))


# ------------------------------------------------------------------------------------------------- local


def _run_local(plans, results_dir, reuse, keep_going, options, report) -> list[Outcome]:
    from bench.runner import resolve_device

    options = dict(options, device=resolve_device(options["device"]))
    outcomes = []
    for plan, lock, stored in _in_turn(plans, reuse):
        try:
            outcome = Outcome(plan, "stored", stored) if stored is not None else _compute(plan, options)
            if outcome.status == "ran":
                outcome = _store(outcome, results_dir)
        finally:
            lock.release()
        _record(outcome, outcomes, report, keep_going)
    return outcomes


def _record(outcome: Outcome, outcomes: list, report, keep_going: bool) -> None:
    """Report and keep a finished cell; without ``keep_going`` a failure is raised instead (its one line is
    then the command's error)."""
    if outcome.status == "failed" and not keep_going:
        raise BenchError(f"{outcome.plan.cell.label()}: {outcome.error}")
    report(outcome)
    outcomes.append(outcome)


def _store(outcome: Outcome, results_dir: Path) -> Outcome:
    """The ran outcome with its codes (if kept) and record written, or failed with the line saying why (and where
    the record went instead)."""
    path = outcome.plan.record_path(results_dir)
    try:
        if outcome.codes is not None:
            save_codes(path, outcome.codes)
        store_record(path, outcome.record)
    except OSError as error:  # the codes could not be written: the record is not stored without them
        return Outcome(
            outcome.plan, "failed", error=f"cannot write {codes_path(path)}: {error}", seconds=outcome.seconds
        )
    except BenchError as error:
        return Outcome(outcome.plan, "failed", error=str(error), seconds=outcome.seconds)
    return outcome


def _compute(plan: Plan, options: dict) -> Outcome:
    """The plan run to a record in this process, a failure caught as its one line (KeyboardInterrupt and the
    like pass through)."""
    t = time.perf_counter()
    with progress.reporting() as lines:
        try:
            record, codes = compute_record(plan, **options)
        except Exception as error:  # noqa: BLE001 (one failing cell must not stop the others)
            return Outcome(plan, "failed", error=one_line(error), seconds=time.perf_counter() - t)
        finally:
            lines.end()
    return Outcome(plan, "ran", record, seconds=time.perf_counter() - t, codes=codes)


# --------------------------------------------------------------------------------------------------- ray


class CellWorker:
    """A Ray actor for the cells of one protocol and input view: its process keeps their split loaded."""

    def __init__(self, options: dict):
        import torch

        # Ray sets OMP_NUM_THREADS to the CPUs it assigned a worker; torch's pool follows it, so workers that
        # share a machine do not oversubscribe its cores (which slows small ops many times over).
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS") or 1)))
        if options["device"] is None:  # a GPU only where Ray assigned one
            options = dict(options, device="cuda" if torch.cuda.is_available() else "cpu")
        self.options = options

    def run(self, cell: Cell) -> tuple:
        outcome = _compute(prepare(cell), self.options)
        return outcome.status, outcome.record, outcome.error, outcome.seconds, outcome.codes


def start_ray(address: str | None, num_cpus: int | None = None):
    try:
        import ray
    except ImportError:
        raise BenchError("--executor ray needs Ray: pip install 'hashbench[ray]'") from None
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address)
            else:  # a local Ray with this machine's CPUs and GPUs (or ``num_cpus``)
                ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise BenchError(f"cannot start or reach Ray at {address or 'a new local instance'}: {error}") from None
    return ray


def worker_resources(plan: Plan, cluster: dict, gpus_per_cell: float | None) -> dict:
    """What one cell asks a worker for: a GPU share for a method that wants one (``Method.needs_gpu``, by
    default the image methods) when the cluster has GPUs, else one CPU."""
    wants = plan.cls.needs_gpu if plan.cls.needs_gpu is not None else plan.cls.input == "images"
    if wants and cluster.get("GPU", 0) > 0:
        return {"num_cpus": 1, "num_gpus": 1.0 if gpus_per_cell is None else gpus_per_cell}
    return {"num_cpus": 1, "num_gpus": 0}


def _run_ray(plans, results_dir, reuse, keep_going, options, report, address, gpus_per_cell) -> list[Outcome]:
    ray = start_ray(address)
    cluster = ray.cluster_resources()
    worker = ray.remote(max_restarts=1, max_task_retries=1)(CellWorker)
    groups = collections.defaultdict(list)  # (protocol, view, resources) -> its plans
    for plan in plans:
        wanted = worker_resources(plan, cluster, gpus_per_cell)
        groups[(plan.protocol.name, plan.view, tuple(sorted(wanted.items())))].append(plan)
    idle = {}  # group -> its idle workers; each group gets a share of the cluster's slots for it
    for key, members in groups.items():
        wanted = dict(key[2])
        slots = cluster.get("GPU", 0) / wanted["num_gpus"] if wanted["num_gpus"] else cluster.get("CPU", 1)
        n = max(1, min(len(members), math.ceil(int(slots) * len(members) / len(plans))))
        idle[key] = [worker.options(**wanted).remote(options) for _ in range(n)]
    queues = {key: collections.deque(members) for key, members in groups.items()}
    key_of = {p.run_id: k for k, members in groups.items() for p in members}
    busy = []  # plans whose lock another driver holds: waited for once nothing else is left
    ready = collections.defaultdict(list)  # group -> (plan, lock) claimed after a wait, for its next idle worker
    in_flight = {}  # object ref -> (plan, lock, worker)
    outcomes = []

    def finish(outcome, lock):
        lock.release()
        _record(outcome, outcomes, report, keep_going)

    def claimed(key):  # the group's next cell with its lock held, or None
        while ready[key] or queues[key]:
            if ready[key]:
                return ready[key].pop()
            plan = queues[key].popleft()
            lock, stored = _claim(plan, reuse, wait=False)
            if lock is None:
                busy.append(plan)
            elif stored is not None:
                finish(Outcome(plan, "stored", stored), lock)
            else:
                return plan, lock
        return None

    while True:
        for key in groups:
            while idle[key] and (cell := claimed(key)) is not None:
                w = idle[key].pop()
                in_flight[w.run.remote(cell[0].cell)] = (*cell, w)
        if not in_flight:
            if not busy:
                return outcomes
            plan = busy.pop(0)
            lock, stored = _claim(plan, reuse, wait=True)
            if stored is not None:
                finish(Outcome(plan, "stored", stored), lock)
            else:
                ready[key_of[plan.run_id]].append((plan, lock))
            continue
        (ref,), _ = ray.wait(list(in_flight), num_returns=1)
        plan, lock, w = in_flight.pop(ref)
        idle[key_of[plan.run_id]].append(w)
        try:
            status, record, error, seconds, codes = ray.get(ref)
        except ray.exceptions.RayError as e:  # the worker died again after Ray's one retry of the cell
            status, record, error, seconds, codes = "failed", None, f"worker lost: {one_line(e)}", 0.0, None
        outcome = Outcome(plan, status, record, error, seconds, codes)
        finish(_store(outcome, results_dir) if status == "ran" else outcome, lock)


# ------------------------------------------------------------------------------------------- benchmark

GRID_METHODS = ("lsh", "pcah", "itq", "sph", "speh", "sdh")
GRID_PROTOCOLS = ("digits", "mnist-dizaji2018")
GRID_BITS = (16, 32)


def benchmark(workers: int = 2, data_root=None) -> dict:
    """One grid (shallow methods x ``GRID_PROTOCOLS`` x ``GRID_BITS``: 24 cells) run twice into fresh results
    folders: by the local executor, then on a local Ray of ``workers`` CPUs. Ray's wall time includes its
    workers loading their splits (each process loads its own); its start-up is timed apart."""

    cells = [Cell(m, p, b, 0) for m in GRID_METHODS for p in GRID_PROTOCOLS for b in GRID_BITS]
    quiet = {"log": lambda line: None, "data_root": data_root}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        local = execute(plans_of(cells), results_dir=f"{tmp}/local", **quiet)
        local_s = time.perf_counter() - t
        ray = start_ray(None, num_cpus=workers)  # fails in one line without Ray installed
        start_s = time.perf_counter() - t - local_s
        t = time.perf_counter()
        on_ray = execute(plans_of(cells), results_dir=f"{tmp}/ray", executor="ray", **quiet)
        ray_s = time.perf_counter() - t
        ray.shutdown()
    failed = [o.line() for o in local + on_ray if o.status == "failed"]
    same = [o.record["metrics"] for o in local] == [o.record["metrics"] for o in on_ray] if not failed else None
    return {
        "cells": len(cells),
        "machine_cpus": os.cpu_count(),
        "ray_workers": workers,
        "local_s": round(local_s, 2),
        "ray_start_s": round(start_s, 2),
        "ray_s": round(ray_s, 2),
        "speedup": round(local_s / ray_s, 2),
        "same_metrics": same,
        "failed": failed,
    }
