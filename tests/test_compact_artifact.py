"""The compact model as a user calls it: sweep.export.load("model.compact.l1z") on full images,
its input gather folded into the first Linear at load time (sweep.models.deployable.FoldedLinear),
the same logits as the compact model fed its kept pixels; its ONNX file takes full images too."""

import pytest
import torch
import torch.nn as nn

from conftest import write_mnist_like
from sweep.data.datasets import load_torchvision
from sweep.deploy import archive
from sweep.export import load
from sweep.models import compact, deployable
from sweep.models.builtin import mlp


@pytest.fixture(scope="module")
def images():
    """28x28 images read from IDX files this test writes (where data=fashion_mnist looks)."""
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp())
    write_mnist_like(root / "FashionMNIST" / "raw", n_train=200, n_test=64)
    return load_torchvision(0, "FashionMNIST", str(root), 0.2, fallback_dir=None)


def recipe_like(n_kept: int = 588, hidden: int = 32) -> nn.Module:
    """A 784-`hidden`-10 mlp reading `n_kept` scattered pixels (the recipe's 588-32-10)."""
    torch.manual_seed(0)
    model = mlp(784, 10, [hidden])
    dropped = torch.randperm(784)[: 784 - n_kept]
    with torch.no_grad():
        model[1].weight[:, dropped] = 0.0
    return model.eval()


def test_the_fold_rule_follows_the_measurements():
    assert deployable.folds(784, 588, 32)  # the recipe's: 1.36x faster folded at batch 256
    assert not deployable.folds(784, 588, 128)  # 0.92x: the gather stays
    assert not deployable.folds(784, 392, 32) and not deployable.folds(784, 196, 8)
    assert deployable.folds(64, 48, 32) and not deployable.folds(64, 48, 128)


def test_the_loaded_artifact_reads_full_images_with_the_pre_gathered_logits(images, tmp_path):
    model = recipe_like()
    x = images.x_test
    d = deployable.deployable(model, x)
    small, kept = compact.compact(model, images.image_shape)
    assert int(kept.sum()) == 588 and compact.shape_string(small, 588) == "588-32-10"
    path = tmp_path / "model.compact.l1z"
    path.write_bytes(archive.encode(d.model, 8, d.arch))
    art = load(path)  # the public loader
    assert isinstance(art.inputs, nn.Flatten) and isinstance(art.fc1, deployable.FoldedLinear)
    assert deployable.n_read(art) == 588 and tuple(art.fc1.weight.shape) == (32, 784)
    # the file keeps the kept columns only: the same state_dict as the unfolded module
    gather = deployable.build(d.arch["layers"], d.arch["inputs"], 784, fold=False)
    assert isinstance(gather.inputs, deployable.Gather)
    gather.load_state_dict(art.state_dict())
    pre = art[1:]  # the layers fed the kept pixels, gathered beforehand
    with torch.no_grad():
        full = art(x)
        assert full.shape == (64, 10)
        torch.testing.assert_close(full, pre(compact.select_inputs(x, kept)), rtol=0, atol=1e-5)
        torch.testing.assert_close(full, gather(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(art(x.flatten(1)), full, rtol=0, atol=0)  # (batch, 784)
        torch.testing.assert_close(full, model(x), rtol=0, atol=0.05)  # 8-bit codebooks


def test_the_dropped_columns_stay_zero_and_out_of_the_state_dict(images):
    d = deployable.deployable(recipe_like(), images.x_test)
    net, x = d.model, images.x_test[:8]
    fc = net.fc1
    dropped = ~d.kept.flatten()
    assert tuple(fc.weight.shape) == (32, 784) and not fc.weight[:, dropped].any()
    assert tuple(net.state_dict()["fc1.weight"].shape) == (32, 588)
    torch.testing.assert_close(net.state_dict()["fc1.weight"], fc.weight[:, ~dropped])
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    for _ in range(2):  # fine-tuned, it still reads only the kept pixels
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), images.y_test[:8]).backward()
        opt.step()
    assert fc.weight.grad[:, ~dropped].abs().sum() > 0 and not fc.weight[:, dropped].any()
    with torch.no_grad():
        pre = net[3:](fc(compact.select_inputs(x, d.kept)))  # fc1 fed the kept pixels
        torch.testing.assert_close(net(x), pre, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_the_compact_onnx_file_takes_full_images_and_gives_the_torch_logits(images, tmp_path):
    import numpy as np
    import onnx
    import onnxruntime as ort

    d = deployable.deployable(recipe_like(), images.x_test)
    x = images.x_test
    path = tmp_path / "compact.onnx"
    batch = torch.export.Dim("batch")  # as sweep.export exports
    torch.onnx.export(d.model, (x[:2],), str(path), dynamo=True, external_data=False,
                      input_names=["x"], dynamic_shapes=({0: batch},))  # fmt: skip
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims][1:] == [28, 28]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = d.model(x).numpy()
    for xb, rb in ((x, ref), (x[:1], ref[:1])):
        np.testing.assert_allclose(session.run(None, {"x": xb.numpy()})[0], rb, rtol=0, atol=1e-5)
