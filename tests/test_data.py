import numpy as np
import pytest
import torch

from conftest import write_mnist_like
from sweep.data import datasets as data
from sweep.errors import UserError


def rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.reshape(len(x), -1)}


def test_digits_split_is_disjoint_seeded_and_stratified():
    a = data.load_digits(seed=0, val_fraction=0.2, test_fraction=0.2, test_seed=0)
    b = data.load_digits(seed=0, val_fraction=0.2, test_fraction=0.2, test_seed=0)
    c = data.load_digits(seed=1, val_fraction=0.2, test_fraction=0.2, test_seed=0)
    assert (len(a.y_train), len(a.y_val), len(a.y_test)) == (1149, 288, 360)
    assert a.image_shape == (8, 8) and a.n_inputs == 64 and a.n_classes == 10
    assert 0.0 <= float(a.x_train.min()) and float(a.x_train.max()) == 1.0
    # indices are disjoint (digits has a few duplicate images, so compare by index-free counts)
    assert len(a.y_train) + len(a.y_val) + len(a.y_test) == 1797
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_val, c.x_val)  # another seed, another validation split
    assert torch.equal(a.x_test, c.x_test)  # the test set never moves with the seed
    counts = torch.bincount(a.y_val, minlength=10).float()
    assert counts.min() >= 27 and counts.max() <= 30  # stratified: ~28.8 per class


def test_a_sweeps_trials_share_one_copy_of_the_data_per_device():
    a = data.load_digits(seed=0, val_fraction=0.2, test_fraction=0.2, test_seed=0)
    c = data.load_digits(seed=1, val_fraction=0.2, test_fraction=0.2, test_seed=0)
    cpu = torch.device("cpu")
    on = a.to(cpu)
    assert a.to(cpu) is on and torch.equal(on.x_train, a.x_train)
    assert on.image_shape == (8, 8) and on.n_classes == 10
    assert c.to(cpu) is not on and torch.equal(c.to(cpu).y_val, c.y_val)
    if torch.cuda.is_available():  # the copy a GPU sweep makes once, not every trial
        gpu = a.to(torch.device("cuda"))
        assert gpu.x_train.is_cuda and a.to(torch.device("cuda")) is gpu


def test_split_keeps_rows_disjoint():
    x = torch.arange(1000).reshape(100, 10).float()
    y = torch.arange(100) % 4
    x_keep, _, x_held, _ = data.split(x, y, 0.25, seed=3)
    assert len(x_held) == 25 and rows(x_keep).isdisjoint(rows(x_held))
    assert rows(x_keep) | rows(x_held) == rows(x)


def test_torchvision_path_reads_idx_files_in_torchvision_layout(tmp_path):
    write_mnist_like(tmp_path / "MNIST" / "raw", n_train=600, n_test=200)
    ds = data.load_torchvision(seed=0, dataset="MNIST", root=str(tmp_path), val_fraction=0.1)
    assert ds.x_train.shape == (540, 28, 28) and ds.x_val.shape == (60, 28, 28)
    assert ds.x_test.shape == (200, 28, 28) and ds.n_inputs == 784 and ds.n_classes == 10
    assert ds.x_train.dtype == torch.float32 and float(ds.x_train.max()) <= 1.0
    assert ds.x_train.max() == 240 / 255  # the pixels written, scaled as ToTensor does


def test_fallback_dir_of_gz_files_is_unpacked_into_raw(tmp_path):
    debian = tmp_path / "debian"
    write_mnist_like(debian, n_train=300, n_test=100, gz=True)
    root = tmp_path / "data"
    ds = data.load_torchvision(
        seed=0, dataset="FashionMNIST", root=str(root), val_fraction=0.1, fallback_dir=str(debian)
    )
    assert (root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").stat().st_size == (
        16 + 300 * 784
    )
    assert len(ds.y_train) + len(ds.y_val) == 300 and len(ds.y_test) == 100


def test_missing_files_without_network_give_one_clear_message(tmp_path):
    with pytest.raises(UserError) as err:
        data.load_torchvision(seed=0, dataset="MNIST", root=str(tmp_path), val_fraction=0.1)
    msg = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in msg
    assert "data=digits" in msg and "copy them" in msg


def test_truncated_idx_files_are_reported(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_mnist_like(raw, n_train=100, n_test=50)
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserError, match="truncated or corrupt"):
        data.load_torchvision(seed=0, dataset="MNIST", root=str(tmp_path), val_fraction=0.1)


def test_stratified_split_refuses_a_class_of_one_row():
    with pytest.raises(ValueError, match="only 1 member"):
        data.stratified(np.array([0, 0, 1, 1, 2]), 0.4, 0)
    with pytest.raises(ValueError, match="greater or equal to the number of classes = 3"):
        data.stratified(np.array([0, 0, 1, 1, 2, 2]), 0.2, 0)


def test_corrupt_idx_header_is_reported(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    write_mnist_like(raw, n_train=100, n_test=50)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x0d\x01" + bytes(54))  # float32
    with pytest.raises(
        UserError, match="FashionMNIST: the IDX files in .* are truncated or corrupt"
    ):
        data.load_torchvision(seed=0, dataset="FashionMNIST", root=str(tmp_path), val_fraction=0.1)
