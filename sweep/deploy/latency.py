"""Measured latency of exported models, for export.csv: what the sparsity buys in time.

Every model is timed in the same process, in alternation (round after round, each model a run
of calls lasting `seconds`, every call timed), at batch 1 and batch 256, on one thread and on
every core; the figure is the median call, in milliseconds, and each model's ratio to the
dense model's (model.pt, torch eager) in the same configuration. Ratios are what to quote:
absolute times move with the machine and its load (recorded beside them). Nothing is claimed
that is not measured here: a sparse model's speed-up at batch 1 is its measured ratio.

Runtimes: torch eager (a module), onnxruntime (a file, CPUExecutionProvider, intra-op threads
set per configuration), and torch CSR (`csr`: every Linear weight as torch.sparse_csr, the
kernel an unstructured sparse model would run on).
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

BATCHES = (1, 256)
# A runner: given (threads, input batch), the zero-argument call to time.
Runner = Callable[[int, np.ndarray], Callable[[], object]]


def columns(cores: int | None = None) -> list[str]:
    """export.csv's latency columns: ms_batch{B}_{1thread,allcores} and speedup_... (dense
    ms / this ms), then cores and load_average."""
    keys = [f"batch{b}_{t}" for t in ("1thread", "allcores") for b in BATCHES]
    return [f"ms_{k}" for k in keys] + [f"speedup_{k}" for k in keys] + ["cores", "load_average"]


def torch_runner(module: nn.Module) -> Runner:
    """Time module(x) under torch.no_grad (threads: torch.set_num_threads, set by
    measure)."""
    module = module.eval()

    def make(threads: int, x: np.ndarray) -> Callable[[], object]:
        xt = torch.from_numpy(x)

        def call() -> object:
            with torch.no_grad():  # not inference_mode: torch's CSR kernels refuse it
                return module(xt)

        return call

    return make


def ort_runner(path: Path) -> Runner:
    """Time an ONNX file in onnxruntime, one session per thread count (intra-op threads)."""
    import onnxruntime as ort

    sessions: dict[int, object] = {}

    def make(threads: int, x: np.ndarray) -> Callable[[], object]:
        if threads not in sessions:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            sessions[threads] = ort.InferenceSession(
                str(path), opts, providers=["CPUExecutionProvider"]
            )
        session = sessions[threads]
        feed = {session.get_inputs()[0].name: x}
        return lambda: session.run(None, feed)

    return make


class CsrLinear(nn.Module):
    """A Linear whose weight (out, in) is a torch.sparse_csr tensor: x (batch, in) ->
    (batch, out) through torch's sparse kernels."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = linear.weight.detach().to_sparse_csr()
        self.bias = None if linear.bias is None else linear.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, in) @ weight.T (a CSR matrix) + bias: (N, out)."""
        return nn.functional.linear(x, self.weight, self.bias)


def csr(model: nn.Module) -> nn.Module:
    """A copy of the model with every Linear layer a CsrLinear (conv layers stay dense)."""
    import warnings

    out = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta state"
        for name, m in list(out.named_modules()):
            if isinstance(m, nn.Linear):
                parent = out.get_submodule(name.rpartition(".")[0]) if "." in name else out
                setattr(parent, name.rpartition(".")[2], CsrLinear(m))
    return out


def linear_zeros(model: nn.Module) -> float:
    """The fraction of the Linear layers' weights that are exactly zero."""
    ws = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    total = sum(w.numel() for w in ws)
    return sum(int((w == 0).sum()) for w in ws) / total if total else 0.0


def _calls(call: Callable[[], object], seconds: float) -> list[float]:
    clock = time.perf_counter
    out, end = [], clock() + seconds
    while (t0 := clock()) < end or not out:
        call()
        out.append(clock() - t0)
    return out


def measure(
    runners: dict[str, Runner],
    x: np.ndarray,
    dense: str,
    repeats: int = 3,
    seconds: float = 0.1,
) -> dict[str, dict[str, float]]:
    """Per runner, the latency columns (see `columns`): x is real data (n, *input_shape),
    float32, tiled to each batch size; `dense` names the runner the speed-ups are against.
    Cores: os.cpu_count(); the load average (1 minute) is read before the first call. torch's
    thread count is restored afterwards."""
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0]
    before = torch.get_num_threads()
    out: dict[str, dict[str, float]] = {k: {"cores": cores, "load_average": load} for k in runners}
    try:
        for batch in BATCHES:
            xb = np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:])), dtype=np.float32)
            for label, threads in (("1thread", 1), ("allcores", cores)):
                torch.set_num_threads(threads)
                calls = {k: make(threads, xb) for k, make in runners.items()}
                for call in calls.values():
                    call()  # warm-up: first-call allocations, lazy initialization
                times: dict[str, list[float]] = {k: [] for k in calls}
                for _ in range(repeats):
                    for k, call in calls.items():
                        times[k].extend(_calls(call, seconds))
                key = f"batch{batch}_{label}"
                base = statistics.median(times[dense])
                for k, t in times.items():
                    out[k][f"ms_{key}"] = 1e3 * statistics.median(t)
                    out[k][f"speedup_{key}"] = base / statistics.median(t)
    finally:
        torch.set_num_threads(before)
    return out
