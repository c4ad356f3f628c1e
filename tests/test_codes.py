"""Kept codes: a run's packed codes beside its record, scored again (bench evaluate --run), and foreign dumps."""

import json

import numpy as np
import pytest
import torch
from conftest import random_case

from bench import codes
from bench.cli import main
from bench.errors import BenchError
from bench.metrics import evaluate
from bench.results import identity_of, read_records, record_path, run_id, write_record


def fake_record(method="itq", distance="hamming", topk=(100,), n_bits=24) -> dict:
    """A run record with the fields every reader of records requires (``bench.results.REQUIRED_FIELDS``)."""
    record = {
        "schema_version": 2,
        "method": method,
        "config_hash": "0123abcd",
        "protocol": "digits",
        "input": "pixels",
        "n_bits": n_bits,
        "seed": 0,
        "evaluation": {"topk": list(topk), "tie_policy": "index"},
        "distance": distance,
        "metrics": {},
        "timings": {},
        "environment": {"device": "cpu"},
        "created": "2026-01-01T00:00:00+0000",
    }
    record["run_id"] = run_id(identity_of(record))
    return record


def kept_run(results_dir, rng, multi_label=False, distance="hamming"):
    """A record and its kept codes under ``results_dir``: (record, the codes and labels as the runner has them)."""
    q, d, ql, dl = random_case(rng, 20, 300, 24, multi_label=multi_label, n_patterns=4)
    arrays = [torch.as_tensor(c, dtype=torch.int8) for c in (q, d)] + [torch.as_tensor(y) for y in (ql, dl)]
    record = fake_record(distance=distance)
    path = record_path(results_dir, record)
    write_record(path, record)
    codes.save_codes(path, codes.Codes.packed(*arrays))
    return record, (q, d, ql, dl)


@pytest.mark.parametrize("multi_label", [False, True])
def test_kept_codes_are_packed_beside_the_record_and_score_as_before(results_dir, multi_label):
    record, (q, d, ql, dl) = kept_run(results_dir, np.random.default_rng(multi_label), multi_label)
    path = codes.codes_path(record_path(results_dir, record))
    assert path.parent == record_path(results_dir, record).parent and path.name.endswith(".codes.npz")
    with np.load(path) as stored:
        assert stored["query_codes"].dtype == np.uint8 and stored["query_codes"].shape == (20, 3)
        assert int(stored["n_bits"]) == 24 and str(stored["format"]) == codes.FORMAT
    assert [r["run_id"] for r in read_records(results_dir)] == [record["run_id"]]  # not taken for a record
    again = codes.evaluate_run(record["run_id"], results_dir, topk=[5, 50])
    assert again == evaluate(q, d, ql, dl, topk=(5, 50))
    own_topk = codes.evaluate_run(record["run_id"], results_dir)  # the record's cut-offs: 100
    assert own_topk["map@100"] == evaluate(q, d, ql, dl, topk=(100,))["map@100"]


def test_a_run_is_scored_again_with_its_own_distance(results_dir):
    record, (q, d, ql, dl) = kept_run(results_dir, np.random.default_rng(2), distance="spherical")
    expected = evaluate(q, d, ql, dl, topk=(100,), distance="spherical")
    assert codes.evaluate_run(record["run_id"], results_dir) == expected


def test_bench_evaluate_run_prints_the_new_settings(capsys, results_dir):
    record, (q, d, ql, dl) = kept_run(results_dir, np.random.default_rng(3))
    argv = ["evaluate", "--run", record["run_id"], "--results", str(results_dir), "--topk", "7", "--radius", "1"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    expected = evaluate(q, d, ql, dl, topk=(7,), radius=1)
    assert result["map@7"] == expected["map@7"] and result["p@h<=1"] == expected["p@h<=1"]


def test_unknown_runs_and_runs_without_codes_are_named(capsys, results_dir):
    record, _ = kept_run(results_dir, np.random.default_rng(4))
    assert main(["evaluate", "--run", record["run_id"][:-1] + "x", "--results", str(results_dir)]) == 2
    err = capsys.readouterr().err
    assert "no run" in err and f"did you mean {record['run_id']!r}" in err
    bare = fake_record(method="lsh")
    write_record(record_path(results_dir, bare), bare)
    assert main(["evaluate", "--run", bare["run_id"], "--results", str(results_dir)]) == 2
    assert "kept no codes" in capsys.readouterr().err
    assert main(["evaluate", "--results", str(results_dir)]) == 2
    assert "give FILE or --run RUN_ID" in capsys.readouterr().err


def test_deephash_dumps_and_packed_npz_files_are_read(tmp_path):
    rng = np.random.default_rng(5)
    q, d, ql, dl = random_case(rng, 15, 200, 32, multi_label=True)
    expected = evaluate(q, d, ql, dl, topk=(20,))
    dumps = tmp_path / "DPSH_nuswide_32bits"
    dumps.mkdir()
    for key, array in zip(codes.ARRAYS, (q.astype(np.float32), d.astype(np.float32), ql, dl)):
        np.save(dumps / codes.DEEPHASH_DUMPS[key], array)  # sign() outputs as float32, multi-hot labels
    assert codes.evaluate_file(dumps, topk=(20,)) == expected
    packed = tmp_path / "packed.npz"
    bits = {k: np.packbits(c > 0, axis=1, bitorder="little") for k, c in (("query_codes", q), ("db_codes", d))}
    np.savez(packed, **bits, query_labels=ql, db_labels=dl, n_bits=32)
    assert codes.evaluate_file(packed, topk=(20,)) == expected


def test_a_folder_without_the_dumps_is_named(tmp_path):
    np.save(tmp_path / "tst_binary.npy", np.ones((2, 8)))
    with pytest.raises(BenchError, match="lacks trn_binary.npy, tst_label.npy, trn_label.npy"):
        codes.load_codes(tmp_path)


def test_packing_checks_the_codes():
    with pytest.raises(BenchError, match="only -1/\\+1 or only 0/1"):
        codes.Codes.packed(np.full((2, 8), 3), np.ones((4, 8)), [0, 1], [0, 1, 0, 1])
    with pytest.raises(BenchError, match="8 bits but database codes have 9"):
        codes.Codes.packed(np.ones((2, 8)), np.ones((4, 9)), [0, 1], [0, 1, 0, 1])


def test_bench_run_save_codes_keeps_codes_that_score_as_the_record(capsys, results_dir):
    argv = [
        "run",
        "--method",
        "itq",
        "--method",
        "pcah",
        "--dataset",
        "digits",
        "--bits",
        "16",
        "--results",
        str(results_dir),
    ]
    assert main(argv) == 0  # without --save-codes: records only
    assert not list(results_dir.rglob("*" + codes.SUFFIX))
    assert capsys.readouterr().err.count("stored, skipped") == 0
    assert main([*argv, "--save-codes"]) == 0  # the stored runs kept no codes: they run again, keeping them
    assert "stored, skipped" not in capsys.readouterr().err
    records = read_records(results_dir)
    assert len(records) == 2
    for record in records:
        kept = codes.codes_path(record_path(results_dir, record))
        with np.load(kept) as stored:
            assert stored["query_codes"].shape == (record["counts"]["n_queries"], 2)
            assert stored["db_codes"].shape == (record["counts"]["n_database"], 2)
        again = codes.evaluate_run(record["run_id"], results_dir)
        assert again["map"] == record["metrics"]["map"] and again["map@1000"] == record["metrics"]["map@1000"]
    assert main([*argv, "--save-codes"]) == 0  # now they are stored with their codes
    assert capsys.readouterr().err.count("stored, skipped") == 2
