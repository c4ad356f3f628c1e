"""Datasets, protocols and the device-resident split cache.

A protocol is a dataset plus a fixed, seeded split into queries, database and training set, described in words.
Splits use the protocol's own seed, never the run seed, so every method sees the same sets. Images are loaded
once per process and uploaded once per device as uint8 tensors; the views methods get (``pixels``: float32 in
[0,1], flattened; ``images``: uint8 (n, c, h, w); ``gist``: our 512-d GIST, ``bench.gist``) are derived on the
device and cached (GIST also on disk, in the cache folder).

Data root: ``--data-root``, else the ``HASHBENCH_DATA`` environment variable, else ``~/.cache/hashbench/data``.
The root is only read; ``--download`` lets torchvision download missing files into it.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import hashlib
import json
import os
import subprocess
import sys
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import torch

from bench.errors import BenchError, unknown
from bench.hookspecs import hookimpl

DATA_ENV = "HASHBENCH_DATA"
CACHE_ENV = "HASHBENCH_CACHE"


def default_data_root() -> Path:
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "hashbench" / "data")


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hashbench")


@dataclasses.dataclass(frozen=True)
class Images:
    """A whole dataset in memory: uint8 images (n, c, h, w) and int64 class ids (n,)."""

    x: np.ndarray
    y: np.ndarray


# ---------------------------------------------------------------------------------------------------- loaders


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _missing(name: str, root: Path, looked: list[Path], how: str) -> BenchError:
    where = ", ".join(str(p) for p in looked)
    return BenchError(
        f"{name} not found under data root {root} (looked for {where}). {how} "
        f"Set the root with --data-root or {DATA_ENV}, or pass --download to fetch it with torchvision."
    )


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format), gzipped or not."""
    data = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    n_dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * n_dims).reshape(shape)


def _load_idx_dataset(torchvision_class, folder: str, name: str, root: Path, download: bool) -> Images:
    """MNIST-format datasets: train and test joined (train first), files checked against torchvision's md5s."""
    raw = root / folder / "raw"
    resources = {os.path.basename(url): md5 for url, md5 in torchvision_class.resources}
    paths = {f: raw / f for f in resources}
    if download and not all(p.exists() for p in paths.values()):
        torchvision_class(str(root), download=True)
    for f, path in paths.items():
        if not path.exists():
            raise _missing(name, root, [path], f"Expected the four official .gz IDX files in {raw}.")
        if _md5(path) != resources[f]:
            raise BenchError(
                f"{name}: checksum mismatch for {path} (corrupted or not the official file); "
                f"delete it and fetch it again (--download)"
            )
    part = lambda kind, split: _read_idx(paths[next(f for f in resources if f.startswith(f"{split}-{kind}"))])  # noqa
    x = np.concatenate([part("images", "train"), part("images", "t10k")])[:, None]
    y = np.concatenate([part("labels", "train"), part("labels", "t10k")]).astype(np.int64)
    return Images(x, y)


def load_digits(root: Path, download: bool) -> Images:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16 scaled to 0..255)."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    x = np.round(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    return Images(x, digits.target.astype(np.int64))


def load_mnist(root: Path, download: bool) -> Images:
    from torchvision.datasets import MNIST

    return _load_idx_dataset(MNIST, "MNIST", "MNIST", root, download)


def load_fashion_mnist(root: Path, download: bool) -> Images:
    from torchvision.datasets import FashionMNIST

    return _load_idx_dataset(FashionMNIST, "FashionMNIST", "Fashion-MNIST", root, download)


def load_usps_test(root: Path, download: bool) -> Images:
    """USPS test split (2,007 16x16 images), the LIBSVM file torchvision reads; only this split is available
    on the development machines."""
    from torchvision.datasets import USPS

    url, filename, md5 = USPS.split_list["test"]
    path = root / "USPS" / filename
    if download and not path.exists():
        USPS(str(root / "USPS"), train=False, download=True)
    if not path.exists():
        raise _missing("USPS", root, [path], "Expected the LIBSVM file usps.t.bz2.")
    if _md5(path) != md5:
        raise BenchError(f"USPS: checksum mismatch for {path}; delete it and fetch it again (--download)")
    rows = [line.split() for line in bz2.open(path).read().decode().splitlines() if line.strip()]
    y = np.array([int(float(r[0])) - 1 for r in rows], np.int64)
    x = np.array([[float(t.split(":")[1]) for t in r[1:]] for r in rows], np.float64)
    x = np.round((x + 1) / 2 * 255).clip(0, 255).astype(np.uint8).reshape(-1, 1, 16, 16)
    return Images(x, y)


def _cifar_folder(root: Path, download: bool) -> Path:
    """The official ``cifar-10-batches-py`` folder: under the root, under ``root/cifar10``, or rebuilt into the
    cache from the lossless copy that ships with ``unpack.py`` (never written into the data root)."""
    candidates = [root / "cifar-10-batches-py", root / "cifar10" / "cifar-10-batches-py"]
    found = next((c for c in candidates if c.is_dir()), None)
    if found:
        return found
    unpacker = root / "cifar10" / "unpack.py"
    rebuilt = cache_dir() / "cifar10" / "cifar-10-batches-py"
    if unpacker.exists() and not rebuilt.is_dir():
        tmp = cache_dir() / f"cifar10.tmp{os.getpid()}"
        done = subprocess.run([sys.executable, str(unpacker), str(tmp)], capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"CIFAR-10: {unpacker} failed: {(done.stderr or done.stdout).strip()[-300:]}")
        rebuilt.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / "cifar-10-batches-py", rebuilt)
    if rebuilt.is_dir():
        return rebuilt
    if download:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(root), download=True)
        return candidates[0]
    raise _missing("CIFAR-10", root, candidates + [unpacker], "Expected the official python batches.")


def load_cifar10(root: Path, download: bool) -> Images:
    """CIFAR-10, train (50,000) then test (10,000), read by torchvision, which checks every file's md5."""
    from torchvision.datasets import CIFAR10

    folder = _cifar_folder(root, download)
    parts = []
    for train in (True, False):
        try:
            parts.append(CIFAR10(str(folder.parent), train=train, download=False))
        except RuntimeError as e:
            raise BenchError(f"CIFAR-10 in {folder}: {e} (corrupted files fail the md5 check)") from None
    x = np.concatenate([p.data for p in parts]).transpose(0, 3, 1, 2)
    y = np.concatenate([np.asarray(p.targets) for p in parts]).astype(np.int64)
    return Images(np.ascontiguousarray(x), y)


@dataclasses.dataclass(frozen=True)
class ListFile:
    """A list-file dataset, the format of the thuml/DeepHash repositories (NUS-WIDE, MS-COCO): text lines
    ``image/path.jpg 0 1 0 ...`` (a path, then the multi-hot labels) in ``root/folder/*.txt``. Every list among
    ``lists`` that exists is read and lines repeated across them (train.txt is a sample of database.txt) are kept
    once; the protocol draws its own split. Paths are relative to the folder (or to the root). Images are decoded
    once, resized to ``size`` x ``size`` RGB and cached in the cache folder, keyed by the lists' contents."""

    folder: str
    size: int = 64
    lists: tuple = ("test.txt", "database.txt", "train.txt")

    @property
    def __name__(self) -> str:  # names the GIST cache file like the function loaders
        return f"list-{self.folder}-{self.size}"

    def __call__(self, root: Path, download: bool) -> Images:
        folder = Path(root) / self.folder
        files = [folder / f for f in self.lists if (folder / f).is_file()]
        if not files:
            raise _missing(
                self.folder,
                root,
                [folder / f for f in self.lists],
                "Expected list files with lines 'image/path.jpg 0 1 0 ...' (the thuml/DeepHash format); "
                "the images are not downloadable here, get them from the dataset's owners.",
            )
        entries, seen = [], set()
        for f in files:
            for number, line in enumerate(f.read_text().splitlines(), 1):
                parts = line.split()
                if not parts or parts[0] in seen:
                    continue
                try:
                    labels = [int(v) for v in parts[1:]]
                except ValueError:
                    raise BenchError(
                        f"{f}:{number}: labels must be 0/1 integers after the path; got {line!r}"
                    ) from None
                if entries and len(labels) != len(entries[0][1]):
                    raise BenchError(f"{f}:{number}: {len(labels)} labels, but earlier lines have {len(entries[0][1])}")
                seen.add(parts[0])
                entries.append((parts[0], labels))
        key = hashlib.sha1("\n".join(f"{p} {labels}" for p, labels in entries).encode() + str(self.size).encode())
        cache = cache_dir() / "lists" / f"{self.folder}-{len(entries)}-{self.size}-{key.hexdigest()[:10]}.npz"
        if cache.exists():
            stored = np.load(cache)
            return Images(stored["x"], stored["y"])
        x = np.stack([self._read(folder, Path(root), p) for p, _ in entries])
        y = np.array([labels for _, labels in entries], np.uint8)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, x=x, y=y)
        os.replace(tmp, cache)
        return Images(x, y)

    def _read(self, folder: Path, root: Path, relative: str) -> np.ndarray:
        from PIL import Image

        path = next((p for p in (folder / relative, root / relative) if p.is_file()), None)
        if path is None:
            raise BenchError(f"{self.folder}: image {relative} (listed) not found under {folder} or {root}")
        with Image.open(path) as image:
            image = image.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
            return np.asarray(image, np.uint8).transpose(2, 0, 1)


# ---------------------------------------------------------------------------------------------------- protocols


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A dataset and its split. ``train_per_class=None``: the training set is the database (DH/Dizaji style);
    otherwise that many images per class are drawn for training and removed from the database (Cao/DQN style).
    Multi-label data (NUS-WIDE, MS-COCO) is split by counts instead: ``query_count`` random queries, the rest the
    database, and ``train_count`` training images drawn from the database (DHN/HashNet/Cao)."""

    name: str
    description: str
    loader: object  # (root: Path, download: bool) -> Images
    query_per_class: int
    train_per_class: int | None = None
    topk: tuple[int, ...] = (1000,)  # the mAP@K cutoffs the papers report for this protocol
    seed: int = 0  # the split's own seed, never the run seed
    # "clustering": no queries; methods train on every item, which are then clustered into as many clusters as
    # there are classes and scored by NMI/ACC (bench.metrics.evaluate_clustering).
    task: str = "retrieval"
    query_count: int | None = None
    train_count: int | None = None

    def split_indices(self, y: np.ndarray) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        if self.query_count is not None:
            if len(y) <= self.query_count + (self.train_count or 0):
                raise BenchError(
                    f"protocol {self.name}: {len(y)} items, needs more than "
                    f"{self.query_count} queries + {self.train_count or 0} training items"
                )
            order = rng.permutation(len(y))
            database = np.sort(order[self.query_count :])
            train = np.sort(rng.choice(database, self.train_count, replace=False)) if self.train_count else database
            return {"query": np.sort(order[: self.query_count]), "database": database, "train": train}
        query, train = [], []
        for c in np.unique(y):
            members = rng.permutation(np.flatnonzero(y == c))
            need = self.query_per_class + (self.train_per_class or 0)
            if len(members) < need:
                raise BenchError(f"protocol {self.name}: class {c} has {len(members)} images, needs {need}")
            query.append(members[: self.query_per_class])
            if self.train_per_class:
                train.append(members[self.query_per_class : need])
        query = np.sort(np.concatenate(query))
        rest = np.setdiff1d(np.arange(len(y)), query)
        if self.train_per_class is None:
            return {"query": query, "database": rest, "train": rest}
        train = np.sort(np.concatenate(train))
        return {"query": query, "database": np.setdiff1d(rest, train), "train": train}


@dataclasses.dataclass
class Split:
    """Device-resident tensors of one protocol in one input view: ``x_query``, ``x_database``, ``x_train`` and
    the matching ``y_*`` (int64 class ids), plus the index arrays into the dataset."""

    protocol: str
    view: str
    x_query: torch.Tensor
    x_database: torch.Tensor
    x_train: torch.Tensor
    y_query: torch.Tensor
    y_database: torch.Tensor
    y_train: torch.Tensor
    indices: dict
    seed: int = 0  # the protocol's split seed

    def validation(self, per_class: int = 100, max_database: int = 10_000) -> Validation:
        """A model-selection split carved from the training set, never from the queries: ``per_class`` training
        items per class (at most a tenth of the class) as validation queries, and up to ``max_database`` of the
        other training items as their database. Drawn with the split's seed, so every method and run sees the
        same one. Unsupervised methods use its labels only to choose an epoch; the record says so."""
        rng = np.random.default_rng(self.seed + 1)
        y = self.y_train.cpu().numpy()
        if y.ndim == 2:  # multi-label: per_class x (number of labels) random items, at most a tenth
            query = np.sort(rng.permutation(len(y))[: max(1, min(per_class * y.shape[1], len(y) // 10))])
        else:
            classes = np.unique(y)
            take = max(1, min(per_class, min(int((y == c).sum()) for c in classes) // 10))
            query = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:take] for c in classes]))
        rest = np.setdiff1d(np.arange(len(y)), query)
        database = np.sort(rng.permutation(rest)[:max_database])
        q, d = torch.from_numpy(query).to(self.x_train.device), torch.from_numpy(database).to(self.x_train.device)
        return Validation(self.x_train[q], self.y_train[q], self.x_train[d], self.y_train[d])


@dataclasses.dataclass
class Validation:
    """Queries and database for model selection, all drawn from the training set."""

    x_query: torch.Tensor
    y_query: torch.Tensor
    x_database: torch.Tensor
    y_database: torch.Tensor

    def score(self, encode) -> float:
        """mAP of ``encode`` (inputs -> codes) on this split, the selection criterion of the deep methods."""
        from bench.metrics import evaluate

        return evaluate(encode(self.x_query), encode(self.x_database), self.y_query, self.y_database, topk=())["map"]

    def describe(self) -> str:
        return f"{len(self.y_query)} queries vs {len(self.y_database)} database items, both from the training set"


PROTOCOLS = [
    Protocol(
        "digits",
        "scikit-learn's bundled 8x8 digits (1,797 images, offline everywhere): 10 queries per "
        "class (100); the other 1,697 images are the database and the training set.",
        load_digits,
        10,
    ),
    Protocol(
        "mnist-dizaji2018",
        "MNIST, 70,000 28x28 digits (train+test), the DH/Dizaji protocol: 100 queries "
        "per class (1,000); the other 69,000 images are the database and the training set.",
        load_mnist,
        100,
    ),
    Protocol(
        "fashion-mnist-dizaji2018",
        "Fashion-MNIST, 70,000 28x28 images, the MNIST DH/Dizaji protocol "
        "(our extension): 1,000 queries (100 per class); the other 69,000 are database and training set.",
        load_fashion_mnist,
        100,
    ),
    Protocol(
        "usps-test",
        "USPS test split only (2,007 16x16 digits; the train split is not available here): 20 "
        "queries per class (200); the other 1,807 are the database and the training set.",
        load_usps_test,
        20,
    ),
    Protocol(
        "cifar10-dizaji2018",
        "CIFAR-10, 60,000 32x32 colour images, the DH/Dizaji protocol: 1,000 queries "
        "(100 per class); the other 59,000 are the database and the training set.",
        load_cifar10,
        100,
    ),
    Protocol(
        "digits-clustering",
        "Clustering: all 1,797 scikit-learn digits, 10 clusters (offline everywhere).",
        load_digits,
        0,
        task="clustering",
    ),
    Protocol(
        "mnist",
        "Clustering (Dizaji Table 2, JULE/DEPICT's MNIST-full): all 70,000 MNIST digits, 10 "
        "clusters, scored on every image.",
        load_mnist,
        0,
        task="clustering",
    ),
    Protocol(
        "usps",
        "Clustering: the USPS test split only (2,007 16x16 digits; the paper's USPS has 11,000 "
        "images, not available here), 10 clusters.",
        load_usps_test,
        0,
        task="clustering",
    ),
    Protocol(
        "cifar10-cao2018",
        "CIFAR-10, the DQN/Cao protocol drawn disjoint: 1,000 queries (100 per class), "
        "5,000 training images (500 per class), the other 54,000 are the database (MAP@54000).",
        load_cifar10,
        100,
        train_per_class=500,
        topk=(1000, 54000),
    ),
    Protocol(
        "mnist-cao2018",
        "MNIST, 70,000 28x28 digits, the DQN/Cao protocol drawn disjoint (our extension): "
        "1,000 queries (100 per class), 5,000 training images (500 per class), the other 64,000 are the "
        "database.",
        load_mnist,
        100,
        train_per_class=500,
        topk=(1000, 64000),
    ),
    Protocol(
        "nuswide-cao2018",
        "NUS-WIDE (81 concepts, multi-label) from list files in <root>/nus_wide (the "
        "thuml format; images from the user, resized to 64x64): 5,000 random queries, the rest the database, "
        "10,000 training images drawn from the database; MAP@5000.",
        ListFile("nus_wide"),
        0,
        topk=(5000,),
        query_count=5000,
        train_count=10_000,
    ),
    Protocol(
        "coco-cao2018",
        "MS-COCO 2014 (80 categories, multi-label, images without a category pruned) from "
        "list files in <root>/coco (the thuml format; images from the user, resized to 64x64): 5,000 random "
        "queries, the rest the database, 10,000 training images drawn from the database; MAP@5000.",
        ListFile("coco"),
        0,
        topk=(5000,),
        query_count=5000,
        train_count=10_000,
    ),
]


@hookimpl
def bench_protocols():
    return PROTOCOLS


# ---------------------------------------------------------------------------------------------------- caching

VIEWS = ("pixels", "images", "gist")


@cache
def _images(loader, root: str, download: bool) -> Images:
    return loader(Path(root), download)


@cache
def _device_images(protocol: Protocol, root: str, download: bool, device: str):
    """The dataset's uint8 images and labels on the device (uploaded once), and the split indices."""
    data = _images(protocol.loader, root, download)
    indices = protocol.split_indices(data.y)
    return torch.from_numpy(data.x).to(device), torch.from_numpy(data.y).to(device), indices


@cache
def _gist_features(protocol: Protocol, root: str, download: bool, device: str) -> torch.Tensor:
    """GIST of every image of the dataset, computed on the device once and cached on disk (the cache folder,
    never the data root), keyed by the dataset, its size and the GIST parameters."""
    from bench.gist import GIST_PARAMS, gist

    x, _, _ = _device_images(protocol, root, download, device)
    key = hashlib.sha1(json.dumps(GIST_PARAMS, sort_keys=True).encode()).hexdigest()[:10]
    path = cache_dir() / "features" / f"{protocol.loader.__name__}-{x.shape[0]}-gist-{key}.pt"
    if path.exists():
        return torch.load(path).to(device)
    print(f"computing GIST of {x.shape[0]} images on {device} (cached in {path}) ...", file=sys.stderr)
    features = gist(x)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(features.cpu(), tmp)
    os.replace(tmp, path)
    return features


@lru_cache(maxsize=8)
def load_split(
    protocol: Protocol, view: str, device: str = "cpu", root: str | None = None, download: bool = False
) -> Split:
    """The protocol's split in one input view, on ``device``. Cached per process."""
    if view not in VIEWS:
        raise unknown("input view", view, VIEWS)
    root = str(root or default_data_root())
    x, y, idx = _device_images(protocol, root, download, str(device))
    if view == "pixels":
        x = x.reshape(x.shape[0], -1).to(torch.float32).div_(255.0)
    elif view == "gist":
        x = _gist_features(protocol, root, download, str(device))
    part = {
        k: (x[torch.from_numpy(v).to(x.device)], y[torch.from_numpy(v).to(x.device)])
        for k, v in idx.items()
        if k != "train"
    }
    # DH-style protocols train on the database itself: share the tensors instead of holding a second copy.
    same = np.array_equal(idx["train"], idx["database"])
    train = (
        part["database"]
        if same
        else (x[torch.from_numpy(idx["train"]).to(x.device)], y[torch.from_numpy(idx["train"]).to(x.device)])
    )
    return Split(
        protocol.name,
        view,
        part["query"][0],
        part["database"][0],
        train[0],
        part["query"][1],
        part["database"][1],
        train[1],
        idx,
        protocol.seed,
    )
