"""Your own data as a table (data=csv) or as arrays (data=npz), split and scaled as l1sweep's
built-in sets are: a fixed stratified test hold-out (test_seed), then a stratified validation
split with the run's seed; features standardized with the training split's mean and std.

Every problem with a file is one UserError line that names the file and what to do.
"""

from __future__ import annotations

import dataclasses
import functools
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sweep.config.paths import started_in
from sweep.config.searched import required
from sweep.data.datasets import Dataset, split
from sweep.errors import UserError


def _file(path: str | None, kind: str, example: str) -> Path:
    if not path:
        raise required("data.path", f"data={kind} needs data.path={example}")
    file = started_in(path)  # also in a job under hydra.job.chdir=true
    if not file.is_file():
        # a trial's share of a path that -m split at its comma: a file whose name holds it
        parent = file.parent if file.parent.is_dir() else None
        whole = [p for p in parent.glob("*,*") if file.name in p.name.split(",")] if parent else []
        hint = ""
        if whole:
            quoted = shlex.quote(f'data.path="{whole[0]}"')
            hint = f"; {whole[0]} exists: under -m a comma separates values, so quote it: {quoted}"
        raise UserError(
            f"data.path={path}: no such file (relative paths start where you run){hint}"
        )
    return file


def _classes(y: np.ndarray, where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels -> class indices 0..k-1 in sorted label order, and each index's label."""
    if y.dtype.kind == "f":
        if np.isnan(y).any():
            raise UserError(f"{where} has {int(np.isnan(y).sum())} empty labels; fill or drop them")
        if np.isinf(y).any():
            raise UserError(
                f"{where} holds inf or -inf in {int(np.isinf(y).sum())} rows; a class label "
                "must be a finite value: fix or drop those rows"
            )
        if not np.all(y == np.round(y)):
            raise UserError(
                f"{where} holds non-integer numbers (e.g. {y[y != np.round(y)][0]:g}); "
                "l1sweep classifies: the target must be a class label"
            )
        y = y.astype(np.int64)
    values, index = np.unique(y, return_inverse=True)
    if len(values) < 2:
        shown = values[0] if len(values) else "none"
        raise UserError(f"{where} has one class only ({shown}); a classifier needs two or more")
    return index.astype(np.int64), tuple(str(v) for v in values)


def _standardize(x_train: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Scale every feature by the training split's mean and std (a constant feature by 1), so
    that one L1 strength weighs all features alike and no statistic sees val or test rows."""
    mean = x_train.mean(dim=0)
    std = x_train.std(dim=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return tuple((x - mean) / std for x in (x_train, *others))


def _splits(
    x: torch.Tensor,
    y: torch.Tensor,
    test: tuple[torch.Tensor, torch.Tensor] | None,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    test_seed: int,
    where: str,
) -> tuple[torch.Tensor, ...]:
    """(x_train, y_train, x_val, y_val, x_test, y_test): the given test set or a held-out one."""
    try:
        if test is None:
            x, y, x_test, y_test = split(x, y, test_fraction, test_seed)
        else:
            x_test, y_test = test
        x_train, y_train, x_val, y_val = split(x, y, val_fraction, seed)
    except ValueError as e:  # a class too small to stratify, or too few rows
        counts = ", ".join(f"{int(c)}" for c in torch.bincount(y))
        raise UserError(
            f"{where}: cannot split {len(y)} rows into stratified train/validation/test sets "
            f"({e}); rows per class: {counts}. Add rows, or merge the rare classes"
        ) from None
    return x_train, y_train, x_val, y_val, x_test, y_test


def _dataset(
    parts: tuple[torch.Tensor, ...],
    standardize: bool,
    n_classes: int,
    feature_names: tuple[str, ...],
    class_names: tuple[str, ...],
    where: str,
) -> Dataset:
    """The Dataset of the split parts, standardized if asked. The Dataset checks its values
    (inf, NaN: sweep/data/datasets.py) as read, before scaling spreads one bad cell over its
    column."""
    x_train, y_train, x_val, y_val, x_test, y_test = parts
    try:
        data = Dataset(
            x_train, y_train, x_val, y_val, x_test, y_test,
            tuple(x_train.shape[1:]), n_classes, feature_names, class_names,
        )  # fmt: skip
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    if not standardize:
        return data
    x_train, x_val, x_test = _standardize(x_train, x_val, x_test)
    try:
        return dataclasses.replace(data, x_train=x_train, x_val=x_val, x_test=x_test)
    except UserError:  # finite as read: the mean or std of a column overflowed float32
        raise UserError(
            f"{where}: a feature's mean or standard deviation overflows float32 (values near "
            "3.4e38); rescale those columns, or set data.standardize=false"
        ) from None


def load_csv(
    seed: int,
    path: str | None,
    target: str | None,
    features: list[str] | None = None,
    standardize: bool = True,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    test_seed: int = 0,
    **_: object,
) -> Dataset:
    """A CSV file with a header: the `target` column is the label, the `features` columns
    (default: all others) the inputs, which must be numbers (booleans count as 0/1)."""
    file = _file(path, "csv", "<file.csv> data.target=<label column>")
    if not target:
        raise required("data.target", "data=csv needs data.target=<the label column of the CSV>")
    stat = file.stat()  # in the cache key: an edited file is read again
    return _load_csv(
        seed, str(file), stat.st_mtime_ns, stat.st_size, str(target),
        None if features is None else tuple(map(str, features)),
        bool(standardize), val_fraction, test_fraction, test_seed,
    )  # fmt: skip


@functools.lru_cache(maxsize=2)  # a sweep's trials share one seed: read and split once
def _load_csv(
    seed: int,
    path: str,
    _mtime: int,
    _size: int,
    target: str,
    features: tuple[str, ...] | None,
    standardize: bool,
    val_fraction: float,
    test_fraction: float,
    test_seed: int,
) -> Dataset:
    frame = _read_csv(path)
    features = _check_columns(frame, path, target, features)
    _check_feature_values(frame, features, path)
    y, class_names = _classes(_csv_labels(frame, target, path), f"data.target={target} of {path}")
    x = torch.tensor(frame[list(features)].to_numpy(dtype=np.float32))
    parts = _splits(
        x, torch.from_numpy(y), None, seed, val_fraction, test_fraction, test_seed, path
    )
    return _dataset(parts, standardize, len(class_names), tuple(features), class_names, path)


def _read_csv(path: str) -> pd.DataFrame:
    """The CSV at `path` with its column names as strings; a file pandas cannot read is a
    UserError."""
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise UserError(f"data.path={path} is empty; it needs a header row and data rows") from None
    except (UnicodeDecodeError, pd.errors.ParserError) as e:
        reason = str(e).splitlines()[0]
        raise UserError(f"data.path={path} is not a readable CSV ({reason})") from None
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _check_columns(
    frame: pd.DataFrame, path: str, target: str, features: tuple[str, ...] | None
) -> tuple[str, ...]:
    """The feature columns (default: every column but `target`), after checking that the
    target and features are columns, apart, and that the table has rows."""
    columns = list(frame.columns)
    shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
    if target not in columns:
        raise UserError(f"data.target={target} is not a column of {path}; its columns: {shown}")
    if features is None:
        features = tuple(c for c in columns if c != target)
    missing = [c for c in features if c not in columns]
    if missing:
        raise UserError(
            f"data.features names {', '.join(missing)}, not columns of {path}; its columns: {shown}"
        )
    if target in features:
        raise UserError(f"data.features includes the target column {target}; leave it out")
    if not features:
        raise UserError(f"{path} has no feature column besides data.target={target}")
    if frame.empty:
        raise UserError(f"data.path={path} has a header but no data rows")
    return features


def _check_feature_values(frame: pd.DataFrame, features: tuple[str, ...], path: str) -> None:
    """Every feature column holds numbers (booleans count) and no empty value; the first
    offending row is named (1-based, counting data rows)."""
    for c in features:
        col = frame[c]
        if col.dtype == bool:
            continue
        if not pd.api.types.is_numeric_dtype(col):
            bad = pd.to_numeric(col, errors="coerce").isna() & col.notna()
            row = int(bad.idxmax())
            raise UserError(
                f"feature column {c} of {path} is not numeric ({col[row]!r} in data row "
                f"{row + 1}); encode it as numbers, or leave it out with data.features=[...]"
            )
        if col.isna().any():
            raise UserError(
                f"feature column {c} of {path} has {int(col.isna().sum())} empty values (first "
                f"in data row {int(col.isna().idxmax()) + 1}); fill or drop those rows"
            )


def _csv_labels(frame: pd.DataFrame, target: str, path: str) -> np.ndarray:
    """The target column's values, shape (n,): numbers as they are, anything else as strings;
    an empty label is a UserError."""
    labels = frame[target].to_numpy()
    if labels.dtype == object:
        if pd.isna(labels).any():
            raise UserError(
                f"data.target={target} of {path} has {int(pd.isna(labels).sum())} empty "
                "labels; fill or drop those rows"
            )
        labels = labels.astype(str)
    return labels


def load_npz(
    seed: int,
    path: str | None,
    standardize: bool = True,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    test_seed: int = 0,
    **_: object,
) -> Dataset:
    """A NumPy .npz file: `x` (n, ...) numbers and `y` (n,) labels; optional `x_test` and
    `y_test` (then no test rows are held out of x) and `feature_names` (one per column of a
    2-D x; default x0, x1, ...). Read without pickle: a data file never runs code."""
    file = _file(path, "npz", "<file.npz> (arrays x, y; optional x_test, y_test)")
    stat = file.stat()
    return _load_npz(
        seed, str(file), stat.st_mtime_ns, stat.st_size, bool(standardize),
        val_fraction, test_fraction, test_seed,
    )  # fmt: skip


@functools.lru_cache(maxsize=2)
def _load_npz(
    seed: int,
    path: str,
    _mtime: int,
    _size: int,
    standardize: bool,
    val_fraction: float,
    test_fraction: float,
    test_seed: int,
) -> Dataset:
    arrays = _read_npz(path)
    _check_npz(arrays, path)
    x, y = arrays["x"], arrays["y"]
    has_test = "x_test" in arrays
    labels = np.concatenate([y, arrays["y_test"]]) if has_test else y
    if labels.dtype.kind not in "biufUS":
        raise UserError(f"{path}: y holds {labels.dtype} values; give numbers or strings")
    index, class_names = _classes(labels, f"y of {path}")
    test = None
    if has_test:
        test_classes = set(index[len(y) :]) - set(index[: len(y)])
        if test_classes:
            shown = ", ".join(class_names[i] for i in sorted(test_classes))
            raise UserError(f"{path}: y_test has classes that y has not ({shown})")
        test = (
            torch.tensor(arrays["x_test"], dtype=torch.float32),
            torch.from_numpy(index[len(y) :]),
        )
    feature_names = _feature_names(arrays, int(np.prod(x.shape[1:])), path)
    parts = _splits(
        torch.tensor(x, dtype=torch.float32), torch.from_numpy(index[: len(y)]), test,
        seed, val_fraction, test_fraction, test_seed, path,
    )  # fmt: skip
    return _dataset(parts, standardize, len(class_names), feature_names, class_names, path)


def _read_npz(path: str) -> dict[str, np.ndarray]:
    """The arrays of the .npz file at `path` by name, read without pickle (a data file never
    runs code); anything else is a UserError."""
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":  # np.savez writes a zip archive
            raise UserError(
                f"data.path={path} is not a .npz file (a zip of arrays, as np.savez writes)"
            )
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except ValueError as e:
        if "pickle" in str(e):
            raise UserError(
                f"data.path={path} holds Python objects, which l1sweep does not unpickle; "
                "save plain arrays: np.savez(path, x=x, y=y)"
            ) from None
        raise UserError(f"data.path={path} is not a readable .npz file ({e})") from None
    except (OSError, EOFError) as e:  # not a zip, truncated
        raise UserError(f"data.path={path} is not a readable .npz file ({e})") from None


def _check_npz(arrays: dict[str, np.ndarray], path: str) -> None:
    """`x` and `y` (and `x_test` with `y_test`, both or neither) are there, inputs are numbers
    with one row per example, labels one per row, test rows shaped as training rows."""
    names = ", ".join(arrays) or "none"
    for key in ("x", "y"):
        if key not in arrays:
            raise UserError(f"{path} has no array {key!r} (it has: {names}); see data=npz")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise UserError(f"{path} has only one of x_test, y_test; give both or neither")
    has_test = "x_test" in arrays
    for key in ("x", "x_test") if has_test else ("x",):
        a = arrays[key]
        if a.dtype.kind not in "biuf":
            raise UserError(f"{path}: {key} holds {a.dtype} values; it must hold numbers")
        if a.ndim < 2 or len(a) == 0:
            raise UserError(
                f"{path}: {key} has shape {a.shape}; it needs one row per example, "
                "(n, n_features) or (n, *image_shape), and at least one row"
            )
    for xk, yk in (("x", "y"), ("x_test", "y_test")) if has_test else (("x", "y"),):
        if arrays[yk].ndim != 1 or len(arrays[yk]) != len(arrays[xk]):
            raise UserError(
                f"{path}: {yk} has shape {arrays[yk].shape}; it needs one label per row of "
                f"{xk}, shape ({len(arrays[xk])},)"
            )
    if has_test and arrays["x_test"].shape[1:] != arrays["x"].shape[1:]:
        raise UserError(
            f"{path}: x_test rows have shape {arrays['x_test'].shape[1:]}, x rows "
            f"{arrays['x'].shape[1:]}; they must match"
        )


def _feature_names(arrays: dict[str, np.ndarray], n_features: int, path: str) -> tuple[str, ...]:
    """The file's `feature_names` (one per input column), or x0, x1, ... without them."""
    if "feature_names" not in arrays:
        return tuple(f"x{i}" for i in range(n_features))
    feature_names = tuple(str(n) for n in arrays["feature_names"].reshape(-1))
    if len(feature_names) != n_features:
        raise UserError(
            f"{path}: feature_names has {len(feature_names)} names for {n_features} features"
        )
    return feature_names
