"""An export directory's files: what they are made from (`Source`), a file on disk (`Written`),
the one-line reason one is not written (`Missing`), and writing without half-written files:
`write_atomic` (a temporary file renamed into place, with the mode the umask gives, as model.pt
has) and `write_dir` (a whole directory replaced as a unit)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from sweep.models import compact as compact_
from sweep.models import deployable

ARCHIVE = "model.l1z"
COMPACT = "model.compact.l1z"
KEPT_INPUTS = "kept_inputs.csv"
DEPLOY_HINT = 'pip install -e ".[deploy]" (onnx, onnxscript, onnxruntime)'


@dataclass
class Source:
    """What the artifacts are made from: the trained model (from model.pt), its shared-weight
    version (what the archive stores), the data, and how to rebuild the module."""

    run_dir: Path
    trained: nn.Module
    shared: nn.Module
    arch: dict
    bits: int
    data: object  # sweep.data.Dataset, on the CPU
    allow_targets: tuple[str, ...] = ()
    opset: int | None = None  # the ONNX files' opset (check_opset); None: torch.onnx's default
    example: torch.Tensor = field(init=False)
    _compact: object = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.example = self.data.x_val[:2]

    def compact(self) -> deployable.Deployable:
        """The shared-weight model compacted (its removed units taken out), checked on the
        validation split against the shared model; Missing (the one-line reason) where it
        cannot be."""
        if self._compact is None:
            try:
                names = getattr(self.data, "feature_names", None)
                self._compact = deployable.deployable(self.shared, self.data.x_val, names)
            except compact_.CannotCompact as e:
                self._compact = _graph_compact(self) or Missing(f"no compact model: {e}")
        if isinstance(self._compact, Missing):
            raise self._compact
        return self._compact


def _graph_compact(src: Source) -> deployable.Deployable | None:
    """A network compact cannot follow, with its zero channels cut through its graph
    (`sweep.models.graph`; BatchNorms kept, for the codebook's sake), as a Deployable whose
    arch rebuilds it (`graph.narrowed`: the original's _target_ and the new layers' sizes);
    None where its graph cannot be cut. It takes the same inputs as the model (no gather)."""
    from sweep.models import graph

    shape = tuple(src.data.image_shape)
    try:
        plan = graph.dead_plan(graph.check(src.shared, shape))
        # unfolded: the archive's codebook then holds the shared model's own values exactly
        small = graph.compact_model(src.shared, shape, plan, fold=False)
    except graph.CannotCut:
        return None
    src.shared.eval()
    with torch.no_grad():
        gap = float((small(src.data.x_val) - src.shared(src.data.x_val)).abs().max())
    arch = {"_target_": "sweep.models.graph.narrowed", "model": src.arch,
            "layers": graph.layout(small)}  # fmt: skip
    if not str(src.arch.get("_target_", "")).startswith("sweep.models."):
        arch = {}  # a user's network: no archive rebuilds it (graph.narrowed), its ONNX does
    return deployable.Deployable(small, arch, torch.ones(shape, dtype=torch.bool), [], gap)


@dataclass
class Written:
    """An artifact on disk: its file, how to run the file as read back from disk, and the
    in-memory model it was made from (max_abs_logit_diff is against it)."""

    path: Path
    predict: Callable[[np.ndarray], np.ndarray]
    reference: nn.Module
    module: nn.Module | None = None  # the torch module read back (for timing), if any
    holds: nn.Module | None = None  # the model the file holds (shape, flops); else reference
    format: dict = field(default_factory=dict)  # an ONNX file's opset and ir_version


class Missing(Exception):
    """An artifact that cannot be written here; its message is the row's note."""


def umask() -> int:
    """The process's umask (os has no getter: set, then set back)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file beside `path`, then rename: no half-written artifact.
    The file gets the mode a plain open() gives (0666 less the umask), as model.pt has, not
    the temporary file's 0600."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_dir(path: Path, write: Callable[[Path], object]) -> object:
    """Make directory `path` hold exactly what write(tmp) writes into an empty temporary
    sibling directory, swapped in by renames (the previous `path`, if any, is then removed);
    returns what write returns. Where write raises, `path` is left as it was. The directory
    gets the mode mkdir gives (0777 less the umask), not the temporary directory's 0700."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.new.", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~umask())
        result = write(tmp)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            try:
                os.replace(path, old)  # onto the empty directory just made
            except BaseException:
                os.rmdir(old)
                raise
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return result
