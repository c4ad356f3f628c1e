"""The ``bench`` command: list, run, reproduce, evaluate, table, plot, report, migrate, bench-eval, bench-loader,
bench-executors.

Every user error is a ``BenchError``: printed on one line as ``bench: error: ...``, exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from bench.errors import BenchError


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, as ``bench: error: ...`` is (the usage is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _tabulate(rows, **options) -> str:
    from tabulate import tabulate  # imported when a table is printed: bench evaluate starts without it

    return tabulate(rows, **options)


def _integer(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}; got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}; got {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (a count of items, repeats, workers, a cut-off)."""
    return _integer(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0 (a radius, a number of loader processes)."""
    return _integer(text, 0)


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0; got {text!r}") from None
    if not (value > 0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0; got {text}")
    return value


def _results_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", help="results folder (default: $HASHBENCH_RESULTS, else ./results)")


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root",
        help="folder holding the datasets (default: $HASHBENCH_DATA, else "
        "~/.cache/hashbench/data); only read, never written",
    )
    parser.add_argument(
        "--download", action="store_true", help="let torchvision download missing datasets into the data root"
    )


def _executor_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--executor", default="local", help="local (this process, the default) or ray (a Ray cluster's workers)"
    )
    parser.add_argument(
        "--address",
        help="ray: the cluster to join (auto, HOST:PORT or ray://HOST:PORT); default: start a local Ray with this "
        "machine's CPUs and GPUs",
    )
    parser.add_argument(
        "--gpus-per-cell",
        type=positive_float,
        help="ray: GPUs a deep-method cell asks for when the cluster has GPUs (fractions share one; default 1)",
    )
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="bench", description="hashbench: run, score and tabulate hashing methods")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("list", help="methods, datasets/protocols and tables")

    p = sub.add_parser("run", help="run methods on a protocol over a grid of bits and seeds")
    _data_options(p)
    _results_option(p)
    p.add_argument("--method", action="append", required=True, help="method name (repeat for several)")
    p.add_argument("--dataset", default="digits", help="dataset/protocol name (default: digits)")
    p.add_argument("--bits", nargs="+", default=["16", "32", "64"], help="code lengths (default: 16 32 64)")
    p.add_argument("--seeds", nargs="+", default=["0"], help="run seeds (default: 0)")
    p.add_argument(
        "--recipe",
        default="default",
        help="a named recipe of the methods (bench list --recipes; default: the Config itself)",
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a Config field (over the recipe)"
    )
    p.add_argument("--input", help="input view (default: pixels for vector methods, images for image methods)")
    p.add_argument(
        "--force", action="store_true", help="rerun cells already stored, from scratch (training checkpoints discarded)"
    )
    p.add_argument(
        "--keep-going", action="store_true", help="run every cell even when some fail; list the failures at the end"
    )
    p.add_argument(
        "--save-codes",
        action="store_true",
        help="keep each run's query and database codes, bit-packed, beside its record (RUN.codes.npz), to score "
        "them again with bench evaluate --run; a stored run that kept none runs again",
    )
    _executor_options(p)

    p = sub.add_parser(
        "reproduce", help="fill a table: list its cells (stored, missing, estimated cost), run the missing, render"
    )
    _data_options(p)
    _results_option(p)
    p.add_argument("name", help="table name (see bench list)")
    p.add_argument("--recipe", help="a table-wide recipe laid under the rows whose method declares it")
    p.add_argument("--seeds", nargs="+", default=["0"], help="run seeds (default: 0)")
    p.add_argument("--bits", nargs="+", help="only these of the table's code lengths (default: all)")
    p.add_argument("--rows", nargs="+", help="only these rows, by label (default: every row the harness runs)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and their cost; run nothing")
    p.add_argument("--out", help="folder for the rendered table (default: RESULTS/tables)")
    _executor_options(p)

    p = sub.add_parser(
        "evaluate",
        help="score codes: an .npz with query_codes, db_codes, query_labels, db_labels (or a folder of "
        "DeepHash-style .npy dumps), or the codes a run kept (--run)",
    )
    p.add_argument("codes", nargs="?", help="the .npz file (bit-packed codes with n_bits) or the folder of dumps")
    p.add_argument("--run", metavar="RUN_ID", help="score again the codes kept beside this run's record")
    _results_option(p)
    p.add_argument(
        "--topk", nargs="+", type=positive_int, help="cutoffs K for map@K (default: 1000; with --run, the run's own)"
    )
    p.add_argument("--radius", type=non_negative_int, default=2, help="Hamming radius for p@h<=R (default: 2)")
    p.add_argument(
        "--distance", default="hamming", help="hamming or spherical (default: hamming; with --run, the run's own)"
    )
    p.add_argument("--curves", action="store_true", help="include the PR and P@N curves")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")

    p = sub.add_parser("table", help="render a paper-layout table from the stored records")
    _results_option(p)
    p.add_argument("name", nargs="?", help="table name (see bench list)")
    p.add_argument("--format", default="markdown", help="markdown or latex (default: markdown)")
    p.add_argument("--out", help="also write the table to this file")
    p.add_argument(
        "--all",
        metavar="DIR",
        help="instead of one table, write every table and each recipe it lists to DIR as NAME[-RECIPE].md and .tex",
    )
    p.add_argument(
        "--recipe",
        help="show the runs of this recipe in the rows whose method declares it (e.g. cpu-reduced: a reduced schedule)",
    )

    p = sub.add_parser("plot", help="draw the papers' figures from stored runs (PNG and PDF)")
    _data_options(p)
    _results_option(p)
    p.add_argument(
        "kind",
        help="pr (precision-recall curves), ph2 (P@H<=2 vs bits), pn (P@N curves), tsne (t-SNE "
        "of codes) or samples (generated images)",
    )
    p.add_argument("--dataset", default="digits", help="dataset/protocol name (default: digits)")
    p.add_argument(
        "--method", action="append", default=[], help="method name (pr, ph2, pn: repeat to choose; default all)"
    )
    p.add_argument("--bits", nargs="+", default=["16", "32", "64"], help="code lengths (tsne/samples: the first)")
    p.add_argument("--seed", default="0", help="run seed of the fitted model (tsne, samples; default 0)")
    p.add_argument("--points", default="2000", help="tsne: database codes mapped, a fixed random subset (default 2000)")
    p.add_argument("--recipe", help="the runs of this recipe for the methods that declare it (default: default)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="tsne, samples: override a Config field of the one method (over the recipe)",
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--out", default="results/tables", help="folder for the PNG and PDF (default: results/tables)")

    p = sub.add_parser("report", help="a static offline HTML site of every table, figure and run")
    _results_option(p)
    p.add_argument("--out", default="results/site", help="folder for the site (default: results/site)")

    p = sub.add_parser("migrate", help="rewrite the run records of an older schema in the current one")
    _results_option(p)

    p = sub.add_parser(
        "bench-eval", help="time the evaluator against the floor, the per-query argsort reference and faiss kNN"
    )
    p.add_argument(
        "--shape",
        nargs="+",
        help="cifar10 (1000x54000x64), nuswide (2100x193734x64, 21 labels, K=5000), million "
        "(10000x1000000x64) or QUERIESxDATABASExBITS (default: the three)",
    )
    p.add_argument("--queries", type=positive_int, help="a shape of its own: the CIFAR-10 one's values for the others")
    p.add_argument("--database", type=positive_int)
    p.add_argument("--bits", type=positive_int)
    p.add_argument("--classes", type=positive_int, help="classes or labels of a shape of its own (default: 10)")
    p.add_argument("--multi-label", action="store_true", help="multi-hot labels for a shape of its own")
    p.add_argument("--topk", type=positive_int, help="K of map@K for a shape of its own (default: 1000)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda: ours against the CPU's results)")
    p.add_argument("--repeats", type=positive_int, default=3, help="runs of each, the best kept (default: 3)")
    p.add_argument("--no-reference", action="store_true", help="leave out the per-query argsort reference")
    p.add_argument(
        "--reference-queries",
        type=positive_int,
        default=100,
        help="queries the argsort reference is timed on (default: 100)",
    )
    p.add_argument("--no-faiss", action="store_true", help="leave out faiss's kNN even where it is installed")

    p = sub.add_parser("bench-executors", help="time a 24-cell shallow grid on the local executor against a local Ray")
    _data_options(p)
    p.add_argument("--workers", type=positive_int, default=2, help="Ray worker CPUs (default: 2)")

    p = sub.add_parser(
        "bench-loader",
        help="time a HashNet epoch fed from device-resident tensors against a "
        "torchvision DataLoader with PIL transforms",
    )
    _data_options(p)
    p.add_argument("--dataset", default="cifar10-cao2018", help="protocol whose training set is used")
    p.add_argument("--backbone", default="small_cnn", help="small_cnn, alexnet or vgg16 (default: small_cnn)")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--iterations", type=positive_int, help="steps to time (default: one epoch)")
    p.add_argument(
        "--workers", type=non_negative_int, default=4, help="DataLoader worker processes (default: 4; 0: in process)"
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # a bad flag (its one line printed) or --help: the status, also when called in-process
        return done.code
    try:
        return COMMANDS[args.command](args) or 0
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; finished runs are stored, the current one is not", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped early (`bench list | head`): nothing is lost, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's final flush must not fail again
        return 0


def cmd_list(args) -> None:
    from bench.registry import get_registry

    reg = get_registry()
    methods = [
        [m.name, m.paper, m.supervision, m.input, "/".join(m.tasks), reg.origins[("method", m.name)]]
        for m in sorted(reg.methods.values(), key=lambda m: m.name)
    ]
    print("Methods\n" + _tabulate(methods, headers=["name", "paper", "supervision", "input", "tasks", "module"]))
    protocols = [[p.name, p.task, _wrap(p.description)] for p in reg.protocols.values()]
    print("\nDatasets and protocols\n" + _tabulate(protocols, headers=["name", "task", "split"]))
    tables = [[t.name, t.kind, _wrap(t.title)] for t in reg.tables.values()]
    print("\nTables\n" + _tabulate(tables, headers=["name", "kind", "what"]))
    named = [
        [m.name, name, _wrap(", ".join(f"{k}={v}" for k, v in fields.items()), 70)]
        for m in sorted(reg.methods.values(), key=lambda m: m.name)
        for name, fields in m.recipes.items()
    ]
    print(
        "\nRecipes (besides default, the Config itself)\n"
        + _tabulate(named, headers=["method", "recipe", "Config overrides"])
    )


def _wrap(text: str, width: int = 90) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _parse_sets(pairs) -> tuple:
    out = []
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise BenchError(f"--set expects KEY=VALUE; got {pair!r}")
        out.append((key.strip(), value))
    return tuple(out)


def _ints(values, what: str, low: int = 0) -> list[int]:
    try:
        out = [int(v) for v in values]
    except ValueError:
        raise BenchError(f"{what} must be integers; got {' '.join(values)}") from None
    if any(v < low for v in out):
        raise BenchError(f"{what} must be >= {low}; got {' '.join(values)}")
    return out


def cmd_run(args) -> int:
    from bench.executors import execute, plans_of, summary_of_failures
    from bench.runner import Cell, check_bits

    bits = check_bits(args.bits)
    seeds = _ints(args.seeds, "--seeds")
    overrides = _parse_sets(args.set)
    cells = [
        Cell(m, args.dataset, b, s, args.recipe, overrides, args.input)
        for m in args.method
        for b in bits
        for s in seeds
    ]
    outcomes = execute(
        plans_of(cells),
        keep_going=args.keep_going,
        force=args.force,
        save_codes=args.save_codes,
        results_dir=args.results,
        data_root=args.data_root,
        download=args.download,
        log=None,
        **_executor_kwargs(args),
    )
    records = [o.record for o in outcomes if o.record is not None]
    if records:
        print(summary(records))
    if any(o.status == "failed" for o in outcomes):
        print(summary_of_failures(outcomes), file=sys.stderr)
        return 1
    return 0


def _executor_kwargs(args) -> dict:
    from bench.errors import unknown
    from bench.executors import EXECUTORS
    from bench.runner import resolve_device

    if args.executor not in EXECUTORS:
        raise unknown("executor", args.executor, EXECUTORS)
    if args.executor == "local" and (args.address or args.gpus_per_cell is not None):
        raise BenchError("--address and --gpus-per-cell are options of --executor ray")
    if args.gpus_per_cell is not None and not 0 < args.gpus_per_cell <= 8:
        raise BenchError(f"--gpus-per-cell must be in (0, 8]; got {args.gpus_per_cell}")
    # local: the device here (checked now); ray: each worker's own unless --device says one for all
    device = resolve_device(args.device) if args.executor == "local" else args.device
    return {"executor": args.executor, "address": args.address, "gpus_per_cell": args.gpus_per_cell, "device": device}


def cmd_reproduce(args) -> int:
    from bench.reproduce import reproduce
    from bench.runner import check_bits

    return reproduce(
        args.name,
        recipe=args.recipe,
        seeds=_ints(args.seeds, "--seeds"),
        bits=check_bits(args.bits) if args.bits else None,
        rows=args.rows,
        dry_run=args.dry_run,
        results_dir=args.results,
        out_dir=args.out,
        data_root=args.data_root,
        download=args.download,
        log=print,
        **_executor_kwargs(args),
    )


def summary(records: list[dict]) -> str:
    """Mean +- std over seeds per (method, bits) of the main metrics, x100, and the mean fit time (of the fits done
    in one process: a resumed fit's seconds cover only its resumed part)."""
    import pandas as pd

    rows = [
        {"method": r["method"], "bits": r["n_bits"], **r["metrics"], "fit s": r["timings"].get("fit_s")}
        for r in records
    ]
    frame = pd.DataFrame(rows)
    metrics = [c for c in frame.columns if c.startswith(("map", "p@h")) or c in ("nmi", "acc")]
    out = []
    for (method, bits), g in frame.groupby(["method", "bits"], sort=False):
        cells = [
            "-"
            if g[m].isna().all()
            else f"{100 * g[m].mean():.2f} ± {100 * g[m].std(ddof=1):.2f}"
            if len(g) > 1
            else f"{100 * g[m].mean():.2f}"
            for m in metrics
        ]
        out.append([method, bits, len(g), *cells, "-" if g["fit s"].isna().all() else f"{g['fit s'].mean():.2f}"])
    return _tabulate(out, headers=["method", "bits", "seeds", *metrics, "fit s"], disable_numparse=True)


def cmd_evaluate(args) -> None:
    from bench import codes

    if (args.codes is None) == (args.run is None):
        raise BenchError("bench evaluate scores a codes file or a run's kept codes: give FILE or --run RUN_ID")
    device = args.device if args.device == "cpu" else _cuda_device(args.device)  # no torch for the CPU
    if device == "cpu":
        from bench import _kernels

        _kernels.set_up_numba_lean()
    if args.run:
        result = codes.evaluate_run(args.run, args.results, topk=args.topk, radius=args.radius, device=device)
    else:
        settings = {"topk": args.topk or [1000], "radius": args.radius, "device": device, "distance": args.distance}
        result = codes.evaluate_file(args.codes, **settings)
    if not args.curves:
        result.pop("curves")
    print(json.dumps(result, indent=1))


def _cuda_device(device: str) -> str:
    from bench.runner import resolve_device

    return resolve_device(device)


def cmd_table(args) -> None:
    from bench.registry import get_registry
    from bench.results import read_records
    from bench.tables import committed_renders, render

    if args.all:
        if args.name or args.recipe or args.out:
            raise BenchError("bench table --all DIR renders every table; it takes no NAME, --recipe or --out")
        records = read_records(args.results)
        for spec, recipe, stem in committed_renders(list(get_registry().tables.values())):
            for fmt, ext in (("markdown", "md"), ("latex", "tex")):
                path = Path(args.all) / f"{stem}.{ext}"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(render(spec, fmt, records=records, recipe=recipe))
                print(path)
        return
    if not args.name:
        raise BenchError(f"bench table needs a table name (choices: {', '.join(get_registry().tables)}) or --all DIR")
    text = render(get_registry().table(args.name), args.format, args.results, args.recipe)
    print(text)
    if args.out:
        try:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text)
        except (FileExistsError, NotADirectoryError):
            raise BenchError(f"cannot write the table to --out {args.out}: a file is in its way") from None
        except OSError as error:
            raise BenchError(f"cannot write the table to --out {args.out}: {error.strerror or error}") from None


def cmd_plot(args) -> None:
    from bench import plots
    from bench.registry import get_registry
    from bench.runner import Cell, check_bits, prepare, resolve_device

    if args.kind not in plots.KINDS:
        raise BenchError(f"unknown plot {args.kind!r} (choices: {', '.join(plots.KINDS)})")
    bits = check_bits(args.bits)
    protocol = get_registry().protocol(args.dataset).name
    if args.kind in plots.RECORD_KINDS:
        if args.set:
            raise BenchError(f"plot {args.kind} draws stored runs by --recipe; --set is for tsne and samples")
        draw = {"pr": plots.pr_curves, "pn": plots.pn_curves, "ph2": plots.ph2_curve}[args.kind]
        paths = draw(protocol, bits, args.method, args.results, args.out, args.recipe)
    else:
        if len(args.method) != 1:
            raise BenchError(f"plot {args.kind} needs exactly one --method; got {len(args.method)}")
        cell = Cell(
            args.method[0],
            protocol,
            bits[0],
            _ints([args.seed], "--seed")[0],
            args.recipe or "default",
            _parse_sets(args.set),
        )
        prepare(cell)  # a bad recipe or --set fails here, before any data loads
        options = {"device": resolve_device(args.device), "data_root": args.data_root, "out_dir": args.out}
        if args.kind == "tsne":
            paths = plots.tsne(cell, _ints([args.points], "--points", low=2)[0], **options)
        else:
            paths = plots.samples(cell, **options)
    print("\n".join(str(p) for p in paths))


def cmd_report(args) -> None:
    from bench.report import build_site

    site = build_site(args.out, args.results)
    print(f"{site['index']}: {site['pages']} pages, {site['bytes'] / 1e6:.1f} MB in {site['seconds']} s")


def cmd_migrate(args) -> None:
    from bench.results import default_results_dir, migrate

    folder = Path(args.results or default_results_dir())
    if folder.exists() and not folder.is_dir():
        raise BenchError(f"results folder {folder} is a file, not a folder of run records")
    print(f"{migrate(args.results)} record(s) rewritten")


def cmd_bench_eval(args) -> None:
    from bench import speed

    custom = {"classes": args.classes or 10, "multi_label": args.multi_label, "topk": args.topk or 1000}
    if args.shape:
        shapes = [speed.parse_shape(text, **custom) for text in args.shape]
    elif args.queries or args.database or args.bits:
        cifar = speed.SHAPES["cifar10"]
        sizes = (args.queries or cifar.queries, args.database or cifar.database, args.bits or cifar.bits)
        shapes = [speed.parse_shape("x".join(str(v) for v in sizes), **custom)]
    else:
        shapes = list(speed.SHAPES.values())
    device = args.device if args.device == "cpu" else _cuda_device(args.device)
    reports = []
    for shape in shapes:
        report = speed.benchmark_evaluator(
            shape,
            device=device,
            repeats=args.repeats,
            reference=not args.no_reference,
            reference_queries=args.reference_queries,
            faiss=not args.no_faiss,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
        print(json.dumps(report), flush=True)  # one JSON line a shape
        reports.append(report)
    print(speed.table(reports), file=sys.stderr)


def cmd_bench_executors(args) -> None:
    from bench.executors import benchmark

    if args.workers < 1:
        raise BenchError(f"--workers must be >= 1; got {args.workers}")
    print(json.dumps(benchmark(args.workers, args.data_root), indent=1))


def cmd_bench_loader(args) -> None:
    from bench.backbones import BACKBONES
    from bench.errors import unknown
    from bench.runner import resolve_device
    from bench.speed import benchmark_loader

    if args.backbone not in BACKBONES:
        raise unknown("backbone", args.backbone, BACKBONES)
    report = benchmark_loader(
        args.dataset,
        device=resolve_device(args.device),
        backbone=args.backbone,
        batch_size=args.batch_size,
        iterations=args.iterations,
        workers=args.workers,
        data_root=args.data_root,
    )
    print(json.dumps(report, indent=1))


COMMANDS = {
    "list": cmd_list,
    "run": cmd_run,
    "reproduce": cmd_reproduce,
    "evaluate": cmd_evaluate,
    "table": cmd_table,
    "plot": cmd_plot,
    "report": cmd_report,
    "migrate": cmd_migrate,
    "bench-eval": cmd_bench_eval,
    "bench-loader": cmd_bench_loader,
    "bench-executors": cmd_bench_executors,
}

if __name__ == "__main__":
    sys.exit(main())
