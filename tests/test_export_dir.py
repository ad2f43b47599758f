"""What `python -m sweep.export` leaves in a run's export/ and where: exactly the files export.csv
lists, as readable as model.pt, in the directory named on the command line (a copied sweep's
own trials), a file the ONNX exporter cannot write said in one line with the rest written,
the ONNX files' opset and IR version named and chosen, and one array that fits every file.
Real runs, real torch.onnx and onnxruntime."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import copy_sweep, run_cli, run_module
from sweep.export import load

pytestmark = pytest.mark.slow  # real runs and exports, ONNX among them

SIDE_FILES = {"export.csv", "kept_inputs.csv"}  # kept_inputs.csv: the compact row's inputs


def export(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m sweep.export ARGS` in cwd, as a user runs it (no latency: not tested here)."""
    return run_module("sweep.export", cwd, *args, "--latency-rounds", "0")


def tree(directory: Path) -> dict[str, str]:
    """Every file under `directory`, by relative path: its sha256."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}  # fmt: skip


def listed(export_dir: Path) -> set[str]:
    """The files export.csv says are in export_dir: its rows with bytes on disk (model.pt is
    the run's own, beside export/)."""
    rows = pd.read_csv(export_dir / "export.csv")
    return set(rows.loc[rows["bytes"].notna() & (rows["artifact"] != "model.pt"), "artifact"])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A real digits run whose group lasso dropped input pixels (a compact model that reads
    fewer inputs), then magnitude pruning."""
    cwd = tmp_path_factory.mktemp("digits")
    run_cli(cwd, "regularizer=group_l1", "regularizer.groups=inputs", "group_lambda=1e-3",
            "prune=magnitude", "prune.sparsity=0.8", "prune.epochs=5", "train.epochs=10",
            "train.threads=1", "recipe=none", "hydra.run.dir=run")  # fmt: skip
    return cwd / "run"


@pytest.fixture(scope="module")
def full(run) -> Path:
    """`run` exported with every artifact (its own copy: tests below export it again)."""
    target = run.parent / "full"
    shutil.copytree(run, target)
    proc = export(target.parent, "full", "--bits", "4")
    assert proc.returncode == 0, proc.stderr
    return target


# ---- the directory holds exactly what export.csv lists --------------------------------------


def test_exporting_again_with_fewer_artifacts_leaves_only_the_new_ones(full, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(full, run)
    before = set(os.listdir(run / "export"))
    assert {"model.onnx", "model.int8.onnx", "model.compact.onnx"} <= before
    assert before == listed(run / "export") | SIDE_FILES
    proc = export(tmp_path, "run", "--bits", "1", "--no-onnx")
    assert proc.returncode == 0, proc.stderr
    # the earlier ONNX files, which the 1-bit archive no longer matches, are gone
    after = set(os.listdir(run / "export"))
    assert after == listed(run / "export") | SIDE_FILES
    assert after == {"model.l1z", "model.compact.l1z"} | SIDE_FILES
    # no temporary directory left beside it; the run's own files untouched
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".export")) == []
    assert tree(run / ".hydra") == tree(full / ".hydra")
    assert (run / "model.pt").read_bytes() == (full / "model.pt").read_bytes()


def test_a_refused_export_leaves_the_earlier_one_as_it_was(full, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(full, run)
    before = tree(run / "export")
    proc = export(tmp_path, "run", "--bits", "9")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --bits must be in 1..8, got 9"
    assert tree(run / "export") == before


def test_an_export_directory_is_replaced_as_a_unit_or_not_at_all(tmp_path):
    from sweep.deploy import files

    out = tmp_path / "export"
    out.mkdir()
    (out / "model.onnx").write_text("the earlier export's")

    def fails(tmp: Path) -> None:
        (tmp / "model.l1z").write_text("half an export")
        raise RuntimeError("the export failed half way")

    with pytest.raises(RuntimeError, match="half way"):
        files.write_dir(out, fails)
    assert os.listdir(out) == ["model.onnx"] and os.listdir(tmp_path) == ["export"]
    assert files.write_dir(out, lambda tmp: (tmp / "model.l1z").write_text("new")) == 3
    assert os.listdir(out) == ["model.l1z"] and os.listdir(tmp_path) == ["export"]


# ---- modes: as model.pt's -----------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_exported_files_are_as_readable_as_model_pt(run, tmp_path, mask):
    target = tmp_path / "run"
    shutil.copytree(run, target)
    proc = subprocess.run(
        [sys.executable, "-m", "sweep.export", "run", "--latency-rounds", "0"], cwd=tmp_path,
        capture_output=True, text=True, preexec_fn=lambda: os.umask(mask), timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    files = sorted((target / "export").iterdir())
    assert {p.name for p in files} >= {"model.l1z", "model.onnx", "export.csv"}
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert modes == dict.fromkeys(modes, 0o666 & ~mask), modes  # 0644 under umask 022
    assert stat.S_IMODE((target / "export").stat().st_mode) == 0o777 & ~mask


# ---- a copied sweep is read and written where it is ----------------------------------------


def test_a_copied_sweep_is_exported_and_analyzed_where_it_is(small_sweep, tmp_path):
    from sweep.analysis import load as sweeps

    cwd, _, _ = small_sweep  # shared: made into this test's own original first
    original = copy_sweep(cwd / "outputs" / "sweeps" / "small", tmp_path / "original")
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)  # as a user copies it: results.csv names the original
    stored = pd.read_csv(copy / "results.csv")["run_dir"]
    assert all(Path(r).parent == original for r in stored)
    untouched = tree(original)
    proc = run_module("sweep.export", tmp_path, "copy", "--no-onnx", "--latency-rounds", "1",
                      "--latency-seconds", "0.002")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert tree(original) == untouched  # not read into, not written into
    assert list(copy.glob("trial_*/export/export.csv"))
    assert f"{copy}/trial_" in proc.stdout and str(original) not in proc.stdout
    # the analysis follows each row into the copy, too
    frame = sweeps.load([copy])
    assert [sweeps.trial_dir(r) for _, r in frame.iterrows()] == [
        copy / Path(r).name for r in frame["run_dir"]
    ]
    proc = run_module("sweep.analyze", tmp_path, "copy", "--out", "report")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "report" / "accuracy_vs_latency.png").is_file()  # the copy's export.csv
    assert tree(original) == untouched
    # a results.csv kept apart from its trials still finds them where they are
    apart = tmp_path / "apart"
    apart.mkdir()
    shutil.copy(original / "results.csv", apart / "results.csv")
    row = sweeps.load([apart]).iloc[0]
    assert sweeps.trial_dir(row) == Path(row["run_dir"]) and Path(row["run_dir"]).is_dir()


# ---- a model the ONNX exporter cannot trace ------------------------------------------------

BRANCHY = '''
import torch.nn as nn


class Branchy(nn.Module):
    """A user's model whose forward branches on the data: torch.export cannot trace it."""

    def __init__(self, n_inputs, n_classes):
        super().__init__()
        self.fc1 = nn.Linear(n_inputs, 16)
        self.fc2 = nn.Linear(16, n_classes)

    def forward(self, x):
        x = x.flatten(1)
        if x.sum() > 0:
            x = x * 1.0
        return self.fc2(self.fc1(x).relu())
'''


def test_a_model_the_onnx_exporter_cannot_trace_exports_the_rest_and_says_why(tmp_path):
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text(BRANCHY)
    (tmp_path / "myconf" / "model").mkdir(parents=True)
    (tmp_path / "myconf" / "model" / "branchy.yaml").write_text("_target_: mypkg.Branchy\n")
    run_cli(tmp_path, "--config-dir", "myconf", "model=branchy", "allow_targets=[mypkg.*]",
            "train.epochs=2", "hydra.run.dir=run")  # fmt: skip
    proc = export(tmp_path, "run")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Traceback" not in out, out
    assert len(out.splitlines()) < 20, out  # the table and a line per file not written
    [line] = [s for s in out.splitlines() if s.startswith("model.onnx:")]
    assert line.startswith("model.onnx: not written: torch.onnx.export cannot export Branchy: ")
    assert "data-dependent" in line
    assert line.endswith("mypkg/__init__.py:15 in forward: if x.sum() > 0:)")
    rows = pd.read_csv(tmp_path / "run" / "export" / "export.csv").set_index("artifact")
    assert rows.loc["model.l1z", "bytes"] > 0 and rows.loc["model.l1z", "test_acc"] > 0
    assert rows.loc["model.onnx", "note"] == line.removeprefix("model.onnx: ")
    assert rows.loc["model.int8.onnx", "note"] == "not written: model.onnx was not written"
    assert set(os.listdir(tmp_path / "run" / "export")) == {"model.l1z", "export.csv"}


# ---- the ONNX files' opset and IR version --------------------------------------------------


def onnx_format(path: Path) -> tuple[int, int]:
    import onnx

    model = onnx.load(str(path))
    return next(o.version for o in model.opset_import if o.domain == ""), model.ir_version


def test_the_onnx_opset_and_ir_version_are_named_and_can_be_chosen(full, tmp_path):
    from onnx import helper

    rows = pd.read_csv(full / "export" / "export.csv").set_index("artifact")
    names = ["model.onnx", "model.int8.onnx", "model.compact.onnx"]
    for name in names:  # the default: torch.onnx's opset, the lowest IR version it allows
        opset, ir = onnx_format(full / "export" / name)
        assert (rows.loc[name, "opset"], rows.loc[name, "ir_version"]) == (opset, ir)
        assert ir == min(10, helper.find_min_ir_version_for([helper.make_opsetid("", opset)]))
    assert rows.loc[["model.pt", "model.l1z"], "opset"].isna().all()
    run = tmp_path / "run"
    shutil.copytree(full, run)
    proc = export(tmp_path, "run", "--opset", "17")
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_csv(run / "export" / "export.csv").set_index("artifact")
    for name in names:  # what an older runtime reads: opset 17, IR version 8
        assert onnx_format(run / "export" / name) == (17, 8)
        assert (rows.loc[name, "opset"], rows.loc[name, "ir_version"]) == (17, 8)
        assert rows.loc[name, "test_acc"] == pytest.approx(rows.loc["model.l1z", "test_acc"],
                                                           abs=0.02)  # fmt: skip
    header = next(s for s in proc.stdout.splitlines() if s.lstrip().startswith("artifact"))
    assert header.split()[-2:] == ["opset", "ir_version"]
    assert next(s for s in proc.stdout.splitlines() if s.lstrip().startswith("model.onnx ")
                ).split()[-2:] == ["17", "8"]  # fmt: skip
    before = tree(run / "export")
    proc = export(tmp_path, "run", "--opset", "14")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: --opset 14: torch ")
    assert "does not write opset 14 here; it writes opsets " in proc.stderr
    proc = export(tmp_path, "run", "--opset", "17", "--no-onnx")
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: --opset sets the ONNX files' opset, and --no-onnx writes none: drop one of them"
    )
    assert tree(run / "export") == before


# ---- one array fits every file -------------------------------------------------------------


def test_the_same_array_feeds_model_pt_the_archives_and_the_onnx_files(full):
    import onnxruntime as ort
    from omegaconf import OmegaConf

    from sweep.task import job
    from sweep.training.train import build

    cfg = OmegaConf.load(full / ".hydra" / "config.yaml")
    data = job.dataset(cfg, torch.device("cpu"))
    x = data.x_test.numpy()  # (N, 8, 8): what the dense model was trained on
    dense = build(cfg.model, n_inputs=64, n_classes=10, input_shape=(8, 8))
    dense.load_state_dict(torch.load(full / "model.pt", weights_only=True))
    out = full / "export"
    with torch.no_grad():
        logits = {"model.pt": dense.eval()(torch.from_numpy(x)).numpy()}
        for name in ("model.l1z", "model.compact.l1z"):
            logits[name] = load(out / name)(torch.from_numpy(x)).numpy()
            flat = load(out / name)(torch.from_numpy(x.reshape(len(x), 64))).numpy()
            assert np.array_equal(flat, logits[name])  # the flat form: the same logits
    for name in ("model.onnx", "model.int8.onnx", "model.compact.onnx"):
        session = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].shape == ["batch", 8, 8]
        logits[name] = session.run(None, {"x": x})[0]
    assert np.abs(logits["model.onnx"] - logits["model.l1z"]).max() < 1e-4
    assert np.abs(logits["model.compact.onnx"] - logits["model.compact.l1z"]).max() < 1e-3
    agree = (logits["model.int8.onnx"].argmax(1) == logits["model.l1z"].argmax(1)).mean()
    assert agree > 0.95
    # export.csv says which shapes each file takes, and prints it
    rows = pd.read_csv(out / "export.csv").set_index("artifact")
    for name in ("model.pt", "model.l1z", "model.compact.l1z"):
        assert rows.loc[name, "input"] == "(batch, 8, 8) or (batch, 64)"
    for name in ("model.onnx", "model.int8.onnx", "model.compact.onnx"):
        assert rows.loc[name, "input"] == "(batch, 8, 8)"


def test_a_model_that_needs_its_image_shape_is_said_to_take_only_that(tmp_path):
    """lenet5 (a channel added to (batch, 28, 28)) takes the images only, and says so."""
    from sweep.deploy import artifacts, codebook, files
    from sweep.models import builtin as models

    torch.manual_seed(0)
    images = torch.rand(8, 28, 28)
    labels = torch.arange(8) % 10
    data = SimpleNamespace(x_val=images, y_val=labels, x_test=images, y_test=labels)
    model = models.lenet5(784, 10, (28, 28)).eval()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    arch = {"_target_": "sweep.models.lenet5", "n_inputs": 784, "n_classes": 10,
            "input_shape": [28, 28]}  # fmt: skip
    src = files.Source(tmp_path, model, codebook.quantize(model, 4), arch, 4, data)
    rows = artifacts.measure_artifacts(src, tmp_path / "export", ["model.pt", "model.l1z",
                                                                  "model.onnx"])  # fmt: skip
    assert {r["artifact"]: r["input"] for r in rows} == dict.fromkeys(
        ["model.pt", "model.l1z", "model.onnx"], "(batch, 28, 28)"
    )
