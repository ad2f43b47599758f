"""Data sets, split and scaled: `datasets` (the `Dataset` container, digits, torchvision and
IDX files) and `tables` (CSV and npz tables).

`sweep.data.load_digits`, `.load_torchvision`, `.Dataset` and `.split` are the names configs
and users' code use."""

from sweep.data.datasets import Dataset, load_digits, load_torchvision, split

__all__ = ["Dataset", "load_digits", "load_torchvision", "split"]
