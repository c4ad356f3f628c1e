"""Protocols: sizes, disjointness, determinism, device residency, loaders and their errors. The tests that read
the real datasets (needs_mnist, needs_cifar10_copy) are marked slow: ``pytest -m slow`` runs them."""

import numpy as np
import pytest
from conftest import DATA_ROOT, needs_cifar10_copy, needs_mnist

from bench.data import PROTOCOLS, _images, load_split
from bench.errors import BenchError

BY_NAME = {p.name: p for p in PROTOCOLS}


def test_digits_protocol():
    s = load_split(BY_NAME["digits"], "pixels", "cpu")
    idx = s.indices
    assert len(idx["query"]) == 100 and len(idx["database"]) == 1697
    assert np.array_equal(idx["train"], idx["database"]) and not set(idx["query"]) & set(idx["database"])
    assert np.bincount(s.y_query.numpy()).tolist() == [10] * 10
    assert s.x_query.dtype.is_floating_point and 0 <= float(s.x_query.min()) and float(s.x_query.max()) <= 1
    assert s.x_train.data_ptr() == s.x_database.data_ptr()  # shared, not copied
    images = load_split(BY_NAME["digits"], "images", "cpu")
    assert images.x_query.shape == (100, 1, 8, 8) and str(images.x_query.dtype) == "torch.uint8"


def test_split_uses_the_protocol_seed_only():
    y = np.repeat(np.arange(10), 700)
    cao = BY_NAME["cifar10-cao2018"]
    a, b = cao.split_indices(y), cao.split_indices(y)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert len(a["query"]) == 1000 and len(a["train"]) == 5000 and len(a["database"]) == 1000
    assert not (
        set(a["query"]) & set(a["train"])
        or set(a["query"]) & set(a["database"])
        or set(a["train"]) & set(a["database"])
    )


def test_too_small_class_is_an_error():
    with pytest.raises(BenchError, match="class 1 has 3 images, needs 100"):
        BY_NAME["mnist-dizaji2018"].split_indices(np.array([0] * 200 + [1] * 3))


@needs_mnist
def test_mnist_dizaji_protocol():
    s = load_split(BY_NAME["mnist-dizaji2018"], "pixels", "cpu", str(DATA_ROOT))
    assert s.x_query.shape == (1000, 784) and s.x_database.shape == (69000, 784)
    assert np.bincount(s.y_query.numpy()).tolist() == [100] * 10
    data = _images(BY_NAME["mnist-dizaji2018"].loader, str(DATA_ROOT), False)
    assert data.x.shape == (70000, 1, 28, 28) and np.bincount(data.y).tolist()[:2] == [6903, 7877]


@needs_mnist
def test_fashion_mnist_and_usps_load():
    fashion = _images(BY_NAME["fashion-mnist-dizaji2018"].loader, str(DATA_ROOT), False)
    assert fashion.x.shape == (70000, 1, 28, 28) and np.bincount(fashion.y).tolist() == [7000] * 10
    usps = _images(BY_NAME["usps-test"].loader, str(DATA_ROOT), False)
    assert usps.x.shape == (2007, 1, 16, 16) and usps.y.min() == 0 and usps.y.max() == 9
    assert usps.x.max() > 200 and usps.x.min() == 0


def test_missing_usps_and_cifar_say_where_they_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHBENCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(BenchError, match=r"USPS not found under data root .*usps\.t\.bz2"):
        BY_NAME["usps-test"].loader(tmp_path, False)
    with pytest.raises(BenchError, match=r"CIFAR-10 not found .*cifar-10-batches-py.*unpack\.py"):
        BY_NAME["cifar10-cao2018"].loader(tmp_path, False)


@needs_cifar10_copy
def test_cifar10_is_rebuilt_into_the_cache_never_into_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("HASHBENCH_CACHE", str(tmp_path))
    before = sorted(p.name for p in (DATA_ROOT / "cifar10").iterdir())
    data = BY_NAME["cifar10-cao2018"].loader(DATA_ROOT, False)
    assert data.x.shape == (60000, 3, 32, 32) and np.bincount(data.y).tolist() == [6000] * 10
    assert (tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch").exists()
    assert sorted(p.name for p in (DATA_ROOT / "cifar10").iterdir()) == before


@needs_mnist
def test_download_asks_torchvision_for_missing_files(tmp_path, monkeypatch):
    """No network here: a stand-in for torchvision's MNIST "downloads" by copying the official files, the way
    torchvision lays them out (root/MNIST/raw), and the loader then reads and checks them."""
    import shutil

    import torchvision.datasets

    calls = []

    class FakeMNIST:
        resources = torchvision.datasets.MNIST.resources

        def __init__(self, root, download=False):
            calls.append((root, download))
            shutil.copytree(DATA_ROOT / "MNIST" / "raw", tmp_path / "MNIST" / "raw")

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    with pytest.raises(BenchError, match="MNIST not found"):
        BY_NAME["mnist-dizaji2018"].loader(tmp_path, False)
    data = BY_NAME["mnist-dizaji2018"].loader(tmp_path, True)
    assert calls == [(str(tmp_path), True)] and data.x.shape == (70000, 1, 28, 28)


# The toolkits' protocols from list files used as given (tests/test_listfiles.py reads tiny sets through them):
# name -> (toolkit folder, labels per line, mAP@K cutoffs).
LIST_PROTOCOLS = {
    "cifar10-i": ("cifar10", 10, (54000,)),
    "cifar10-ii": ("cifar10", 10, (50000,)),
    "nuswide-21": ("nus_wide", 21, (5000,)),
    "nuswide-81": ("nus_wide", 81, (5000,)),
    "coco": ("coco", 80, (5000,)),
    "imagenet-100": ("imagenet", 100, (1000,)),
    "mirflickr-25k": ("mirflickr", 38, (1000, 20000)),
}


@pytest.mark.parametrize("name", LIST_PROTOCOLS)
def test_list_protocols_say_where_their_lists_go_when_they_are_missing(name, tmp_path):
    folder, n_labels, topk = LIST_PROTOCOLS[name]
    protocol = BY_NAME[name]
    assert protocol.topk == topk and protocol.loader.n_labels == n_labels
    assert f"<root>/{folder}" in protocol.description and f"MAP@{topk[-1]}" in protocol.description
    with pytest.raises(BenchError) as error:
        load_split(protocol, "images", "cpu", str(tmp_path))
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{name}: no list files under data root {tmp_path}")
    assert f"test.txt, database.txt, train.txt in {tmp_path / folder / name} or {tmp_path / folder} " in message
    assert not list(tmp_path.iterdir())  # the data root is only read
