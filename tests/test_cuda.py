"""device=cuda: the same training, pruning and sweep on a GPU. Skipped where there is none (CI
has none); run on a GPU machine with `pytest tests/test_cuda.py`."""

import json

import pandas as pd
import pytest
import torch

from conftest import run_cli, write_mnist_like
from sweep.data.datasets import load_digits
from sweep.models.builtin import lenet5, mlp
from sweep.sparsity import pruning
from sweep.sparsity.pruning import Pruner
from sweep.sparsity.regularizers import Regularizer
from sweep.training.train import fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0, val_fraction=0.2, test_fraction=0.2, test_seed=0)


def train(data, device: torch.device, reg: Regularizer, make_opt, epochs: int = 20) -> tuple:
    torch.manual_seed(0)
    model = mlp(64, 10, [32]).to(device)
    result = fit(model, data.to(device), reg, make_opt(model.parameters()), epochs=epochs,
                 batch_size=64, seed=0, log_every=epochs)  # fmt: skip
    return model, result


@pytest.mark.parametrize("proximal", [False, True], ids=["l1", "l1_prox"])
def test_cuda_training_matches_cpu(digits, proximal):
    """Same seed, same batches: a GPU run ends where the CPU run does, up to float
    summation order, and the proximal step makes exact zeros there too."""
    reg = Regularizer(1e-3, 0.0, proximal, "weights")
    make_opt = lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)  # noqa: E731
    cpu, r_cpu = train(digits, torch.device("cpu"), reg, make_opt)
    gpu, r_gpu = train(digits, CUDA, reg, make_opt)
    assert all(p.is_cuda for p in gpu.parameters())
    assert r_gpu["status"] == "complete"
    assert abs(r_gpu["val_acc"] - r_cpu["val_acc"]) <= 0.02
    w_cpu, w_gpu = pruning.flat(reg.select(cpu)), pruning.flat(reg.select(gpu)).cpu()
    assert torch.allclose(w_cpu, w_gpu, atol=5e-3)
    if proximal:
        zeros_cpu, zeros_gpu = int((w_cpu == 0).sum()), int((w_gpu == 0).sum())
        assert zeros_gpu > 0 and abs(zeros_gpu - zeros_cpu) <= 0.02 * w_cpu.numel()


def test_cuda_mask_holds_through_adam_fine_tuning(digits):
    reg = Regularizer(0.0, 0.0, False, "weights")
    make_opt = lambda p: torch.optim.Adam(p, lr=1e-3)  # noqa: E731
    model, _ = train(digits, CUDA, reg, make_opt, epochs=5)
    counted = reg.select(model)
    keep = Pruner("magnitude", sparsity=0.8).keep(pruning.flat(counted), [2048, 320], 0.8)
    assert keep.is_cuda
    result = fit(model, digits.to(CUDA), reg, make_opt(model.parameters()), epochs=5,
                 batch_size=64, seed=1, log_every=5, keep=keep)  # fmt: skip
    w = pruning.flat(counted)
    assert result["status"] == "complete" and result["val_acc"] > 0.5
    assert int((w == 0).sum()) == round(0.8 * w.numel()) and torch.equal(w != 0, keep)


def test_cuda_lenet5_step():
    torch.manual_seed(0)
    model = lenet5(784, 10, (28, 28)).to(CUDA)
    x, y = torch.rand(64, 28, 28, device=CUDA), torch.randint(0, 10, (64,), device=CUDA)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert model.conv1.weight.grad.is_cuda and torch.isfinite(loss)


def test_cuda_cli_run_and_sweep(tmp_path):
    """device=auto picks the GPU; a row says so, and a pruned sweep on it writes its rows."""
    write_mnist_like(tmp_path / "data" / "FashionMNIST" / "raw", n_train=1200, n_test=300)
    data = ["data=fashion_mnist", "data.root=data", "data.fallback_dir=null",
            "data.val_fraction=0.2"]  # fmt: skip
    run_cli(tmp_path, *data, "train.epochs=20", "optimizer.lr=0.1", "hydra.run.dir=one")
    m = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert m["device"].startswith("cuda") and m["val_acc"] > 0.3
    run_cli(tmp_path, "-m", "experiment=fashion_frontier", *data, "train.epochs=2",
            "prune.epochs=1", "prune.rounds=1", "hydra.sweeper.n_trials=3",
            "hydra.sweeper.study_name=gpu")  # fmt: skip
    df = pd.read_csv(tmp_path / "outputs" / "sweeps" / "gpu" / "results.csv")
    assert len(df) == 3 and (df["status"] == "complete").all()
    assert df["device"].str.startswith("cuda").all()
    assert (df["sparsity"] >= df["prune_sparsity"] - 1e-4).all()
