"""Datasets, protocols and the device-resident split cache.

A protocol is a dataset plus a fixed, seeded split into queries, database and training set, described in words.
Splits use the protocol's own seed, never the run seed, so every method sees the same sets. Images are loaded
once per process and uploaded once per device as uint8 tensors; the views methods get (``pixels``: float32 in
[0,1], flattened; ``images``: uint8 (n, c, h, w); ``gist``: our 512-d GIST, ``bench.gist``) are derived on the
device and cached (GIST also on disk, in the cache folder).

Data root: ``--data-root``, else the ``HASHBENCH_DATA`` environment variable, else ``~/.cache/hashbench/data``.
The root is only read; ``--download`` lets torchvision download missing files into it.

List-file datasets (NUS-WIDE, MS-COCO, ImageNet-100, MIRFlickr, CIFAR-10 as the toolkits list it) come from the
user as the DeepHash-pytorch / FIRe / HashNet list files and the images they name. ``ListFile`` merges the lists
and lets the protocol draw its split (the Cao et al. 2018 protocols); ``ListSplit`` uses them as given (the
toolkits' protocols) and caches the images at the side the ImageNet backbones need (256, cropped to 224 by the
backbone) as a memory-mapped .npy file. Either records the lists' sha256 in ``Split.provenance``.
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
from concurrent.futures import ThreadPoolExecutor
from functools import cache, lru_cache
from pathlib import Path, PurePosixPath

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
    """A whole dataset: uint8 images (n, c, h, w) (in memory, or a memory-mapped cache file) and int64 class ids
    (n,) or 0/1 multi-hot labels (n, k). ``split``: the split the data comes with (list files used as given:
    ``{"query", "database", "train"}`` index arrays), else None and the protocol draws one. ``provenance``: where
    the data came from (list files and their sha256), for the run record."""

    x: np.ndarray
    y: np.ndarray
    split: dict | None = None
    provenance: dict | None = None


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


# ---------------------------------------------------------------------------------------------------- list files

LIST_FILES = ("test.txt", "database.txt", "train.txt")  # the toolkits' names: queries, database, training set
SPLIT_OF = {"test.txt": "query", "database.txt": "database", "train.txt": "train"}
DECODE_THREADS = 8  # PIL decodes and resizes outside the GIL


class ImagePaths:
    """Finds the image a list line names. The toolkits' lists hold paths relative to their data folder
    (``images/x.jpg``, ``4665.png``) or absolute paths of their authors' machines
    (``/home/caozhangjie/run-czj/dataset/imagenet/val_image/x.JPEG``). A listed absolute path that exists is used
    as it is; otherwise the path's leading folders are dropped one at a time, longest remainder first, until the
    remainder exists under one of ``bases`` (tried in order). The prefix dropped for one line is tried first for
    the next ones (one lookup per image), and ``rewrites`` reports each (prefix -> base) for the record."""

    def __init__(self, bases):
        self.bases = list(dict.fromkeys(Path(b) for b in bases))
        self._learned: dict[tuple, Path] = {}  # dropped leading parts -> the base the rest was found under

    def __call__(self, listed: str) -> Path | None:
        if Path(listed).is_absolute() and Path(listed).is_file():
            return Path(listed)
        parts = PurePosixPath(listed).parts
        for prefix, base in self._learned.items():
            if parts[: len(prefix)] == prefix and base.joinpath(*parts[len(prefix) :]).is_file():
                return base.joinpath(*parts[len(prefix) :])
        for i in range(1 if parts[:1] == ("/",) else 0, len(parts)):  # never joins an absolute path onto a base
            for base in self.bases:
                candidate = base.joinpath(*parts[i:])
                if candidate.is_file():
                    if i:
                        self._learned[parts[:i]] = base
                    return candidate
        return None

    @property
    def rewrites(self) -> dict[str, str]:
        return {str(PurePosixPath(*prefix)): str(base) for prefix, base in self._learned.items()}


def decode_image(path: Path, size: int) -> np.ndarray:
    """One image as uint8 (3, size, size) RGB, resized with PIL's bilinear filter (antialiased when shrinking) to
    size x size without keeping the aspect ratio, as HashNet's ResizeImage(256) and FIRe's Resize((256, 256))."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR)
        return np.asarray(image, np.uint8).transpose(2, 0, 1)


def _decode_into(path: Path, files: list, where: list, size: int) -> None:
    """Decode ``files`` into a new .npy file of uint8 (n, 3, size, size) at ``path``, written in place through a
    memory map (the whole array never sits in memory), in threads."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(files), 3, size, size))

    def fill(i: int) -> None:
        try:
            out[i] = decode_image(files[i], size)
        except (OSError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
            raise BenchError(f"{where[i]}: cannot read image {files[i]}: {e}") from None

    with ThreadPoolExecutor(max_workers=min(DECODE_THREADS, os.cpu_count() or 1)) as pool:
        list(pool.map(fill, range(len(files))))
    out.flush()


def _short(line: str, limit: int = 100) -> str:
    line = line.strip()
    return repr(line if len(line) <= limit else line[:limit] + "...")


def read_list(path: Path) -> tuple[list[tuple[str, tuple, int]], str]:
    """One list file as its lines (image path, labels, line number) and its sha256. A line is an image path and
    then its 0/1 label vector (one-hot or multi-hot: DeepHash-pytorch, HashNet, FIRe) or one class id (FIRe's
    single-label lists); blank lines are skipped. A malformed line is an error naming file:line."""
    data = path.read_bytes()
    rows = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) == 1:
            raise BenchError(f"{path}:{number}: no labels after the image path ('path 0 1 0 ...'): {_short(line)}")
        try:
            labels = tuple(int(v) for v in parts[1:])
        except ValueError:
            raise BenchError(
                f"{path}:{number}: labels must be integers after the path (a 0/1 vector or one class id); "
                f"got {_short(line)}"
            ) from None
        if len(labels) > 1 and not set(labels) <= {0, 1}:
            raise BenchError(f"{path}:{number}: a label vector holds only 0 and 1; got {_short(line)}")
        rows.append((parts[0], labels, number))
    return rows, hashlib.sha256(data).hexdigest()


@dataclasses.dataclass(frozen=True)
class ListFile:
    """A list-file dataset, the format of the thuml/DeepHash repositories (NUS-WIDE, MS-COCO): text lines
    ``image/path.jpg 0 1 0 ...`` (a path, then the multi-hot labels) in ``root/folder/*.txt``. Every list among
    ``lists`` that exists is read and lines repeated across them (train.txt is a sample of database.txt) are kept
    once; the protocol draws its own split. Paths are found as ``ImagePaths`` finds them (relative to the folder or
    the root, or absolute paths of another machine with their leading folders dropped). Images are decoded once,
    resized to ``size`` x ``size`` RGB and cached in the cache folder, keyed by the lists' contents."""

    folder: str
    size: int = 64
    lists: tuple = LIST_FILES

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
        provenance = {
            "source": "list files merged (an image listed twice kept once); the protocol draws its own split",
            "folder": str(folder),
            "lists": {f.name: {"sha256": hashlib.sha256(f.read_bytes()).hexdigest()} for f in files},
            "image_size": self.size,
        }
        key = hashlib.sha1("\n".join(f"{p} {labels}" for p, labels in entries).encode() + str(self.size).encode())
        cache = cache_dir() / "lists" / f"{self.folder}-{len(entries)}-{self.size}-{key.hexdigest()[:10]}.npz"
        if cache.exists():
            stored = np.load(cache)
            return Images(stored["x"], stored["y"], provenance=provenance)
        resolve = ImagePaths([folder, Path(root)])
        x = np.stack([self._read(resolve, folder, Path(root), p) for p, _ in entries])
        y = np.array([labels for _, labels in entries], np.uint8)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, x=x, y=y)
        os.replace(tmp, cache)
        return Images(x, y, provenance={**provenance, "path_rewrites": resolve.rewrites})

    def _read(self, resolve: ImagePaths, folder: Path, root: Path, relative: str) -> np.ndarray:
        path = resolve(relative)
        if path is None:
            raise BenchError(f"{self.folder}: image {relative} (listed) not found under {folder} or {root}")
        return decode_image(path, self.size)


@dataclasses.dataclass(frozen=True)
class ListSplit:
    """A protocol's split read from the toolkits' list files, unchanged, and used as given: ``test.txt`` the
    queries, ``database.txt`` the database, ``train.txt`` the training set, each in its order (the files
    DeepHash-pytorch, FIRe and HashNet ship: lines ``path 0 1 0 ...``, an image path and its one-hot or multi-hot
    0/1 labels, or one class id). They are looked for in ``root/<folder>/<protocol>/``, then ``root/<folder>/`` (the
    toolkits' folder name), so several protocols of one dataset live side by side; images are found as
    ``ImagePaths`` finds them under the lists' folder, ``root/<folder>`` and the root. One-hot labels become class
    ids (the same relevance: sharing the one label); multi-hot ones stay 0/1 rows.

    Every listed image is decoded once (one listed in several files is stored once), resized to ``size`` x
    ``size`` RGB and cached as a .npy file in the cache folder, keyed by the listed paths and the size, and
    memory-mapped when read (copy-on-write, never written back). Footprint: n x 3 x size x size bytes, 192 KiB an
    image at 256 (CIFAR-10's 60,000 would take 11 GiB there; they are kept at 32, 3 KiB each). On a GPU the whole
    array is uploaded once; on the CPU it stays mapped, and a split part that is a contiguous run of the cache
    (the queries and the database, stored first, in their order) is a view of it, not a copy."""

    folder: str  # the toolkits' folder name under the data root
    protocol: str  # the protocol's own subfolder of it, tried first
    n_labels: int  # labels per line (or class ids below it); another protocol's lists are refused
    size: int = 256  # the cached side: 256 for the 224-px ImageNet backbones (Resize 256, crop 224); 32 for CIFAR
    train_is_database: bool = False  # the protocol trains on its database: train.txt must repeat database.txt

    @property
    def __name__(self) -> str:  # names the GIST cache file like the function loaders
        return f"lists-{self.folder}-{self.protocol}-{self.size}"

    def folders(self, root: Path) -> list[Path]:
        return [Path(root) / self.folder / self.protocol, Path(root) / self.folder]

    def __call__(self, root: Path, download: bool) -> Images:
        root = Path(root)
        folder = next((f for f in self.folders(root) if (f / LIST_FILES[0]).is_file()), None)
        if folder is None:
            raise BenchError(
                f"{self.protocol}: no list files under data root {root}: expected {', '.join(LIST_FILES)} in "
                f"{' or '.join(str(f) for f in self.folders(root))} (the toolkits' lists, lines 'path 0 1 0 ...') "
                f"and the images they name; the images are not downloadable here, get them from the dataset's owners"
            )
        absent = [f for f in LIST_FILES if not (folder / f).is_file()]
        if absent:
            raise BenchError(
                f"{self.protocol}: {folder} has {LIST_FILES[0]} but not {' or '.join(absent)} "
                "(all three are needed: queries, database, training set)"
            )
        lists = {name: read_list(folder / name) for name in LIST_FILES}
        split, listed, labels, where = self._index(folder, lists, own=self.folders(root)[0])
        x, found = self._cached_images(folder, root, listed, where)
        rows = np.array(labels, np.int64)
        if rows.shape[1] == 1:
            y, kind = rows[:, 0], "class ids"
        elif (rows.sum(1) == 1).all():
            y, kind = rows.argmax(1), "one-hot, read as class ids"
        else:
            y, kind = rows.astype(np.uint8), "multi-hot"
        provenance = {
            "source": "list files, split as given (test.txt: queries, database.txt: database, train.txt: training)",
            "folder": str(folder),
            "lists": {name: {"sha256": sha, "lines": len(lines)} for name, (lines, sha) in lists.items()},
            "labels": kind,
            "n_labels": self.n_labels,
            "images": len(listed),
            "image_size": self.size,
            "resize": f"bilinear to {self.size}x{self.size}, aspect ratio not kept",
            **found,
        }
        return Images(x, y, split=split, provenance=provenance)

    def _index(self, folder: Path, lists: dict, own: Path):
        """The split as index arrays into the distinct images (in order of first listing), their labels, and where
        each was first listed. Every line must have this protocol's number of labels, and an image listed twice
        the same labels."""
        index, labels, where, split = {}, [], [], {}
        for name, (lines, _) in lists.items():
            if not lines:
                raise BenchError(f"{folder / name}: no lines (expected 'path 0 1 0 ...')")
            part = []
            for path, values, number in lines:
                here = f"{folder / name}:{number}"
                if len(values) == 1 and not 0 <= values[0] < self.n_labels:
                    raise BenchError(f"{here}: class id {values[0]} outside 0..{self.n_labels - 1}")
                if len(values) > 1 and len(values) != self.n_labels:
                    raise BenchError(
                        f"{here}: {len(values)} labels, but {self.protocol} has {self.n_labels} "
                        f"(another protocol's lists? this one's go in {own})"
                    )
                if labels and len(values) != len(labels[0]):
                    raise BenchError(f"{here}: {len(values)} labels, but {where[0]} has {len(labels[0])}")
                i = index.get(path)
                if i is None:
                    i = index[path] = len(labels)
                    labels.append(values)
                    where.append(here)
                elif labels[i] != values:
                    raise BenchError(f"{here}: {path} is listed with other labels at {where[i]}")
                part.append(i)
            split[SPLIT_OF[name]] = np.array(part, np.int64)
        if self.train_is_database and not np.array_equal(split["train"], split["database"]):
            raise BenchError(
                f"{self.protocol} trains on its database: {folder / 'train.txt'} must list the images of "
                f"database.txt in the same order ({len(split['train'])} and {len(split['database'])} lines differ)"
            )
        return split, list(index), labels, where

    def _cached_images(self, folder: Path, root: Path, listed: list, where: list):
        """The images of ``listed`` (uint8, memory-mapped) and how their paths were found, decoded into the cache
        on the first call."""
        key = hashlib.sha256(("\n".join(listed) + f"\n{self.size}").encode()).hexdigest()[:16]
        stem = cache_dir() / "lists" / f"{self.folder}-{self.protocol}-{len(listed)}-{self.size}-{key}"
        npy, meta = Path(f"{stem}.npy"), Path(f"{stem}.json")
        if npy.exists() and meta.exists():
            return np.load(npy, mmap_mode="c"), json.loads(meta.read_text())
        resolve = ImagePaths([folder, root / self.folder, root])
        files = []
        for path, here in zip(listed, where):
            found = resolve(path)
            if found is None:
                raise BenchError(
                    f"{here}: image {path} not found (as listed, nor under {', '.join(map(str, resolve.bases))} "
                    "with its leading folders dropped)"
                )
            files.append(found)
        size_gib = len(files) * 3 * self.size**2 / 2**30
        print(
            f"{self.protocol}: decoding {len(files)} images at {self.size}x{self.size} into {npy} "
            f"({size_gib:.1f} GiB, once) ...",
            file=sys.stderr,
        )
        npy.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{stem}.tmp{os.getpid()}.npy")
        try:
            _decode_into(tmp, files, where, self.size)
            found = {"path_rewrites": resolve.rewrites, "cache": str(npy)}
            meta.write_text(json.dumps(found))
            os.replace(tmp, npy)
        finally:
            tmp.unlink(missing_ok=True)
        return np.load(npy, mmap_mode="c"), found


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
    the matching ``y_*`` (int64 class ids, or 0/1 multi-hot rows), plus the index arrays into the dataset."""

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
    provenance: dict | None = None  # where the data came from (list files: their sha256), for the record

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
    # The toolkits' protocols, from their list files used as given (bench.data.ListSplit): the lists in
    # <root>/<folder>/<protocol>/ or <root>/<folder>/, images cached at 256x256 (the ImageNet backbones centre-crop
    # 224 at test time, crop 224 at random in training) except CIFAR-10's 32x32 (resized to 224, as the toolkits).
    Protocol(
        "cifar10-i",
        "CIFAR-10 protocol I, DeepHash-pytorch's 'cifar10', from list files used as given: test.txt 1,000 "
        "queries (100 per class), train.txt 5,000 training images (500 per class), database.txt the other 54,000; "
        "MAP@54000, i.e. mAP over the whole database (the toolkit's topK -1). Lists in <root>/cifar10/cifar10-i or "
        "<root>/cifar10 (lines 'path 0 1 0 ...', one-hot read as class ids); images kept at 32x32.",
        ListSplit("cifar10", "cifar10-i", 10, size=32),
        0,
        topk=(54000,),
    ),
    Protocol(
        "cifar10-ii",
        "CIFAR-10 protocol II, DeepHash-pytorch's 'cifar10-2' (GreedyHash's), from list files used as given: "
        "test.txt 10,000 queries (1,000 per class), database.txt the other 50,000, which are also the training "
        "set (train.txt repeats database.txt); MAP@50000, i.e. mAP over the whole database (DeepHash-pytorch's "
        "topK -1, FIRe's R 50000). Lists in <root>/cifar10/cifar10-ii; images kept at 32x32.",
        ListSplit("cifar10", "cifar10-ii", 10, size=32, train_is_database=True),
        0,
        topk=(50000,),
    ),
    Protocol(
        "nuswide-21",
        "NUS-WIDE, the 21 most frequent concepts (multi-label), DeepHash-pytorch's 'nuswide_21' (the DPSH/DSDH "
        "split) from list files used as given: test.txt 2,100 queries (100 per concept), database.txt the other "
        "193,734 images, train.txt 10,500 of them (500 per concept); MAP@5000. Lists in <root>/nus_wide/nuswide-21 "
        "or <root>/nus_wide; images resized to 256x256 (about 36 GiB cached).",
        ListSplit("nus_wide", "nuswide-21", 21),
        0,
        topk=(5000,),
    ),
    Protocol(
        "nuswide-81",
        "NUS-WIDE, 81 concepts (multi-label), HashNet's lists ('nus_wide', DeepHash-pytorch's 'nuswide_81_m') "
        "used as given: test.txt 5,000 queries, database.txt the rest, train.txt 10,000 images sampled from the "
        "database; MAP@5000. Lists in <root>/nus_wide/nuswide-81 or <root>/nus_wide; images resized to 256x256 "
        "(192 KiB each).",
        ListSplit("nus_wide", "nuswide-81", 81),
        0,
        topk=(5000,),
    ),
    Protocol(
        "coco",
        "MS-COCO 2014, 80 categories (multi-label, images without one pruned), HashNet's lists used as given: "
        "test.txt 5,000 queries, database.txt 122,218 images, train.txt 10,000 sampled from the database; "
        "MAP@5000. Lists in <root>/coco/coco or <root>/coco; images resized to 256x256 (about 23 GiB cached).",
        ListSplit("coco", "coco", 80),
        0,
        topk=(5000,),
    ),
    Protocol(
        "imagenet-100",
        "ImageNet, 100 categories, HashNet's lists used as given: test.txt the 5,000 validation images of the "
        "categories as queries, database.txt their training images (about 128,000), train.txt 10,000 of those "
        "(100 per category); MAP@1000. Lists in <root>/imagenet/imagenet-100 or <root>/imagenet (one-hot read "
        "as class ids); images resized to 256x256 (about 24 GiB cached).",
        ListSplit("imagenet", "imagenet-100", 100),
        0,
        topk=(1000,),
    ),
    Protocol(
        "mirflickr-25k",
        "MIRFlickr-25K, 38 labels (multi-label), DeepHash-pytorch's 'mirflickr' lists used as given: test.txt "
        "1,000 queries, train.txt 4,000 training images, database.txt the other 20,000 (disjoint); MAP@20000, "
        "i.e. mAP over the whole database (the toolkit's topK -1), and MAP@1000 (FIRe's R, for its 24-label "
        "variant). Lists in <root>/mirflickr/mirflickr-25k or <root>/mirflickr; images resized to 256x256 "
        "(about 4.6 GiB cached).",
        ListSplit("mirflickr", "mirflickr-25k", 38),
        0,
        topk=(1000, 20000),
    ),
]


@hookimpl
def bench_protocols():
    return PROTOCOLS


# ---------------------------------------------------------------------------------------------------- caching

VIEWS = ("pixels", "images", "gist")
# The pixels view is a float32 copy of every image: refused beyond this (a 256x256 list-file set would need
# 150 GiB), with the views that fit named instead.
PIXELS_MAX_BYTES = 16 * 2**30


@cache
def _images(loader, root: str, download: bool) -> Images:
    return loader(Path(root), download)


@cache
def _device_images(protocol: Protocol, root: str, download: bool, device: str):
    """The dataset's uint8 images and labels on the device (uploaded once; on the CPU a memory-mapped cache stays
    mapped), and the split indices: the data's own (list files used as given), else the protocol's draw."""
    data = _images(protocol.loader, root, download)
    indices = data.split if data.split is not None else protocol.split_indices(data.y)
    return torch.from_numpy(data.x).to(device), torch.from_numpy(data.y).to(device), indices


@cache
def _gist_features(protocol: Protocol, root: str, download: bool, device: str) -> torch.Tensor:
    """GIST of every image of the dataset, computed on the device once and cached on disk (the cache folder,
    never the data root), keyed by the dataset, its size and the GIST parameters."""
    from bench.gist import GIST_PARAMS, gist

    x, _, _ = _device_images(protocol, root, download, device)
    lists = (_images(protocol.loader, root, download).provenance or {}).get("lists")  # other lists, other images
    key = hashlib.sha1(json.dumps([GIST_PARAMS, lists], sort_keys=True).encode()).hexdigest()[:10]
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


def _rows(x: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    """x[idx]: a view when idx is a contiguous ascending run (no copy of a memory-mapped or device array), else a
    gathered copy."""
    if len(idx) and idx[-1] - idx[0] + 1 == len(idx) and (len(idx) == 1 or (np.diff(idx) == 1).all()):
        return x[int(idx[0]) : int(idx[-1]) + 1]
    return x[torch.from_numpy(idx).to(x.device)]


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
        need = x[:1].numel() * x.shape[0] * 4
        if need > PIXELS_MAX_BYTES:
            raise BenchError(
                f"protocol {protocol.name}: the pixels view of {x.shape[0]} {'x'.join(map(str, x.shape[1:]))} images "
                f"takes {need / 2**30:.0f} GiB as float32 (at most {PIXELS_MAX_BYTES / 2**30:.0f} GiB); use the images "
                "view (deep methods) or --input gist"
            )
        x = x.reshape(x.shape[0], -1).to(torch.float32).div_(255.0)
    elif view == "gist":
        x = _gist_features(protocol, root, download, str(device))
    part = {k: (_rows(x, v), _rows(y, v)) for k, v in idx.items() if k != "train"}
    # DH-style protocols train on the database itself: share the tensors instead of holding a second copy.
    same = np.array_equal(idx["train"], idx["database"])
    train = part["database"] if same else (_rows(x, idx["train"]), _rows(y, idx["train"]))
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
        _images(protocol.loader, root, download).provenance,
    )
