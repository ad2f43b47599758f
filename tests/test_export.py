"""The compressed archive (sweep/archive.py) and `python -m sweep.export`, on real runs: digits,
and IDX images the test writes for the convolutional lenet5."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from conftest import REPO, copy_sweep, run_cli
from sweep.deploy import archive, codebook, measure
from sweep.deploy.archive import ArchiveError
from sweep.export import load
from sweep.models import builtin as models

# ONNX against torch on the same inputs: fp32 agrees to float rounding; int8 (weights and
# activations quantized) moves logits by a few hundredths on these models and flips argmax
# only where two classes are nearly tied.
ONNX_MAX_DIFF = 1e-4
INT8_MAX_DIFF = 0.5
INT8_ARGMAX_AGREEMENT = 0.95


def export_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sweep.export", *args], cwd=cwd, capture_output=True,
        text=True, env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}, timeout=600,
    )  # fmt: skip


def digits_images(n: int = 256) -> torch.Tensor:
    """Real inputs: scikit-learn's digits, as the 64-pixel vectors the mlps read."""
    from sklearn.datasets import load_digits

    return torch.tensor(load_digits().data[:n] / 16.0, dtype=torch.float32)


def mnist_like_images(n: int = 256) -> torch.Tensor:
    """Real 28x28 inputs for lenet5: digits pixels in the middle of blank images, as
    conftest.write_mnist_like writes them."""
    images = torch.zeros(n, 28, 28)
    images[:, 10:18, 10:18] = digits_images(n).view(n, 8, 8)
    return images


def sparsify(model: nn.Module, fraction: float, seed: int = 0) -> nn.Module:
    """Zero `fraction` of every compressible weight, at random: a pruned model's zeros."""
    gen = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    with torch.no_grad():
        for name in codebook.compressible(model):
            state[name].mul_((torch.rand(state[name].shape, generator=gen) >= fraction).float())
    return model


MODELS = {
    "simple_net": (lambda: models.mlp(64, 10, [128]), {"hidden": [128]}, digits_images),
    "mlp_two_hidden": (lambda: models.mlp(64, 10, [32, 16]), {"hidden": [32, 16]}, digits_images),
    "linear": (lambda: models.mlp(64, 10, []), {"hidden": []}, digits_images),
    "lenet5": (lambda: models.lenet5(784, 10, (28, 28)), {}, mnist_like_images),
}


def arch_of(key: str) -> dict:
    extra = MODELS[key][1]
    if key == "lenet5":
        return {"_target_": "sweep.models.lenet5", "n_inputs": 784, "n_classes": 10,
                "input_shape": [28, 28]}  # fmt: skip
    return {"_target_": "sweep.models.mlp", **extra, "n_inputs": 64, "n_classes": 10,
            "input_shape": [8, 8]}  # fmt: skip


@pytest.mark.parametrize("key", list(MODELS))
@pytest.mark.parametrize("bits", [2, 5])
def test_round_trip_is_bit_identical_to_the_shared_model(key, bits, tmp_path):
    torch.manual_seed(0)
    make, _, inputs = MODELS[key]
    model = sparsify(make(), 0.9).eval()
    shared = codebook.quantize(model, bits)
    blob = archive.encode(model, bits, arch_of(key))
    decoded = archive.decode(blob)
    assert list(decoded) == list(shared.state_dict())
    for name, t in shared.state_dict().items():
        assert torch.equal(decoded[name], t), name
    for name in codebook.compressible(model):  # shared: at most 2^bits values, zeros kept
        w, w0 = decoded[name], model.state_dict()[name]
        assert len(torch.unique(w[w != 0])) <= 2**bits
        assert torch.equal(w != 0, w0 != 0)
    path = tmp_path / "model.l1z"
    path.write_bytes(blob)
    loaded = load(path)
    assert not loaded.training
    x = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x), shared(x))  # bit for bit, on real images
        # and the shared model is close to the original: the codebook is a real fit
        assert (loaded(x).argmax(1) == model(x).argmax(1)).float().mean() > (0.5 if bits == 2
                                                                              else 0.9)  # fmt: skip
    # archiving the shared model again changes nothing
    assert archive.encode(shared, bits, arch_of(key)) == blob


def test_the_archive_is_far_smaller_than_the_dense_state_dict():
    torch.manual_seed(0)
    model = sparsify(models.mlp(784, 10, [128]), 0.95)
    blob = archive.encode(model, 5, {"_target_": "sweep.models.mlp", "hidden": [128],
                                     "n_inputs": 784, "n_classes": 10})  # fmt: skip
    # 5,000 random nonzeros: 5-bit codes and their positions, about 15 bits each
    assert measure.dense_bytes(model) / len(blob) > 40
    assert len(blob) < 10_000


def test_a_layers_layout_is_chosen_by_the_estimate_and_only_the_written_streams_are_coded(
    monkeypatch: pytest.MonkeyPatch,
):
    """Issue 33: the full codec search (`_candidates`: stored, deflate, huffman, lzma extreme
    twice) runs once for each of the archive's four streams, not for each layout of each layer;
    the archive is no larger than with the full search choosing the layouts."""
    torch.manual_seed(0)
    model = codebook.quantize(sparsify(models.mlp(784, 10, [300, 100]), 0.9), 5)
    arch = {"_target_": "sweep.models.mlp", "hidden": [300, 100], "n_inputs": 784,
            "n_classes": 10}  # fmt: skip
    searched = []
    full_search = archive._candidates
    monkeypatch.setattr(archive, "_candidates", lambda raw: searched.append(raw) or
                        full_search(raw))  # fmt: skip
    blob = archive.encode(model, 5, arch)
    assert len(searched) == 4  # the table, the indices, the codes, the float16 values
    monkeypatch.setattr(archive, "_estimated_size", lambda raw: len(min(full_search(raw),
                                                                        key=len)))  # fmt: skip
    assert len(blob) <= len(archive.encode(model, 5, arch))
    decoded = archive.decode(blob)
    assert all(torch.equal(decoded[k], v) for k, v in model.state_dict().items())


def lloyd_per_value(x: np.ndarray, k: int, iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """k-means as sweep/deploy/codebook.py's kmeans_1d ran it before issue 33 (the reference
    its sorted-runs version is held to, and benchmarks/trial_cost.py's "before"): every value
    assigned anew each step (np.searchsorted of the n values into the k - 1 midpoints), empty
    clusters dropped. Returns (centroids ascending, labels)."""
    x = x.astype(np.float64)
    centroids, labels = np.linspace(x.min(), x.max(), k), np.zeros(len(x), dtype=np.int64)
    for i in range(iterations):
        new = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, x)
        if i and np.array_equal(new, labels):
            break
        labels = new
        counts = np.bincount(labels, minlength=k)
        sums = np.bincount(labels, weights=x, minlength=k)
        centroids = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
    used = np.unique(labels)
    remap = np.zeros(k, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return centroids[used], remap[labels]


def test_kmeans_on_sorted_runs_is_lloyds_per_value_assignment():
    """kmeans_1d finds each step's clusters as runs of the sorted values; the labels and
    centroids are those of assigning every value to its nearest centroid (Lloyd's steps as
    written), on a trained-like weight with ties and on a handful of values."""

    torch.manual_seed(0)
    weight = models.mlp(64, 10, [128])[1].weight.detach().numpy().ravel().astype(np.float64)
    for values in (weight, np.round(weight, 2), weight[:5]):
        for k, iterations in ((32, 100), (4, 100), (256, 3), (1, 10)):
            centroids, labels = codebook.kmeans_1d(values, k, iterations)
            want_c, want_l = lloyd_per_value(values, k, iterations)
            assert np.array_equal(labels, want_l)
            np.testing.assert_allclose(centroids, want_c, rtol=1e-12, atol=1e-15)


def test_relative_indices_use_fillers_where_a_gap_overflows():
    positions = np.array([0, 3, 40, 41])
    entries = archive.relative_indices(positions, 4)  # filler 15
    assert entries.tolist() == [0, 2, 15, 15, 6, 0]  # 36 zeros before 40: 15 + 15 + 6
    assert archive.positions_from_relative(entries, 4, 42).tolist() == positions.tolist()
    with pytest.raises(ValueError, match="past the end"):
        archive.positions_from_relative(entries, 4, 41)


def test_kmeans_is_deterministic_and_keeps_few_values_exactly():
    values = np.random.default_rng(0).normal(size=1000)
    c1, l1 = codebook.kmeans_1d(values, 8)
    c2, l2 = codebook.kmeans_1d(values, 8)
    assert np.array_equal(c1, c2) and np.array_equal(l1, l2)
    assert np.all(np.diff(c1) > 0) and len(c1) == 8
    # each value's centroid is its nearest
    assert np.array_equal(np.abs(values[:, None] - c1[None]).argmin(1), l1)
    few = np.array([[0.5, 0, -0.25], [0.5, 0.125, 0]], dtype=np.float32)
    s = codebook.share(few, 2)
    assert np.array_equal(s.values(), few)
    with pytest.raises(ArchiveError, match="bits must be an integer in 1..8"):
        codebook.share(few, 9)


@pytest.fixture(scope="module")
def blob_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("blob") / "model.l1z"
    model = sparsify(models.mlp(64, 10, [16]), 0.5)
    path.write_bytes(archive.encode(model, 4, arch_of("simple_net") | {"hidden": [16]}))
    return path


def _variant(data: bytes, how: str) -> bytes:
    if how == "truncated":
        return data[:-7]
    if how == "magic":
        return b"PK\x03\x04" + data[4:]
    if how == "version":
        return data[:4] + bytes([99]) + data[5:]
    if how == "checksum":
        flipped = bytearray(data)
        flipped[-3] ^= 0x40
        return bytes(flipped)
    if how == "empty":
        return b""
    if how == "header":
        return data[:6]
    raise AssertionError(how)


WHAT = {
    "truncated": "is truncated: ",
    "magic": "is not an l1sweep archive (no L1Z magic)",
    "version": "is format version 99; this l1sweep reads version 1",
    "checksum": "fails its checksum (CRC32): the file is corrupted",
    "empty": "is empty",
    "header": "is truncated (6 bytes, shorter than the 13-byte header)",
}


@pytest.mark.parametrize("how", list(WHAT))
def test_a_bad_file_is_one_line_naming_it(how, blob_file, tmp_path):
    bad = tmp_path / f"{how}.l1z"
    bad.write_bytes(_variant(blob_file.read_bytes(), how))
    with pytest.raises(ArchiveError) as e:
        load(bad)
    message = str(e.value)
    assert message.startswith(str(bad)) and WHAT[how] in message and "\n" not in message
    proc = export_cli(str(bad), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {message}"  # one line, no traceback
    assert proc.stdout == ""


def test_a_foreign_file_and_a_missing_one(tmp_path):
    pt = tmp_path / "model.pt"
    torch.save(models.mlp(64, 10, [4]).state_dict(), pt)
    with pytest.raises(ArchiveError, match=r"model\.pt is not an l1sweep archive"):
        load(pt)
    with pytest.raises(ArchiveError, match=r"nothere\.l1z: cannot read it"):
        load(tmp_path / "nothere.l1z")


def test_a_malformed_payload_with_a_valid_checksum_is_one_line(tmp_path):
    payload = b"\x05\x05\x00hello"  # a stream claiming 5 bytes of a stored "hell" + trailing
    data = archive.HEADER.pack(archive.MAGIC, 1, len(payload), __import__("zlib").crc32(payload))
    path = tmp_path / "odd.l1z"
    path.write_bytes(data + payload)
    with pytest.raises(ArchiveError, match=r"odd\.l1z is malformed \(") as e:
        load(path)
    assert "\n" not in str(e.value)


def test_a_shape_mismatch_names_the_tensor(tmp_path):
    model = sparsify(models.mlp(64, 10, [16]), 0.5)
    wrong = arch_of("simple_net") | {"hidden": [17]}  # the archive says 17 hidden units
    path = tmp_path / "m.l1z"
    path.write_bytes(archive.encode(model, 4, wrong))
    expected = (r"m\.l1z: shape mismatch for fc1\.weight: \(16, 64\) in the archive, "
                r"\(17, 64\) in the model it builds")  # fmt: skip
    with pytest.raises(ArchiveError, match=expected):
        load(path)


USER_PACKAGE = """
import torch.nn as nn


def tiny(n_inputs, n_classes, width):
    return nn.Sequential(nn.Flatten(), nn.Linear(n_inputs, width), nn.ReLU(),
                         nn.Linear(width, n_classes))
"""


def test_a_user_model_is_refused_unless_allowed(tmp_path, monkeypatch):
    pkg = tmp_path / "mypkg_export"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(USER_PACKAGE + "\nLOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    user = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
    sparsify(user, 0.5)
    arch = {"_target_": "mypkg_export.models.tiny", "width": 8, "n_inputs": 64, "n_classes": 10,
            "input_shape": [8, 8]}  # fmt: skip
    path = tmp_path / "user.l1z"
    path.write_bytes(archive.encode(user, 3, arch))
    with pytest.raises(ArchiveError, match=r"mypkg_export\.models\.tiny, code outside l1sweep, "
                       r"which runs only if you allow it: load\(path, allow_targets="):  # fmt: skip
        load(path)
    assert "mypkg_export.models" not in sys.modules  # refused before anything was imported
    model = load(path, allow_targets=["mypkg_export.*"])
    x = digits_images(32)
    with torch.no_grad():
        assert torch.equal(model(x), codebook.quantize(user, 3).eval()(x))
    proc = export_cli(str(path), cwd=tmp_path, env={"PYTHONPATH": f"{tmp_path}:{REPO}"})
    assert proc.returncode == 2 and "allow_targets" in proc.stderr
    ok = export_cli(str(path), "--allow-targets", "mypkg_export.*", cwd=tmp_path,
                    env={"PYTHONPATH": f"{tmp_path}:{REPO}"})  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "fc1" not in ok.stdout and "1.weight (8, 64): " in ok.stdout


BLOCKING_LOADER = r"""
import sys, importlib.abc
BLOCKED = ("hydra", "omegaconf", "optuna", "pandas", "sklearn", "scipy", "matplotlib", "onnx",
           "onnxruntime", "onnxscript", "yaml")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
import pickle
def no_pickle(*a, **k):
    raise AssertionError("the loader unpickled something")
pickle.load = pickle.loads = no_pickle
import torch
from sweep.export import load
model = load(sys.argv[1])
x = torch.zeros(3, 8, 8)
print(tuple(model(x).shape), sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""


def test_the_loader_needs_only_torch_and_numpy(blob_file, tmp_path):
    proc = subprocess.run([sys.executable, "-c", BLOCKING_LOADER, str(blob_file)],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(3, 10) []"


# ---- python -m sweep.export on real runs ---------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A real pruned digits run (80% zeros), as `python -m sweep.run` makes it: the group lasso
    on the input pixels (some are no longer read), then magnitude pruning."""
    cwd = tmp_path_factory.mktemp("digits")
    # the seed's recipe (lr 0.01), not digits' own (lr 0.75), which this penalty does not suit
    run_cli(cwd, "regularizer=group_l1", "regularizer.groups=inputs", "group_lambda=1e-3",
            "prune=magnitude", "prune.sparsity=0.8", "prune.epochs=20", "train.threads=1",
            "recipe=none", "hydra.run.dir=run")  # fmt: skip
    return cwd / "run"


@pytest.fixture(scope="module")
def exported(digits_run) -> tuple[Path, pd.DataFrame, subprocess.CompletedProcess, str]:
    before = sha256(digits_run / "model.pt")
    proc = export_cli(str(digits_run), "--bits", "4", "--latency-rounds", "1",
                      "--latency-seconds", "0.005", cwd=digits_run.parent)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return digits_run, pd.read_csv(digits_run / "export" / "export.csv"), proc, before


@pytest.mark.slow
def test_export_writes_every_artifact_and_its_row(exported):
    from sweep.deploy import latency

    run, csv, proc, before = exported
    files = ["model.l1z", "model.onnx", "model.int8.onnx", "model.compact.l1z",
             "model.compact.onnx"]  # fmt: skip
    assert csv["artifact"].tolist() == ["model.pt", *files, "model.l1z (torch CSR)"]
    paths = [run / "model.pt", *(run / "export" / a for a in files)]
    assert csv["bytes"].tolist()[:-1] == [os.path.getsize(p) for p in paths]  # bytes on disk
    assert pd.isna(csv["bytes"].iloc[-1])  # CSR: in memory, no file
    dense = os.path.getsize(run / "model.pt")
    assert np.allclose(csv["ratio_to_dense_fp32"][:-1], dense / csv["bytes"][:-1])
    rows = csv.set_index("artifact")
    l1z = rows.loc["model.l1z"]
    assert l1z["ratio_to_dense_fp32"] > 5  # 80% zeros, 4 bits, of a 64-128-10 mlp
    assert l1z["ratio_to_gzip_dense"] > 2
    assert l1z["max_abs_logit_diff"] == 0  # the file read back is the shared model, bit for bit
    assert sha256(run / "model.pt") == before  # export never changes model.pt
    assert "model.l1z" in proc.stdout and "s):" in proc.stdout
    # the compact model: its files read back give the masked model's logits, and it is no
    # larger than the dense one (magnitude pruning kills few whole neurons)
    for name in ("model.compact.l1z", "model.compact.onnx", "model.l1z (torch CSR)"):
        assert rows.loc[name, "max_abs_logit_diff"] < 1e-4, name
        assert rows.loc[name, "test_acc"] == rows.loc["model.l1z", "test_acc"]
    widths = list(map(int, rows.loc["model.compact.l1z", "shape"].split("-")))
    assert rows.loc["model.pt", "shape"] == "64-128-10" and widths[-1] == 10
    assert rows.loc["model.compact.onnx", "shape"] == rows.loc["model.compact.l1z", "shape"]
    assert rows.loc["model.compact.l1z", "flops"] == widths[0] * widths[1] + widths[1] * 10
    assert rows.loc["model.pt", "flops"] == 64 * 128 + 128 * 10
    kept = pd.read_csv(run / "export" / "kept_inputs.csv")
    assert len(kept) == widths[0] and kept["index"].is_monotonic_increasing
    assert kept["name"][0] == str(tuple(divmod(int(kept["index"][0]), 8)))  # (row, col)
    # latency: every model timed, ratios to model.pt's median call of the same configuration
    for col in latency.columns():
        assert col in csv.columns
    for key in ("batch1_1thread", "batch256_1thread", "batch1_allcores", "batch256_allcores"):
        assert (csv[f"ms_{key}"] > 0).all()
        base = rows.loc["model.pt", f"ms_{key}"]
        assert np.allclose(csv[f"speedup_{key}"], base / csv[f"ms_{key}"])
    assert (csv["cores"] == os.cpu_count()).all() and (csv["load_average"] >= 0).all()


@pytest.mark.slow
def test_exported_accuracies_are_those_of_the_files_read_back(exported):
    from omegaconf import OmegaConf

    from sweep.task import job

    run, csv, _, _ = exported
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    data = job.dataset(cfg, torch.device("cpu"))
    rows = csv.set_index("artifact")
    model = load(run / "export" / "model.l1z")
    with torch.no_grad():
        test_acc = float((model(data.x_test).argmax(1) == data.y_test).float().mean())
    assert rows.loc["model.l1z", "test_acc"] == pytest.approx(test_acc, abs=1e-6)
    import json

    metrics = json.loads((run / "metrics.json").read_text())
    # float32 means in training, float64 here: the same counts
    assert rows.loc["model.pt", "test_acc"] == pytest.approx(metrics["test_acc"], abs=1e-6)
    assert rows.loc["model.pt", "val_acc"] == pytest.approx(metrics["val_acc"], abs=1e-6)
    # 4-bit codebooks cost this trained model little
    assert rows.loc["model.l1z", "test_acc"] > metrics["test_acc"] - 0.03


@pytest.mark.slow
def test_onnx_and_int8_agree_with_torch(exported):
    import onnxruntime as ort
    from omegaconf import OmegaConf

    from sweep.task import job

    run, csv, _, _ = exported
    rows = csv.set_index("artifact")
    assert rows.loc["model.onnx", "max_abs_logit_diff"] < ONNX_MAX_DIFF
    assert rows.loc["model.onnx", "argmax_agreement"] == 1.0
    assert rows.loc["model.int8.onnx", "max_abs_logit_diff"] < INT8_MAX_DIFF
    assert rows.loc["model.int8.onnx", "argmax_agreement"] >= INT8_ARGMAX_AGREEMENT
    assert rows.loc["model.int8.onnx", "bytes"] < rows.loc["model.onnx", "bytes"] / 2
    # and checked here, on the test images, against the archive's model
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    x = job.dataset(cfg, torch.device("cpu")).x_test
    with torch.no_grad():
        ref = load(run / "export" / "model.l1z")(x).numpy()
    for name, tol in (("model.onnx", ONNX_MAX_DIFF), ("model.int8.onnx", INT8_MAX_DIFF)):
        session = ort.InferenceSession(str(run / "export" / name),
                                       providers=["CPUExecutionProvider"])  # fmt: skip
        out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert np.abs(out - ref).max() < tol
        assert rows.loc[name, "max_abs_logit_diff"] == pytest.approx(np.abs(out - ref).max())


@pytest.mark.slow
def test_without_the_deploy_extra_the_archive_still_works(digits_run, tmp_path):
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    for name in ("onnx", "onnxscript", "onnxruntime"):  # as if not installed
        (blocker / f"{name}.py").write_text(f"raise ModuleNotFoundError(name={name!r})\n")
    run = tmp_path / "run"
    import shutil

    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("export"))
    proc = export_cli(str(run), "--latency-rounds", "0", cwd=tmp_path,
                      env={"PYTHONPATH": f"{blocker}:{REPO}"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_csv(run / "export" / "export.csv").set_index("artifact")
    assert rows.loc["model.l1z", "bytes"] == os.path.getsize(run / "export" / "model.l1z")
    assert rows.loc["model.compact.l1z", "bytes"] > 0  # the compact archive needs no onnx
    assert "ms_batch1_1thread" not in rows.columns  # --latency-rounds 0: not measured
    for name in ("model.onnx", "model.int8.onnx", "model.compact.onnx"):
        assert pd.isna(rows.loc[name, "bytes"])
        assert 'pip install -e ".[deploy]"' in rows.loc[name, "note"]
    assert not (run / "export" / "model.onnx").exists()
    assert "model.onnx: not written: onnx" in proc.stdout


def test_codebook_finetuning_wins_back_accuracy(digits_run):
    from sweep import export

    src = export.source(digits_run, 1, 0, log=lambda *a: None)
    d = src.data

    def val_acc(model: nn.Module) -> float:
        with torch.no_grad():
            return float((model(d.x_val).argmax(1) == d.y_val).float().mean())

    plain = codebook.finetune(src.trained, 1, d.x_train, d.y_train, 0)
    tuned = codebook.finetune(src.trained, 1, d.x_train, d.y_train, 5)
    assert val_acc(tuned) > val_acc(plain) + 0.005  # two shared values per layer: much to win
    state, tuned_state = plain.state_dict(), tuned.state_dict()
    for name in codebook.compressible(tuned):  # the mask held, at most 2 values per layer
        assert torch.equal(tuned_state[name] != 0, state[name] != 0)
        assert len(torch.unique(tuned_state[name][tuned_state[name] != 0])) <= 2
    # what the archive stores is the fine-tuned model exactly
    blob = archive.encode(tuned, 1, src.arch)
    assert all(torch.equal(a, tuned_state[k]) for k, a in archive.decode(blob).items())


def test_archive_metrics_for_a_trial_row(digits_run):
    from sweep import export

    src = export.source(digits_run, 4, 0, log=lambda *a: None)
    m = measure.archive_metrics(src.trained, src.data, 4, src.arch)
    assert set(m) == {"archive_bytes", "compression", "archive_val_acc", "archive_test_acc"}
    assert m["archive_bytes"] == len(archive.encode(src.trained, 4, src.arch))
    assert m["compression"] == pytest.approx(measure.dense_bytes(src.trained) / m["archive_bytes"])
    rows = pd.read_csv(digits_run / "export" / "export.csv").set_index("artifact") if (
        digits_run / "export" / "export.csv").is_file() else None  # fmt: skip
    if rows is not None:
        assert m["archive_test_acc"] == pytest.approx(rows.loc["model.l1z", "test_acc"])


@pytest.mark.slow
def test_exporting_a_dir_without_a_model_or_a_diverged_run_is_one_line(tmp_path):
    proc = export_cli(str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path} has no model.pt: nothing to export"
    run_cli(
        tmp_path, "regularizer=none", "optimizer.lr=1e30", "train.epochs=2", "hydra.run.dir=bad"
    )
    bad = tmp_path / "bad"
    assert '"status": "diverged"' in (bad / "metrics.json").read_text()
    before = sha256(bad / "model.pt")
    proc = export_cli(str(bad), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: {bad} is a diverged run; only a complete run's "
                                   "model can be exported")  # fmt: skip
    assert not (bad / "export").exists() and sha256(bad / "model.pt") == before


@pytest.mark.slow
def test_a_sweep_exports_its_front_and_leaves_its_csv_alone(small_sweep, tmp_path):
    from sweep import analyze

    cwd, _, _ = small_sweep  # shared with other files' tests: export a copy
    sweep_dir = copy_sweep(cwd / "outputs" / "sweeps" / "small", tmp_path / "small")
    csv_before = sha256(sweep_dir / "results.csv")
    frame = analyze.load([sweep_dir])
    front = sorted(int(t) for t in frame.loc[analyze.pareto_front(frame), "trial"])
    proc = export_cli(str(sweep_dir), "--bits", "3", "--no-onnx", cwd=cwd)  # default: the front
    assert proc.returncode == 0, proc.stderr
    exported = sorted(int(p.parent.parent.name.removeprefix("trial_"))
                      for p in sweep_dir.glob("trial_*/export/export.csv"))  # fmt: skip
    assert exported == front
    rows = pd.read_csv(sweep_dir / f"trial_{front[0]}" / "export" / "export.csv")
    # --no-onnx; a CSR row follows where half the weights or more are zeros
    assert rows["artifact"].tolist()[:3] == ["model.pt", "model.l1z", "model.compact.l1z"]
    assert rows["bytes"].iloc[1] == os.path.getsize(
        sweep_dir / f"trial_{front[0]}" / "export" / "model.l1z")  # fmt: skip
    assert not list(sweep_dir.glob("trial_*/export/model.onnx"))
    proc = export_cli(str(sweep_dir), "--trials", "999", cwd=cwd)
    assert proc.returncode == 2 and "has no trial 999" in proc.stderr
    assert sha256(sweep_dir / "results.csv") == csv_before


def test_export_bits_is_a_checked_config_key(tmp_path):
    proc = run_cli(tmp_path, "export.bits=9", check=False)
    assert proc.returncode == 2
    assert "export.bits must be an integer in 1..8, got 9" in proc.stdout + proc.stderr


def test_an_archive_may_not_name_other_l1sweep_code(tmp_path):
    model = sparsify(models.mlp(64, 10, [16]), 0.5)
    path = tmp_path / "evil.l1z"
    path.write_bytes(archive.encode(model, 4, {"_target_": "sweep.export.main", "argv": ["x"]}))
    with pytest.raises(ArchiveError, match=r"builds its model with sweep\.export\.main, code "):
        load(path)


@pytest.mark.slow
def test_the_compact_model_reads_only_its_inputs_and_gives_the_masked_logits(exported):
    """The pixels the group lasso left unread are gone from the compact archive, which still
    takes the full images and gives the masked model's logits, read back from disk."""
    from omegaconf import OmegaConf

    from sweep.task import job

    run, csv, _, _ = exported
    rows = csv.set_index("artifact")
    inputs, hidden, classes = map(int, rows.loc["model.compact.l1z", "shape"].split("-"))
    assert inputs < 50 and classes == 10  # most of digits' 64 pixels were dropped
    assert rows.loc["model.compact.l1z", "flops"] == inputs * hidden + hidden * 10
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    data = job.dataset(cfg, torch.device("cpu"))
    small, masked = load(run / "export" / "model.compact.l1z"), load(run / "export" / "model.l1z")
    with torch.no_grad():
        got, want = small(data.x_test), masked(data.x_test)  # both take the 8x8 images
    assert (got - want).abs().max() < 1e-3  # a folded bias is stored as float16
    test_acc = float((got.argmax(1) == data.y_test).float().mean())
    assert rows.loc["model.compact.l1z", "test_acc"] == pytest.approx(test_acc, abs=1e-6)
    assert small.fc1.weight.shape == (hidden, inputs)
    kept = pd.read_csv(run / "export" / "kept_inputs.csv")
    read = masked.fc1.weight.ne(0).any(0).nonzero().flatten().tolist()  # pixels still read
    assert kept["index"].tolist() == read == small.inputs.index.tolist()


class SkipNet(nn.Module):
    """A model with a skip connection: the compactor cannot follow its forward."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 64), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.fc2(x + torch.relu(self.fc1(x)))


@pytest.mark.slow
def test_a_model_compact_cannot_follow_exports_the_rest_and_says_why(tmp_path):
    from sweep.data.datasets import load_digits
    from sweep.deploy import artifacts, files

    data = load_digits(seed=0, val_fraction=0.2, test_fraction=0.2, test_seed=0)
    torch.manual_seed(0)
    model = SkipNet().eval()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    src = files.Source(tmp_path, model, codebook.quantize(model, 4), {"_target_": "x.y"}, 4,
                        data)  # fmt: skip
    out = tmp_path / "export"
    rows = artifacts.measure_artifacts(src, out, ["model.compact.l1z", "model.compact.onnx"])
    assert [r["artifact"] for r in rows] == ["model.compact.l1z", "model.compact.onnx"]
    assert rows[0]["note"] == ("no compact model: compact follows a plain nn.Sequential, and "
                               "this model is a SkipNet with its own forward (a skip "
                               "connection or other wiring it cannot see)")  # fmt: skip
    assert "no compact model" in rows[1]["note"] and "bytes" not in rows[1]
    assert not (out / "model.compact.l1z").exists() and not (out / "kept_inputs.csv").exists()
