"""data=torchvision: any torchvision classification set by name, offline where its files are."""

import json

import pytest
import torchvision

from conftest import run_cli, write_mnist_like
from sweep.data import datasets as data
from sweep.errors import UserError


def test_kmnist_by_name_from_its_files(tmp_path):
    write_mnist_like(tmp_path / "data" / "KMNIST" / "raw", n_train=300, n_test=100)
    run_cli(tmp_path, "data=torchvision", "data.dataset=KMNIST", "train.epochs=1",
            "hydra.run.dir=outputs/k")  # fmt: skip
    metrics = json.loads((tmp_path / "outputs" / "k" / "metrics.json").read_text())
    assert metrics["data"] == "torchvision" and metrics["n_inputs"] == 784
    ds = data.load_torchvision(seed=0, dataset="KMNIST", root=str(tmp_path / "data"),
                               val_fraction=0.1)  # fmt: skip
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (270, 30, 100)


def test_unknown_or_missing_names_are_one_line(tmp_path):
    with pytest.raises(UserError, match="data.dataset=Kmnist is not a torchvision dataset"):
        data.load_torchvision(seed=0, dataset="Kmnist", root=str(tmp_path), val_fraction=0.1)
    with pytest.raises(UserError, match="data=torchvision needs data.dataset=NAME"):
        data.load_torchvision(seed=0, dataset=None, root=str(tmp_path), val_fraction=0.1)


def test_a_set_that_cannot_be_downloaded_says_what_to_do(tmp_path):
    with pytest.raises(UserError) as err:
        data.load_torchvision(seed=0, dataset="CIFAR10", root=str(tmp_path), val_fraction=0.1)
    msg = str(err.value)
    assert msg.startswith(f"CIFAR10 not found under {tmp_path} and could not be downloaded")
    assert "where a network exists" in msg and "data=digits or data=csv" in msg


def test_images_without_arrays_are_read_channels_first():
    fake = torchvision.datasets.FakeData(size=6, image_size=(3, 8, 5), num_classes=3)
    x, y = data._arrays(fake, "FakeData")
    assert tuple(x.shape) == (6, 3, 8, 5) and len(y) == 6 and int(y.max()) < 3
    with pytest.raises(UserError, match="has no train/test parts"):
        data._split(torchvision.datasets.FakeData, "x", True, False, {})
