"""Measures of a model and of its archive: logits through any predict function, top-1
accuracy, the dense baseline's bytes, and what a trial's archive costs and scores
(`archive_metrics`, the row's archive_* columns). Also `architecture`, the `arch` an archive
stores, made from a run's model config.

Torch and numpy at import; OmegaConf only when `architecture` is called.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from sweep.config import targets
from sweep.deploy import archive, codebook
from sweep.errors import UserError
from sweep.models.cost import eval_batch


def logits_of(
    predict: Callable[[np.ndarray], np.ndarray], x: torch.Tensor, batch: int
) -> np.ndarray:
    """predict's logits (N, classes) for the inputs x (N, ...) (CPU), `batch` examples a call
    (models/cost.py `eval_batch` of the model behind `predict`: it also bounds the memory of
    one forward pass)."""
    return np.concatenate([predict(x[i : i + batch].numpy()) for i in range(0, len(x), batch)])


def torch_predict(model: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """predict(x): `model`'s logits (N, classes) for inputs x (N, ...) as numpy, in eval
    mode without gradients (what onnxruntime's sessions give, for one comparison)."""
    model = model.eval()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return predict


def accuracy(logits: np.ndarray, y: torch.Tensor) -> float:
    """Top-1 accuracy (0..1) of `logits` (N, classes) against labels `y` (N,)."""
    return float((logits.argmax(1) == y.numpy()).mean())


def dense_bytes(model: nn.Module) -> int:
    """Bytes of torch.save of the model's state_dict (fp32): the dense baseline."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, buf)
    return buf.tell()


def compressed_nnz(model: nn.Module) -> int:
    """Nonzeros of the compressible (Linear and Conv) weights."""
    state = model.state_dict()
    return sum(int((state[n] != 0).sum()) for n in codebook.compressible(model))


def architecture(
    model_node: object, n_inputs: int, n_classes: int, input_shape: Sequence[int]
) -> dict:
    """The `arch` an archive stores: the config's model node (a DictConfig or dict: `_target_`
    and its keys, resolved) and the data's sizes the factory accepts, as sweep.training.train.build
    passes them. Raises UserError for a model config the archive cannot name (a nested
    `_target_`, `_partial_`, `_args_`)."""
    from omegaconf import DictConfig, OmegaConf  # here: sweep.export.load must not import it

    if isinstance(model_node, DictConfig):
        node = OmegaConf.to_container(model_node, resolve=True)
    else:
        node = dict(model_node)
    target = node.get("_target_")
    extra = [k for k in node if k.startswith("_") and k.endswith("_") and k != "_target_"]
    nested = [k for k, v in node.items() if isinstance(v, dict) and "_target_" in v]
    if not isinstance(target, str) or extra or nested:
        raise UserError(
            f"model config {node} is not one the archive can rebuild: it needs a _target_ "
            "and plain keyword arguments (no _partial_, _args_ or nested _target_)"
        )
    offered = {"n_inputs": n_inputs, "n_classes": n_classes, "input_shape": list(input_shape)}
    try:
        offered = targets.accepted(targets.locate(target), offered)
    except (ImportError, AttributeError):
        pass  # run_dir's build already imported it; keep all three
    return {"_target_": target, **{k: v for k, v in node.items() if k != "_target_"}, **offered}


def archive_metrics(
    model: nn.Module,
    data: object,
    bits: int,
    arch: dict,
    epochs: int = 0,
    layers: Sequence[str] | None = None,
    path: Path | None = None,
) -> dict:
    """What a trial's archive costs and scores, for its results row: `archive_bytes` (the
    file's size), `compression` (dense fp32 state_dict bytes / archive_bytes) and
    `archive_val_acc`, `archive_test_acc` (accuracy of the weights decoded from those bytes).
    `data`: a sweep.data.Dataset. Cheap: codebook fine-tuning only where epochs > 0. With
    `path`, the archive's bytes are also written there (the file is exactly what was scored).
    Raises ArchiveError as archive.encode (e.g. a model with nothing to compress)."""
    x, y = data.x_train.cpu(), data.y_train.cpu()
    shared = codebook.finetune(model, bits, x, y, epochs, layers=layers)
    blob = archive.encode(shared, bits, arch, layers)
    if path is not None:
        path.write_bytes(blob)
    decoded = copy.deepcopy(model).cpu()  # the module; its weights replaced by the decoded
    archive.load_state(decoded, archive.decode(blob))
    predict, batch = torch_predict(decoded), eval_batch(decoded)
    val, test = (logits_of(predict, x.cpu(), batch) for x in (data.x_val, data.x_test))
    return {
        "archive_bytes": len(blob),
        "compression": dense_bytes(model) / len(blob),
        "archive_val_acc": accuracy(val, data.y_val.cpu()),
        "archive_test_acc": accuracy(test, data.y_test.cpu()),
    }
