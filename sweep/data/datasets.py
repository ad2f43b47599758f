"""Data sets decoded once into tensors, with a seeded, stratified validation split."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import inspect
import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sweep.config.paths import started_in
from sweep.config.searched import required
from sweep.errors import UserError


@dataclass(frozen=True)
class Dataset:
    """Train/val/test tensors: x is float32 of shape (n, *image_shape), in [0, 1] for images,
    standardized for tables; y int64 in [0, n_classes). Tables also name their feature
    columns and classes (sweep/data/tables.py)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    image_shape: tuple[int, ...]
    n_classes: int
    feature_names: tuple[str, ...] | None = None  # one per input, for features.csv
    class_names: tuple[str, ...] | None = None  # the label value of each class index

    def __post_init__(self) -> None:
        """Every Dataset is checked here, whoever made it (a built-in loader, data=csv or npz,
        a user's own loader): inf, -inf or NaN in any input or label of any split is a
        UserError naming the columns and the count of rows, raised before any training.
        Such a value makes every trial's loss non-finite (or scores a row silently)."""
        _check_finite(self)

    @property
    def n_inputs(self) -> int:
        """The number of input features of one example: the product of `image_shape`."""
        return int(np.prod(self.image_shape))

    def to(self, device: torch.device) -> Dataset:
        """This data on `device`. The copy is kept, so a sweep's trials copy it to a GPU once;
        only the latest one, as device memory is what runs out first."""
        key = (id(self), str(device))
        if key not in _ON_DEVICE:
            moved = {k: getattr(self, k).to(device) for k in _TENSORS}
            _ON_DEVICE.clear()
            # self is kept in the value too, so its id cannot be reused while the key lives
            _ON_DEVICE[key] = (self, dataclasses.replace(self, **moved))
        return _ON_DEVICE[key][1]


_TENSORS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
_ON_DEVICE: dict[tuple[int, str], tuple[Dataset, Dataset]] = {}
_SPLITS = ("train", "val", "test")


def _check_finite(data: Dataset) -> None:
    """Raise a UserError if a float input or label of any split is inf, -inf or NaN (see
    Dataset.__post_init__); one pass of torch.isfinite per tensor when all is well."""
    bad_x, bad_y, counts, kinds = None, 0, [], set()
    for part in _SPLITS:
        x, y = getattr(data, f"x_{part}"), getattr(data, f"y_{part}")
        rows = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        if x.is_floating_point() and x.numel() and not bool(torch.isfinite(x).all()):
            bad = ~torch.isfinite(x.reshape(len(x), -1))
            rows |= bad.any(dim=1)
            columns = bad.any(dim=0).cpu()
            bad_x = columns if bad_x is None else bad_x | columns
            kinds |= _kinds(x[bad.reshape(x.shape)])
        if y.is_floating_point() and y.numel() and not bool(torch.isfinite(y).all()):
            labels = ~torch.isfinite(y)
            rows |= labels
            bad_y += int(labels.sum())
            kinds |= _kinds(y[labels])
        counts.append(int(rows.sum()))
    if not sum(counts):
        return
    names = []
    if bad_x is not None:
        where = bad_x.nonzero().flatten().tolist()
        shape = tuple(data.x_train.shape[1:])
        for i in where[:5]:
            if data.feature_names and len(data.feature_names) == bad_x.numel():
                names.append(data.feature_names[i])
            else:  # an image: the input's position in it
                names.append(f"input {tuple(int(j) for j in np.unravel_index(i, shape))}")
        names[-1] += f" and {len(where) - 5} more" if len(where) > 5 else ""
    if bad_y:
        names.append("the labels")
    split = ", ".join(f"{n} {p}" for n, p in zip(counts, _SPLITS) if n)
    raise UserError(
        f"the data holds {' and '.join(sorted(kinds))} values in {sum(counts)} rows ({split}), "
        f"in {'column' if len(names) == 1 else 'columns'} {', '.join(names)}; l1sweep trains "
        "on finite numbers only (float32: |x| < 3.4e38): fix or drop those rows, or leave the "
        "columns out"
    )


def _kinds(values: torch.Tensor) -> set[str]:
    """Which of inf, -inf and NaN occur among `values`."""
    kinds = {"NaN"} if bool(torch.isnan(values).any()) else set()
    kinds |= {"inf"} if bool((values == math.inf).any()) else set()
    return kinds | ({"-inf"} if bool((values == -math.inf).any()) else set())


def split(
    x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stratified split: (x_keep, y_keep, x_held, y_held), the held part `fraction` of the rows."""
    if not 0.0 < fraction < 1.0:
        raise UserError(f"split fraction must be in (0, 1), got {fraction}")
    keep, held = stratified(y.numpy(), fraction, seed)
    keep, held = torch.from_numpy(np.sort(keep)), torch.from_numpy(np.sort(held))
    return x[keep], y[keep], x[held], y[held]


def stratified(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held) row indices of scikit-learn's `train_test_split(rows, test_size=fraction,
    random_state=seed, stratify=y)`: `held` is ceil(fraction * len(y)) rows, each class in
    proportion. ValueError (scikit-learn's) where a class has one row or a part is smaller
    than the number of classes."""
    from sklearn.model_selection import train_test_split

    keep, held = train_test_split(
        np.arange(len(y)), test_size=fraction, random_state=seed, stratify=y
    )
    return keep.astype(np.int64), held.astype(np.int64)


@functools.lru_cache(maxsize=4)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32) / 16.0  # pixel values are 0..16
    return x, torch.tensor(bunch.target, dtype=torch.int64)


@functools.lru_cache(maxsize=2)  # a sweep's trials share one seed: split and decode once
def load_digits(
    seed: int, val_fraction: float, test_fraction: float, test_seed: int, **_: object
) -> Dataset:
    """scikit-learn's 8x8 digits (1,797 images, 64 features in 0..1, 10 classes): a test
    split of `test_fraction` fixed by `test_seed`, the rest split by `seed` into training and
    `val_fraction` validation. Cached: a sweep's trials share it."""
    x, y = _digits()
    x_rest, y_rest, x_test, y_test = split(x, y, test_fraction, test_seed)
    x_train, y_train, x_val, y_val = split(x_rest, y_rest, val_fraction, seed)
    return Dataset(x_train, y_train, x_val, y_val, x_test, y_test, (8, 8), 10)


_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _unpack_fallback(raw: Path, fallback_dir: Path) -> None:
    """Decompress Debian's recompressed .gz files into torchvision's raw/ layout.

    torchvision's own extraction checks the MD5 of the .gz, which Debian's recompressed
    files fail, so we write the decompressed IDX files that torchvision reads directly.
    """
    raw.mkdir(parents=True, exist_ok=True)
    for name in _IDX_FILES:
        src, dst = fallback_dir / f"{name}.gz", raw / name
        if dst.exists() or not src.exists():
            continue
        tmp = dst.with_suffix(".part")
        with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        tmp.replace(dst)


@functools.lru_cache(maxsize=4)
def _torchvision(
    dataset: str, root: str, fallback_dir: str | None, options: tuple = ()
) -> tuple[torch.Tensor, ...]:
    """(x, y, x_test, y_test, n_classes) of torchvision's class `dataset`, x as stored (uint8
    images for most), channels first."""
    raw = Path(root) / dataset / "raw"
    import torchvision

    cls = getattr(torchvision.datasets, dataset, None)
    if not isinstance(cls, type) or not issubclass(cls, torchvision.datasets.VisionDataset):
        raise UserError(
            f"data.dataset={dataset} is not a torchvision dataset class; classification sets "
            "include MNIST, KMNIST, EMNIST (with data.options={split:balanced}), QMNIST, "
            "FashionMNIST, CIFAR10, CIFAR100, SVHN, STL10, USPS"
        )
    idx_layout = issubclass(cls, torchvision.datasets.MNIST)  # MNIST, FashionMNIST, KMNIST...
    if idx_layout and fallback_dir and Path(fallback_dir).is_dir():
        _unpack_into(raw, Path(fallback_dir), dataset)
    have_files = idx_layout and all((raw / name).exists() for name in _IDX_FILES)
    try:
        # Sets without the IDX layout check their own files first and download only if absent.
        train = _split(cls, root, True, download=not have_files, options=dict(options))
        test = _split(cls, root, False, download=False, options=dict(options))
    except UserError:
        raise
    except Exception as e:  # torchvision raises RuntimeError, URLError, AssertionError...
        if have_files:
            raise _corrupt(dataset, raw, e) from e
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        if idx_layout and dataset in ("MNIST", "FashionMNIST", "KMNIST"):
            raise UserError(_idx_missing(dataset, raw, reason, fallback_dir)) from e
        raise UserError(
            f"{dataset} not found under {Path(root).resolve()} and could not be downloaded "
            f"({reason}). Run the same command where a network exists and copy its "
            f"{root}/ directory here, or use data=digits or data=csv."
        ) from e
    x, y = _arrays(train, dataset)
    x_test, y_test = _arrays(test, dataset)
    classes = getattr(train, "classes", None)
    n_classes = len(classes) if classes else int(max(y.max(), y_test.max())) + 1
    return x, y, x_test, y_test, n_classes


DEBIAN_FASHION = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist package


def _idx_missing(dataset: str, raw: Path, reason: str, fallback_dir: str | None) -> str:
    """The one line for an IDX set (MNIST, FashionMNIST, KMNIST) with no files and no
    download: where its files go, the folder of .gz files data.fallback_dir reads, and a set
    that runs offline instead (data=digits; for MNIST also data=fashion_mnist, which Debian's
    package serves offline), never the set that just failed."""
    if fallback_dir:
        state = "has none of them" if Path(fallback_dir).is_dir() else "does not exist"
        gz = f"data.fallback_dir={fallback_dir} (it {state})"
    else:
        gz = "a folder named by data.fallback_dir=DIR"
    apt = "`apt install dataset-fashion-mnist` puts"
    if dataset == "FashionMNIST":
        instead = (
            f"{apt} them in {DEBIAN_FASHION}, the default data.fallback_dir; or use "
            "data=digits (scikit-learn's bundled 8x8 digits, offline: the default data)"
        )
    else:
        instead = (
            f"or use data=digits or data=fashion_mnist ({apt} its files in "
            f"{DEBIAN_FASHION}, where it reads them offline)"
        )
    return (
        f"{dataset} not found in {raw.resolve()} and could not be downloaded ({reason}). "
        f"Download its four IDX files ({', '.join(_IDX_FILES)}) where a network exists and "
        f"copy them there, or their .gz files into {gz}; {instead}"
    )


def _unpack_into(raw: Path, fallback_dir: Path, dataset: str) -> None:
    try:
        _unpack_fallback(raw, fallback_dir)
    except OSError as e:
        raise UserError(
            f"{dataset}: cannot write its files under {raw} ({e.strerror}: {e.filename}); "
            "set data.root to a writable directory"
        ) from e


def _corrupt(dataset: str, raw: Path, e: Exception) -> UserError:
    return UserError(
        f"{dataset}: the IDX files in {raw.resolve()} are truncated or corrupt ({e}); "
        "delete them and copy fresh ones"
    )


def _split(cls: type, root: str, train: bool, download: bool, options: dict) -> object:
    """The training or test part of a torchvision set: train=True/False, or split="train"/
    "test" for the sets that name their parts (SVHN, STL10)."""
    import torchvision

    params = inspect.signature(cls.__init__).parameters
    if issubclass(cls, torchvision.datasets.MNIST) or "train" in params:
        return cls(root, train=train, download=download, **options)
    if "split" in params:
        return cls(root, split="train" if train else "test", download=download, **options)
    raise UserError(
        f"data.dataset={cls.__name__} has no train/test parts l1sweep knows (train= or "
        "split=); export it as arrays and use data=npz"
    )


def _arrays(part: object, dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded images (n, [c,] h, w) and labels, from the set's arrays where it keeps them
    (.data and .targets or .labels), else by reading every item once."""
    x = getattr(part, "data", None)
    y = getattr(part, "targets", None)
    if y is None:
        y = getattr(part, "labels", None)
    if x is None or y is None or not hasattr(x, "shape"):
        try:
            items = [(np.asarray(img), label) for img, label in part]
            x, y = np.stack([i for i, _ in items]), [label for _, label in items]
        except ValueError as e:  # np.stack of images of different sizes
            raise UserError(
                f"{dataset}: its images differ in size ({e}); resize them to one size, save "
                "them as arrays and use data=npz"
            ) from e
    x = torch.as_tensor(np.asarray(x))
    if x.dim() == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.permute(0, 3, 1, 2).contiguous()  # CIFAR's (n, h, w, c): channels first
    return x, torch.as_tensor(np.asarray(y)).long()


def load_torchvision(
    seed: int,
    dataset: str | None,
    root: str,
    val_fraction: float,
    fallback_dir: str | None = None,
    options: Mapping | None = None,
    **_: object,
) -> Dataset:
    """A torchvision classification set by class name; `options` are extra arguments of its
    constructor (EMNIST's split)."""
    if not dataset:
        raise required(
            "data.dataset",
            "data=torchvision needs data.dataset=NAME, a torchvision.datasets class such as "
            "KMNIST or CIFAR10",
        )
    opts = tuple(sorted((str(k), v) for k, v in (options or {}).items()))
    # relative to where the command started, also in a job under hydra.job.chdir=true
    fallback = str(started_in(fallback_dir)) if fallback_dir else None
    return _load_torchvision(seed, dataset, str(started_in(root)), val_fraction, fallback, opts)


@functools.lru_cache(maxsize=2)  # a sweep's trials share one seed: split and decode once
def _load_torchvision(
    seed: int,
    dataset: str,
    root: str,
    val_fraction: float,
    fallback_dir: str | None,
    opts: tuple,
) -> Dataset:
    if not Path(root).is_dir() and Path(root).exists():
        raise UserError(f"data.root={root} is not a directory")
    x, y, x_test, y_test, n_classes = _torchvision(dataset, root, fallback_dir, opts)
    x_train, y_train, x_val, y_val = split(x, y, val_fraction, seed)
    return Dataset(
        _to_unit(x_train),
        y_train,
        _to_unit(x_val),
        y_val,
        _to_unit(x_test),
        y_test,
        tuple(x.shape[1:]),
        n_classes,
    )


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.uint8:  # a set stored as floats is used as it is
        return x.float()
    return x.float().div(255.0)  # exactly what torchvision's ToTensor computes
