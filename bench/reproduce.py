"""``bench reproduce TABLE``: every cell a table needs, which are stored, what the missing ones will cost, and
the run that fills them and renders the table.

A table's cells are its rows x column blocks x code lengths x seeds: each row's method at the config its recipe
(under the table-wide ``--recipe``, for the rows whose method declares it) resolves to, on the block's protocol
and the row's input view, exactly the runs ``bench.tables`` shows in that row. Rows the harness does not run
(``published_only``, or a method not installed) have no cells.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

from tabulate import tabulate

from bench import recipes
from bench.errors import BenchError
from bench.executors import execute, plans_of, summary_of_failures
from bench.progress import duration
from bench.registry import get_registry
from bench.results import default_results_dir, read_records
from bench.runner import Cell, Plan, read_stored


@dataclasses.dataclass
class Needed:
    row: str  # the row's label
    plan: Plan
    stored: bool
    estimate_s: float | None  # median seconds of stored runs of this method and protocol, if any


def table_cells(spec, recipe: str | None = None, seeds=(0,), bits=None, rows=None) -> list[tuple[str, Cell]]:
    """(row label, cell) for every cell ``spec`` shows, limited to ``bits`` (its code lengths) and ``rows``
    (labels); a bad code length or row label fails naming the choices."""
    registry = get_registry()
    lengths = sorted({c.bits for c in spec.columns()})
    if bits is not None:
        bad = [b for b in bits if b not in lengths]
        if bad:
            raise BenchError(f"{spec.name} has no {bad[0]}-bit columns (choices: {', '.join(map(str, lengths))})")
        lengths = [b for b in lengths if b in bits]
    labels = [r["label"] for r in spec.rows]
    if rows is not None:
        bad = [r for r in rows if r not in labels]
        if bad:
            raise BenchError(f"{spec.name} has no row {bad[0]!r} (choices: {', '.join(labels)})")
    if recipe is not None:
        from bench.tables import check_table_recipe

        check_table_recipe(spec, recipe)
    out = []
    for row in spec.rows:
        cls = registry.methods.get(row["method"])
        if cls is None or row.get("published_only") or (rows is not None and row["label"] not in rows):
            continue
        under = recipe if recipe in cls.recipes else None
        sets = tuple((row.get("set") or {}).items())
        for block in spec.blocks:
            for n_bits in [row["n_bits"]] if "n_bits" in row else lengths:
                for seed in seeds:
                    cell = Cell(
                        cls.name,
                        block["protocol"],
                        n_bits,
                        seed,
                        row.get("recipe", recipes.DEFAULT),
                        sets,
                        row.get("input", block["input"]),
                        under,
                    )
                    out.append((row["label"], cell))
    return out


def estimate(plan: Plan, records: list[dict]) -> float | None:
    """The median seconds (fit + encode + evaluate) of stored runs of the plan's method on its protocol: of its
    very config and code length where there are such runs, else of any."""
    alike = [r for r in records if r["method"] == plan.cls.name and r["protocol"] == plan.protocol.name]
    same = [r for r in alike if r["config_hash"] == plan.identity["config_hash"] and r["n_bits"] == plan.n_bits]
    seconds = [
        sum(r["timings"].get(k) or 0.0 for k in ("fit_s", "encode_s", "evaluate_s"))
        for r in same or alike
        if r["timings"].get("fit_s") is not None  # a resumed fit's seconds are not a fit's
    ]
    return statistics.median(seconds) if seconds else None


def needed(spec, results_dir=None, recipe=None, seeds=(0,), bits=None, rows=None) -> list[Needed]:
    results_dir = Path(results_dir or default_results_dir())
    records = read_records(results_dir)
    cells = table_cells(spec, recipe, seeds, bits, rows)
    plans = plans_of([cell for _, cell in cells])
    row_of = {}
    for label, cell in cells:
        row_of.setdefault(cell, label)
    return [Needed(row_of[p.cell], p, read_stored(p, results_dir) is not None, estimate(p, records)) for p in plans]


def listing(entries: list[Needed]) -> str:
    """The cells as a table (row, protocol, bits, seed, stored or missing with its estimate) and a total."""
    body = [
        [
            e.row,
            e.plan.protocol.name,
            e.plan.n_bits,
            e.plan.cell.seed,
            "stored" if e.stored else "missing",
            "" if e.stored else ("?" if e.estimate_s is None else f"~{duration(e.estimate_s)}"),
        ]
        for e in entries
    ]
    missing = [e for e in entries if not e.stored]
    known = [e.estimate_s for e in missing if e.estimate_s is not None]
    total = (
        f"{len(entries)} cells: {len(entries) - len(missing)} stored, {len(missing)} missing"
        + (f"; estimated {duration(sum(known))} for {len(known)} of the missing" if known else "")
        + (
            f" ({len(missing) - len(known)} without an estimate: no stored run of their method and protocol)"
            if len(known) < len(missing)
            else ""
        )
    )
    headers = ["row", "protocol", "bits", "seed", "status", "estimate"]
    return tabulate(body, headers=headers, disable_numparse=True) + "\n\n" + total


def missing_note(entries: list[Needed], name: str) -> str | None:
    missing = [e for e in entries if not e.stored]
    if not missing:
        return None
    return (
        f"Missing: {len(missing)} of {len(entries)} cells have no stored run "
        f"(`bench reproduce {name} --dry-run` lists them)."
    )


def render_files(spec, out_dir: Path, results_dir, recipe, entries) -> list[Path]:
    """The table as markdown and LaTeX in ``out_dir`` (NAME[-RECIPE].md/.tex), with what is missing noted."""
    from bench.tables import render

    stem = spec.name if recipe is None else f"{spec.name}-{recipe}"
    note = missing_note(entries, spec.name)
    paths = []
    for fmt, ext, comment in (("markdown", "md", "\n{}\n"), ("latex", "tex", "% {}\n")):
        text = render(spec, fmt, results_dir, recipe)
        if note:
            text = text.rstrip("\n") + "\n" + comment.format(note)
        path = out_dir / f"{stem}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        paths.append(path)
    return paths


def reproduce(
    name: str,
    *,
    recipe=None,
    seeds=(0,),
    bits=None,
    rows=None,
    dry_run=False,
    results_dir=None,
    out_dir=None,
    log=print,
    cell_log=None,
    **execute_options,
) -> int:
    """List the table's cells to ``log``; unless ``dry_run``, run the missing ones (``bench.executors.execute``,
    failures isolated; ``cell_log`` gets a line per cell, default a progress bar) and render the table. Returns
    the exit status: 0, or 1 when a cell failed."""
    spec = get_registry().table(name)
    results_dir = Path(results_dir or default_results_dir())
    entries = needed(spec, results_dir, recipe, seeds, bits, rows)
    log(listing(entries))
    if dry_run:
        return 0
    outcomes = execute(
        [e.plan for e in entries], results_dir=results_dir, keep_going=True, log=cell_log, **execute_options
    )
    entries = needed(spec, results_dir, recipe, seeds, bits, rows)
    for path in render_files(spec, Path(out_dir or results_dir / "tables"), results_dir, recipe, entries):
        log(str(path))
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        log(summary_of_failures(outcomes))
    return 1 if failed else 0
