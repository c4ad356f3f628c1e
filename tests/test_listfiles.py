"""The toolkits' list-file protocols (bench.data.ListSplit): tiny sets written in exactly the DeepHash-pytorch /
FIRe / HashNet format (PNG and JPEG images, one-hot and multi-hot lines, absolute paths of another machine), read
unchanged and used as given; checksums, the image cache, errors naming file:line, and a run end to end."""

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

import bench.data
from bench.cli import main
from bench.data import PROTOCOLS, ListFile, load_split
from bench.errors import BenchError
from bench.results import read_records

BY_NAME = {p.name: p for p in PROTOCOLS}
FOREIGN = "/home/someone/run-czj/dataset"  # the toolkit author's machine, as HashNet's lists hold it


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def colour(i: int) -> tuple:
    """Image i is a solid colour that names it (it survives any resize exactly)."""
    return (4 * i, 255 - 4 * i, 17)


def write_images(folder, ids, size=(32, 32), fmt="png"):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i in ids:
        Image.new("RGB", size, colour(i)).save(folder / "images" / f"{i}.{fmt}")


def line(path: str, labels) -> str:
    return f"{path} " + " ".join(str(int(v)) for v in labels)


def one_hot(i: int, n: int = 10) -> list:
    return [int(c == i % n) for c in range(n)]


def write_cifar(root, lists=None, where="cifar10"):
    """A CIFAR-10-like set in <root>/<where>: 10 queries, 30 database and 20 training images (disjoint), lists in
    a shuffled order, one-hot lines, every other line with the author's absolute path. Returns the image ids of
    each list in order."""
    rng = np.random.default_rng(1)
    ids = rng.permutation(60).tolist()
    lists = lists or {"test.txt": ids[:10], "database.txt": ids[10:40], "train.txt": ids[40:]}
    folder = root / where
    write_images(root / "cifar10", range(60))
    folder.mkdir(parents=True, exist_ok=True)
    for name, members in lists.items():
        rows = [
            line(f"{FOREIGN}/cifar/images/{i}.png" if k % 2 else f"images/{i}.png", one_hot(i))
            for k, i in enumerate(members)
        ]
        (folder / name).write_text("\n".join(rows) + "\n")
    return lists


def labels21(i: int) -> list:
    """Multi-hot labels over 21 concepts (at least two set)."""
    return [int(c in (i % 21, (3 * i + 1) % 21, (i * i) % 21)) for c in range(21)]


def write_nuswide(root, folder="nus_wide", n_labels=21):
    """A NUS-WIDE-like set: 6 queries, 20 database images, training = 8 database images in another order; JPEGs
    of 300 x 200 (resized to 256 x 256); multi-hot lines, all with absolute foreign paths."""
    write_images(root / "nus_wide", range(26), size=(300, 200), fmt="jpg")
    (root / folder).mkdir(parents=True, exist_ok=True)
    lists = {"test.txt": list(range(20, 26)), "database.txt": list(range(20)), "train.txt": [7, 3, 15, 0, 19, 8, 2, 11]}
    for name, members in lists.items():
        labels = (labels21(i) if n_labels == 21 else one_hot(i, n_labels) for i in members)
        rows = [line(f"{FOREIGN}/NUS-WIDE/images/{i}.jpg", lab) for i, lab in zip(members, labels)]
        (root / folder / name).write_text("\n".join(rows) + "\n")
    return lists


def first_pixels(x: torch.Tensor) -> list:
    return [tuple(int(v) for v in x[k, :, 0, 0]) for k in range(x.shape[0])]


def test_the_split_is_the_lists_as_given_and_one_hot_labels_become_class_ids(tmp_path, monkeypatch):
    root = tmp_path / "data"
    lists = write_cifar(root)
    split = load_split(BY_NAME["cifar10-i"], "images", "cpu", str(root))
    for part, name in (("query", "test.txt"), ("database", "database.txt"), ("train", "train.txt")):
        x, y = getattr(split, f"x_{part}"), getattr(split, f"y_{part}")
        assert x.shape == (len(lists[name]), 3, 32, 32) and x.dtype == torch.uint8
        assert first_pixels(x) == [colour(i) for i in lists[name]]  # these images, in the list's order
        assert y.dtype == torch.int64 and y.tolist() == [i % 10 for i in lists[name]]
    assert split.provenance["labels"] == "one-hot, read as class ids" and split.provenance["images"] == 60
    # the author's absolute paths were found under <root>/cifar10 once their leading folders were dropped
    assert split.provenance["path_rewrites"] == {f"{FOREIGN}/cifar": str(root / "cifar10")}
    # each part is a contiguous run of the memory-mapped cache: views of one storage, no copies
    storage = {t.untyped_storage().data_ptr() for t in (split.x_query, split.x_database, split.x_train)}
    assert len(storage) == 1
    monkeypatch.setattr(bench.data, "PIXELS_MAX_BYTES", 1000)  # as a 256 x 256 set would exceed the real one
    with pytest.raises(BenchError, match="the pixels view of 60 3x32x32 images takes .* use the images view"):
        load_split(BY_NAME["cifar10-i"], "pixels", "cpu", str(root))


def test_multi_hot_lists_a_training_sample_of_the_database_and_256_px_images(tmp_path):
    root = tmp_path / "data"
    lists = write_nuswide(root)
    split = load_split(BY_NAME["nuswide-21"], "images", "cpu", str(root))
    assert split.x_query.shape == (6, 3, 256, 256)  # 300 x 200 JPEGs resized to 256 x 256
    assert split.y_train.dtype == torch.uint8 and split.y_train.tolist() == [labels21(i) for i in lists["train.txt"]]
    assert split.y_query.tolist() == [labels21(i) for i in lists["test.txt"]]
    # a training image is the database's image of the same path, stored once
    assert split.provenance["images"] == 26 and split.provenance["labels"] == "multi-hot"
    for k, i in enumerate(lists["train.txt"]):
        assert torch.equal(split.x_train[k], split.x_database[lists["database.txt"].index(i)])
    jpeg = first_pixels(split.x_train)  # JPEG is lossy: within a few levels of the colour written
    assert all(max(abs(a - b) for a, b in zip(got, colour(i))) <= 3 for got, i in zip(jpeg, lists["train.txt"]))
    assert split.provenance["path_rewrites"] == {f"{FOREIGN}/NUS-WIDE": str(root / "nus_wide")}


def test_checksums_are_recorded_and_follow_the_lists_and_the_image_cache_is_reused(tmp_path, cache, monkeypatch):
    root = tmp_path / "data"
    write_cifar(root)
    loader = BY_NAME["cifar10-i"].loader
    first = loader(root, False)
    listed = first.provenance["lists"]
    for name in ("test.txt", "database.txt", "train.txt"):
        assert listed[name]["sha256"] == hashlib.sha256((root / "cifar10" / name).read_bytes()).hexdigest()
    assert listed["test.txt"]["lines"] == 10 and isinstance(first.x, np.memmap)
    assert len(list((cache / "lists").glob("*.npy"))) == 1

    def no_decoding(*args):
        raise AssertionError("the cached images were decoded again")

    monkeypatch.setattr(bench.data, "decode_image", no_decoding)
    again = loader(root, False)  # same listed images: read from the cache
    assert np.array_equal(again.x, first.x) and again.provenance == first.provenance
    database = root / "cifar10" / "database.txt"
    rows = database.read_text().splitlines()
    database.write_text("\n".join(rows[:-1]) + "\n")  # one database image fewer
    monkeypatch.undo()
    changed = loader(root, False)
    assert changed.provenance["lists"]["database.txt"]["sha256"] != listed["database.txt"]["sha256"]
    assert changed.provenance["lists"]["test.txt"] == listed["test.txt"]
    assert len(changed.split["database"]) == 29 and changed.provenance["images"] == 59


BAD_LINES = [
    ("images/0.png 1 0 2 0 0 0 0 0 0 0", "a label vector holds only 0 and 1"),
    ("images/0.png", "no labels after the image path"),
    ("images/0.png 1 0 0", "3 labels, but cifar10-i has 10 .*cifar10/cifar10-i"),
    ("images/0.png one 0 0 0 0 0 0 0 0 0", "labels must be integers"),
    ("images/12.png 12", "class id 12 outside 0..9"),
    (None, r"\S+ is listed with other labels at .*database.txt:1$"),
]


@pytest.mark.parametrize("bad, message", BAD_LINES)
def test_a_bad_line_is_one_error_naming_its_file_and_line(tmp_path, bad, message):
    root = tmp_path / "data"
    lists = write_cifar(root)
    database = root / "cifar10" / "database.txt"
    rows = database.read_text().splitlines()
    first = lists["database.txt"][0]
    rows[2] = bad or line(f"images/{first}.png", one_hot(first + 1))  # line 3
    database.write_text("\n".join(rows) + "\n")
    with pytest.raises(BenchError, match=f"database.txt:3: {message}") as error:
        BY_NAME["cifar10-i"].loader(root, False)
    assert "\n" not in str(error.value) and str(database) in str(error.value)


def test_missing_lists_and_images_say_what_is_expected(tmp_path):
    with pytest.raises(
        BenchError,
        match=r"cifar10-i: no list files under data root .*test\.txt, database\.txt, "
        r"train\.txt in .*cifar10/cifar10-i or .*cifar10 ",
    ) as error:
        BY_NAME["cifar10-i"].loader(tmp_path, False)
    assert "\n" not in str(error.value)
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "test.txt").write_text(line("images/0.png", one_hot(0)) + "\n")
    with pytest.raises(BenchError, match="has test.txt but not database.txt or train.txt"):
        BY_NAME["cifar10-i"].loader(tmp_path, False)
    root = tmp_path / "data"
    write_cifar(root)
    (root / "cifar10" / "images" / "5.png").unlink()
    with pytest.raises(BenchError, match=r"\.txt:\d+: image (\S*/)?images/5\.png not found \(as listed, nor under"):
        BY_NAME["cifar10-i"].loader(root, False)


def test_another_protocols_lists_are_refused_and_the_protocol_subfolder_comes_first(tmp_path):
    root = tmp_path / "data"
    write_nuswide(root, n_labels=81)  # HashNet's 81-concept lists in the toolkits' nus_wide folder
    with pytest.raises(BenchError, match=r"81 labels, but nuswide-21 has 21 .*go in .*nus_wide/nuswide-21"):
        BY_NAME["nuswide-21"].loader(root, False)
    assert BY_NAME["nuswide-81"].loader(root, False).provenance["n_labels"] == 81
    lists = write_nuswide(root, folder="nus_wide/nuswide-21")
    data = BY_NAME["nuswide-21"].loader(root, False)
    assert data.provenance["folder"] == str(root / "nus_wide" / "nuswide-21")
    assert data.split["train"].tolist() == [6 + i for i in lists["train.txt"]]  # stored after the 6 queries


def test_protocol_ii_trains_on_its_database(tmp_path):
    root = tmp_path / "data"
    ids = list(range(60))
    write_cifar(root, {"test.txt": ids[:20], "database.txt": ids[20:], "train.txt": ids[20:]}, "cifar10/cifar10-ii")
    split = load_split(BY_NAME["cifar10-ii"], "images", "cpu", str(root))
    assert split.x_train is split.x_database and split.x_query.shape[0] == 20
    write_cifar(root, {"test.txt": ids[:20], "database.txt": ids[20:], "train.txt": ids[20:50]}, "cifar10/cifar10-ii")
    with pytest.raises(BenchError, match="cifar10-ii trains on its database: .*train.txt must list the images"):
        BY_NAME["cifar10-ii"].loader(root, False)


def test_merged_list_files_find_images_listed_with_another_machines_paths(tmp_path):
    """The re-drawn protocols (nuswide-cao2018, coco-cao2018) read HashNet's lists too: absolute paths of the
    author's machine resolve under <root>/coco."""
    root = tmp_path / "data"
    write_images(root / "coco", range(12))
    rows = [line(f"{FOREIGN}/coco/images/{i}.png", labels21(i)) for i in range(12)]
    (root / "coco" / "database.txt").write_text("\n".join(rows) + "\n")
    data = ListFile("coco", size=8)(root, False)
    assert data.x.shape == (12, 3, 8, 8) and first_pixels(torch.from_numpy(data.x)) == [colour(i) for i in range(12)]
    assert data.provenance["path_rewrites"] == {FOREIGN: str(root)}  # the longest remainder, coco/images/i.png


def test_bench_run_on_a_list_file_protocol_end_to_end(tmp_path, capsys):
    root, results = tmp_path / "data", tmp_path / "results"
    write_cifar(root)
    argv = ["run", "--method", "lsh", "--dataset", "cifar10-i", "--data-root", root, "--bits", "8"]
    assert main([str(a) for a in argv + ["--results", results]]) == 0
    (record,) = read_records(results)
    assert record["protocol"] == "cifar10-i" and record["sizes"] == {"query": 10, "database": 30, "train": 20}
    assert set(record["metrics"]) >= {"map", "map@54000"} and record["counts"]["n_database"] == 30
    assert record["metrics"]["map@54000"] == pytest.approx(record["metrics"]["map"])  # K beyond the database: all
    lists = record["data_provenance"]["lists"]  # what was read, so a table can tell the lists apart
    assert set(lists) == {"test.txt", "database.txt", "train.txt"}
    assert all(len(entry["sha256"]) == 64 for entry in lists.values())
