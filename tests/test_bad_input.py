"""Bad input on the command line, as a hostile new user types it: for every subcommand, exit status 2, one line on
stderr naming the bad value, no traceback, nothing trained and the results folder as it was."""

import pytest

from bench import executors, runner
from bench.cli import main
from bench.executors import run_grid
from bench.runner import Cell

TABLE = "dizaji2018-table1"
# (argv, what its one line says); {results} is a results folder holding one record, {file} a file, {tmp} a folder
BAD = [
    # run: names, code lengths, seeds, --set values and ranges, views, recipes, executors, devices, the results path
    (["run", "--method", "itk"], "unknown method 'itk'; did you mean 'itq'"),
    (["run", "--method", "itq", "--dataset", "mnist-dizaji"], "did you mean 'mnist-dizaji2018'"),
    (["run", "--method", "itq", "--bits", "0"], "bits must be integers in 1..1024; got 0"),
    (["run", "--method", "itq", "--bits", "2048"], "got 2048"),
    (["run", "--method", "itq", "--bits", "-8"], "got '-8'"),
    (["run", "--method", "itq", "--bits", "sixteen"], "got 'sixteen'"),
    (["run", "--method", "itq", "--seeds", "x"], "--seeds must be integers; got x"),
    (["run", "--method", "itq", "--seeds", "-1"], "--seeds must be >= 0; got -1"),
    (["run", "--method", "itq", "--set", "n_iters=3"], "unknown --set key for itq 'n_iters'"),
    (["run", "--method", "itq", "--set", "n_iter=many"], "n_iter=many: expected int"),
    (["run", "--method", "itq", "--set", "n_iter=-1"], "itq: n_iter=-1 must be an integer >= 0"),
    (["run", "--method", "itq", "--set", "n_iter"], "--set expects KEY=VALUE; got 'n_iter'"),
    (["run", "--method", "hashnet", "--set", "lr=-1.0"], "hashnet: lr=-1.0 must be > 0"),
    (["run", "--method", "hashnet", "--set", "lr=nan"], "hashnet: lr=nan must be a finite number > 0"),
    (["run", "--method", "itq", "--set", "n_iter=1.5"], "itq: --set n_iter=1.5: expected int"),
    (["run", "--method", "itq", "--method", "itk"], "unknown method 'itk'"),
    (["run", "--method", "itq", "--recipe", "cpu-reduced"], "unknown recipe of itq 'cpu-reduced'"),
    (["run", "--method", "hashnet", "--set", "lr=inf"], "hashnet: lr=inf must be a finite number > 0"),
    (["run", "--method", "itq", "--executor", "dask"], "unknown executor 'dask' (choices: local, ray)"),
    (
        ["run", "--method", "itq", "--gpus-per-cell", "0"],
        "argument --gpus-per-cell: must be a finite number > 0; got 0",
    ),
    (["run", "--method", "itq", "--gpus-per-cell", "nan"], "argument --gpus-per-cell: must be a finite number > 0"),
    (["run", "--method", "itq", "--gpus-per-cell", "0.5"], "--address and --gpus-per-cell are options of --executor"),
    (["run", "--method", "itq", "--device", "tpu"], "unknown device 'tpu'"),
    (["run", "--dataset", "digits"], "the following arguments are required: --method"),
    (["run", "--method", "itq", "--results", "{file}"], "results folder {file} cannot take records"),
    # reproduce
    (["reproduce", "dizaji2018-tabel1"], "unknown table 'dizaji2018-tabel1'; did you mean 'dizaji2018-table1'"),
    (["reproduce", TABLE, "--bits", "7"], "dizaji2018-table1 has no 7-bit columns (choices: 16, 32, 64)"),
    (["reproduce", TABLE, "--bits", "x"], "bits must be integers in 1..1024; got 'x'"),
    (["reproduce", TABLE, "--rows", "Nope"], "dizaji2018-table1 has no row 'Nope'"),
    (["reproduce", TABLE, "--seeds", "-1"], "--seeds must be >= 0; got -1"),
    (["reproduce", TABLE, "--recipe", "fast"], "unknown recipe for the rows of dizaji2018-table1 'fast'"),
    (["reproduce", TABLE, "--executor", "dask"], "unknown executor 'dask'"),
    (["reproduce", TABLE, "--results", "{file}"], "results folder {file} cannot take records"),
    # table
    (["table", "dizaji2018-tabel1"], "did you mean 'dizaji2018-table1'"),
    (["table", TABLE, "--format", "html"], "unknown format 'html'"),
    (["table", TABLE, "--recipe", "fast"], "unknown recipe for the rows of dizaji2018-table1 'fast'"),
    (["table", TABLE, "--set", "lr=-1"], "unrecognized arguments: --set lr=-1"),
    (["table"], "bench table needs a table name"),
    (["table", "--all", "{tmp}/all", TABLE], "it takes no NAME, --recipe or --out"),
    (["table", TABLE, "--out", "{file}/table.md"], "cannot write the table to --out {file}/table.md"),
    # plot
    (["plot", "pr2"], "unknown plot 'pr2' (choices: pr, ph2, pn, tsne, samples)"),
    (["plot", "pr", "--bits", "0"], "bits must be integers in 1..1024; got 0"),
    (["plot", "pr", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["plot", "pr", "--set", "a=b"], "--set is for tsne and samples"),
    (["plot", "tsne"], "plot tsne needs exactly one --method; got 0"),
    (["plot", "tsne", "--method", "itq", "--seed", "-1"], "--seed must be >= 0; got -1"),
    (["plot", "tsne", "--method", "itq", "--set", "n_iter=-3"], "itq: n_iter=-3 must be an integer >= 0"),
    (["plot", "samples", "--method", "itk"], "unknown method 'itk'"),
    # evaluate
    (["evaluate", "{tmp}/codes.npz", "--radius", "-1"], "argument --radius: must be >= 0; got -1"),
    (["evaluate", "{tmp}/codes.npz", "--topk", "0"], "argument --topk: must be >= 1; got 0"),
    (["evaluate", "{tmp}/codes.npz", "--topk", "ten"], "argument --topk: expected an integer >= 1; got 'ten'"),
    (["evaluate", "{tmp}/absent.npz"], "{tmp}/absent.npz"),
    # migrate
    (["migrate", "--bogus"], "unrecognized arguments: --bogus"),
    (["migrate", "--results", "{file}"], "results folder {file} is a file"),
    (["run", "--method", "itq", "--input", "sift"], "unknown input view 'sift'"),
    # the benchmarks
    (["bench-eval", "--repeats", "0"], "argument --repeats: must be >= 1; got 0"),
    (["bench-eval", "--classes", "0"], "argument --classes: must be >= 1; got 0"),
    (["bench-eval", "--queries", "0"], "argument --queries: must be >= 1; got 0"),
    (["bench-eval", "--database", "-5"], "argument --database: must be >= 1; got -5"),
    (["bench-eval", "--bits", "x"], "argument --bits: expected an integer >= 1; got 'x'"),
    (["bench-executors", "--workers", "0"], "argument --workers: must be >= 1; got 0"),
    (["bench-loader", "--batch-size", "0"], "argument --batch-size: must be >= 1; got 0"),
    (["bench-loader", "--iterations", "0"], "argument --iterations: must be >= 1; got 0"),
    (["bench-loader", "--workers", "-1"], "argument --workers: must be >= 0; got -1"),
    (["bench-loader", "--backbone", "resnet"], "unknown backbone 'resnet'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
]
RESULTS_OPTION = {"run", "reproduce", "table", "plot", "migrate"}


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """A results folder holding one stored run (and its lock), a file, and a scratch folder."""
    tmp = tmp_path_factory.mktemp("bad-input")
    run_grid([Cell("lsh", "digits", 8, 0)], results_dir=tmp / "results", log=lambda s: None)
    (tmp / "file").write_text("not a folder")
    return {"results": tmp / "results", "file": tmp / "file", "tmp": tmp}


def state(folder):
    """Every path under ``folder`` with its size and modification time."""
    return {(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def nothing_trains(*args, **kwargs):
    raise AssertionError("a bad invocation got as far as training")


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(argv, message, places, capsys, monkeypatch):
    monkeypatch.setenv("HASHBENCH_RESULTS", str(places["results"]))
    monkeypatch.setenv("HASHBENCH_CACHE", str(places["tmp"] / "cache"))
    monkeypatch.chdir(places["tmp"])  # where plot's default --out would go
    monkeypatch.setattr(executors, "compute_record", nothing_trains)
    monkeypatch.setattr(runner, "fit_method", nothing_trains)
    argv = [a.format(**places) for a in argv]
    if argv[0] in RESULTS_OPTION and "--results" not in argv:
        argv += ["--results", str(places["results"])]
    before = state(places["tmp"])
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.endswith("\n") and "Traceback" not in err
    assert message.format(**places) in err
    assert state(places["tmp"]) == before
