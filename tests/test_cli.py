"""The command line: the main job, and one clear line plus a non-zero exit for every kind of bad input."""

import gzip
import json
import shutil

import numpy as np
import pytest
from conftest import DATA_ROOT, needs_mnist

from bench.cli import main
from bench.results import read_records


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_main_job_prints_a_table_and_stores_one_record_per_run(capsys, results_dir):
    code, out, err = run(
        capsys, "run", "--method", "itq", "--dataset", "digits", "--bits", "16", "32", "64", "--results", results_dir
    )
    assert code == 0
    assert "map@1000" in out and "p@h<=2" in out and "[3/3] itq on digits, 64 bits" in err
    assert len(read_records(results_dir)) == 3
    code, out, err = run(capsys, "run", "--method", "itq", "--bits", "16", "--results", results_dir)
    assert code == 0 and "stored, skipped" in err


def test_list_shows_methods_datasets_and_tables(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    for text in (
        "itq",
        "Gong & Lazebnik",
        "vectors",
        "none",
        "mnist-dizaji2018",
        "69,000",
        "cifar10-cao2018",
        "dizaji2018-table1",
        "dizaji2018-table1-recipes",
        "dizaji2018-table1-speed",
        "300-epochs      epochs=300",
    ):
        assert text in out


BAD = [
    (["run", "--method", "itk"], "unknown method 'itk'; did you mean 'itq'"),
    (["run", "--method", "itq", "--dataset", "mnist-dizaji"], "did you mean 'mnist-dizaji2018'"),
    (["run", "--method", "itq", "--bits", "0"], "bits must be integers in 1..1024; got 0"),
    (["run", "--method", "itq", "--bits", "2048"], "got 2048"),
    (["run", "--method", "itq", "--bits", "sixteen"], "got 'sixteen'"),
    (["run", "--method", "itq", "--set", "n_iters=3"], "unknown --set key for itq 'n_iters'; did you mean 'n_iter'"),
    (["run", "--method", "itq", "--set", "n_iter=many"], "n_iter=many: expected int"),
    (["run", "--method", "itq", "--set", "n_iter"], "expects KEY=VALUE"),
    (["run", "--method", "itq", "--seeds", "x"], "--seeds must be integers"),
    (["run", "--method", "itq", "--input", "sift"], "unknown input view 'sift'"),
    (["run", "--method", "pcah", "--bits", "128"], "n_bits <= the input dimension (64)"),
    (["table", "dizaji2018-tabel1"], "did you mean 'dizaji2018-table1'"),
    (["table", "dizaji2018-table1", "--format", "html"], "unknown format 'html'"),
    (["table", "dizaji2018-table1", "--recipe", "fast"], "unknown recipe for the rows of dizaji2018-table1 'fast'"),
    (["table"], "bench table needs a table name"),
    (["run", "--method", "itq", "--recipe", "cpu-reduced"], "unknown recipe of itq 'cpu-reduced' (choices: default)"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_clear_line(capsys, results_dir, argv, message):
    code, out, err = run(capsys, *argv, *(["--results", results_dir] if argv[0] in ("run", "table") else []))
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (results_dir / "runs").exists()


def test_table_warns_about_an_unusable_record_by_name_and_renders_without_it(capsys, results_dir):
    bad = results_dir / "runs" / "itq_digits_pixels_16b_s0_0123456789ab.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps({"schema_version": 99, "method": "itq", "metrics": {"map": 0.99}}))
    with pytest.warns(UserWarning, match=f"skipping unusable run record .*{bad.name}: schema version 99"):
        code, out, err = run(capsys, "table", "dizaji2018-table1", "--results", results_dir)
    assert code == 0 and "| ITQ" in out and "99.00" not in out


def run_itq_on_mnist(capsys, data_root):
    """bench run of ITQ on MNIST read from ``data_root``, results beside it."""
    job = "run --method itq --dataset mnist-dizaji2018".split()
    return run(capsys, *job, "--data-root", data_root, "--results", data_root / "res")


def test_missing_data_says_what_where_and_how(capsys, tmp_path):
    code, _, err = run_itq_on_mnist(capsys, tmp_path)
    assert code == 2
    assert "MNIST not found under data root" in err and str(tmp_path / "MNIST" / "raw") in err
    assert "--download" in err and "HASHBENCH_DATA" in err


@needs_mnist
def test_corrupted_data_fails_its_checksum(capsys, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(DATA_ROOT / "MNIST" / "raw", raw)
    with gzip.open(raw / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x01not mnist")
    code, _, err = run_itq_on_mnist(capsys, tmp_path)
    assert code == 2 and "checksum mismatch" in err and "t10k-labels" in err


def test_evaluate_scores_foreign_codes(capsys, tmp_path):
    rng = np.random.default_rng(0)
    protos = rng.integers(0, 2, (3, 16))
    yq, yd = rng.integers(0, 3, 20), rng.integers(0, 3, 200)
    path = tmp_path / "codes.npz"
    # {0,1} codes and multi-hot labels, the format the DeepHash repositories release
    np.savez(path, query_codes=protos[yq], db_codes=protos[yd], query_labels=np.eye(3)[yq], db_labels=np.eye(3)[yd])
    code, out, _ = run(capsys, "evaluate", path, "--topk", "10", "100")
    assert code == 0
    result = json.loads(out)
    for key in ("map", "map@10", "map@100", "map_tie_aware", "p@h<=2"):
        assert result[key] == pytest.approx(1.0)
    code, out, _ = run(capsys, "evaluate", path, "--curves")
    assert "pr_radius" in json.loads(out)["curves"]


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"query_codes": np.ones((2, 8)), "db_codes": np.ones((5, 8)), "query_labels": np.zeros(2)}, "lacks db_labels"),
        (
            {
                "query_codes": np.ones((2, 8)),
                "db_codes": np.ones((5, 6)),
                "query_labels": np.zeros(2),
                "db_labels": np.zeros(5),
            },
            "8 bits but database codes have 6",
        ),
        (
            {
                "query_codes": np.full((2, 8), 3),
                "db_codes": np.ones((5, 8)),
                "query_labels": np.zeros(2),
                "db_labels": np.zeros(5),
            },
            "only -1/+1 or only 0/1",
        ),
        (
            {
                "query_codes": np.ones((2, 8)),
                "db_codes": np.ones((5, 8)),
                "query_labels": np.zeros(3),
                "db_labels": np.zeros(5),
            },
            "query labels must have shape (2,)",
        ),
    ],
)
def test_evaluate_rejects_bad_codes_files(capsys, tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    code, _, err = run(capsys, "evaluate", path)
    assert code == 2 and message in err


def test_evaluate_rejects_unreadable_files(capsys, tmp_path):
    (tmp_path / "junk.npz").write_text("not an npz")
    code, _, err = run(capsys, "evaluate", tmp_path / "junk.npz")
    assert code == 2 and "cannot read" in err
    code, _, err = run(capsys, "evaluate", tmp_path / "absent.npz")
    assert code == 2 and "does not exist" in err


def test_bench_eval_reports_identical_map(capsys):
    code, out, _ = run(capsys, "bench-eval", "--queries", "30", "--database", "2000", "--repeats", "1")
    report = json.loads(out)
    assert code == 0 and report["map_abs_diff_vs_stable_reference"] < 1e-12
    assert report["map@1000_abs_diff_vs_stable_reference"] < 1e-12


def test_plots_are_drawn_from_stored_runs_as_png_and_pdf(capsys, tmp_path, results_dir):
    out = tmp_path / "figures"
    assert (
        main(["plot", "pr", "--dataset", "digits", "--bits", "16", "--results", str(results_dir), "--out", str(out)])
        == 2
    )
    assert "no stored retrieval runs on 'digits' at the default config" in capsys.readouterr().err
    main(
        [
            "run",
            "--method",
            "itq",
            "--method",
            "lsh",
            "--dataset",
            "digits",
            "--bits",
            "16",
            "--results",
            str(results_dir),
        ]
    )
    for kind in ("pr", "ph2", "pn"):
        assert (
            main(
                ["plot", kind, "--dataset", "digits", "--bits", "16", "--results", str(results_dir), "--out", str(out)]
            )
            == 0
        )
    tsne = ["plot", "tsne", "--method", "itq", "--dataset", "digits", "--bits", "16", "--points", "300"]
    assert main([*tsne, "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "ph2-digits.pdf",
        "ph2-digits.png",
        "pn-digits.pdf",
        "pn-digits.png",
        "pr-digits.pdf",
        "pr-digits.png",
        "tsne-itq-digits-16b.pdf",
        "tsne-itq-digits-16b.png",
    ]
    assert all(p.stat().st_size > 1000 for p in out.iterdir())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["plot", "bars"], "unknown plot 'bars' (choices: pr, ph2, pn, tsne, samples)"),
        (
            ["plot", "samples", "--method", "itq"],
            "itq generates no images (choices: hashgan-cao2018, hashgan-cao2018-official, hashgan-dizaji)",
        ),
        (
            ["plot", "pn", "--dataset", "digits", "--recipe", "cpu-reduced", "--results", "/nonexistent"],
            "no stored retrieval runs on 'digits' at the recipe 'cpu-reduced'",
        ),
        (["plot", "pn", "--dataset", "digits", "--set", "iterations=5"], "--set is for tsne and samples"),
        (["plot", "tsne", "--method", "itq", "--recipe", "fast"], "unknown recipe of itq 'fast'"),
        (["plot", "tsne", "--method", "itq", "--method", "lsh"], "needs exactly one --method; got 2"),
        (["plot", "tsne", "--method", "itq", "--points", "many"], "--points must be integers; got many"),
    ],
)
def test_bad_plot_requests_are_named(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bench_loader_reports_both_pipelines(capsys):
    """Smoke run of the speed benchmark (the measurement itself is for GPUs: no timing is asserted)."""
    assert (
        main(
            [
                "bench-loader",
                "--dataset",
                "digits",
                "--batch-size",
                "32",
                "--iterations",
                "2",
                "--workers",
                "0",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["steps_timed"] == 2 and report["device_resident_images_per_s"] > 0
    assert report["dataloader_images_per_s"] > 0 and report["speedup"] > 0


def test_bench_loader_names_an_unknown_backbone(capsys):
    assert main(["bench-loader", "--dataset", "digits", "--backbone", "resnet", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "'resnet'" in err and "small_cnn" in err


def test_per_class_sample_grid_of_a_pair_conditional_generator(tmp_path):
    out = tmp_path / "figures"
    assert (
        main(
            [
                "plot",
                "samples",
                "--method",
                "hashgan-cao2018",
                "--dataset",
                "digits",
                "--bits",
                "8",
                "--set",
                "iterations=4",
                "--set",
                "batch_size=16",
                "--set",
                "gan_width=8",
                "--set",
                "n_critic=1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "samples-hashgan-cao2018-digits-8b.png").stat().st_size > 1000


def test_sample_grid_of_a_generative_method(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHBENCH_CACHE", str(tmp_path / "cache"))  # its training checkpoint goes there
    out = tmp_path / "figures"
    assert (
        main(
            [
                "plot",
                "samples",
                "--method",
                "hashgan-dizaji",
                "--dataset",
                "digits",
                "--bits",
                "8",
                "--set",
                "epochs=1",
                "--set",
                "batch_size=64",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "samples-hashgan-dizaji-digits-8b.pdf",
        "samples-hashgan-dizaji-digits-8b.png",
    ]
    assert list((tmp_path / "cache" / "checkpoints").glob("hashgan-dizaji_digits_images_8b_s0_*.pt"))


def test_a_reader_that_stops_early_gets_no_traceback():
    """``bench list | head``: the pipe closes before bench writes; it exits 0 with nothing on stderr."""
    import subprocess
    import sys

    code = "import sys; from bench.cli import main; sys.exit(main(['list']))"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # before the child has imported anything, so its first write finds the pipe closed
    assert child.wait(timeout=120) == 0
    assert child.stderr.read() == b""
