"""The flat SGD step (sweep/training/fastsgd.py) against torch.optim.SGD's own step.

1. One step on simple_net's flat buffer (784-128-10, 101,770 parameters), 1 and 2 threads,
   without and with momentum: microseconds a step.
2. One epoch of `sweep.training.train.fit` on Fashion-MNIST (batch 64, SGD lr 0.01, the L1 penalty):
   torch's step (an SGD subclass, which fit leaves to torch's step) against the flat one, the
   weights checked equal. Alternating, median of 5.
Each thread count runs in a process of its own: torch.set_num_threads(2) after (1) left the
second thread mostly idle here (2-thread epochs as slow as 1-thread ones).

    python benchmarks/sgd_step.py --root /tmp/bench/data   # FashionMNIST/raw/ IDX files there
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

from sweep.data.datasets import load_torchvision
from sweep.models.builtin import mlp
from sweep.sparsity.regularizers import Regularizer
from sweep.training import fastsgd
from sweep.training.train import fit, flatten_parameters


class TorchSGD(torch.optim.SGD):
    """torch.optim.SGD as torch steps it: fit leaves a subclass to its own step."""


def per_step(threads: int, momentum: float, steps: int = 2000) -> dict[str, float]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = mlp(784, 10, [128])
    flat, grad, _ = flatten_parameters(model, list(model.parameters()))
    grad.normal_(0, 1e-3)
    times: dict[str, list[float]] = {"torch": [], "flat": []}
    for _ in range(5):
        for name in times:
            opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=momentum)
            step = opt.step if name == "torch" else fastsgd.FlatSGD(opt, flat, grad).step
            for _ in range(50):  # warm-up, and the momentum buffer's first step
                step()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times[name].append((time.perf_counter() - start) / steps * 1e6)
    return {k: statistics.median(v) for k, v in times.items()}


def one_epoch(data, cls: type, threads: int) -> tuple[float, list[torch.Tensor]]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = mlp(784, 10, [128])
    opt = cls(model.parameters(), lr=0.01)
    start = time.perf_counter()
    fit(model, data, Regularizer(1e-4, 0.0, False, "all"), opt, epochs=1, batch_size=64, seed=0)
    return time.perf_counter() - start, [p.detach().clone() for p in model.parameters()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/tmp/bench/data", help="holds FashionMNIST/raw/")
    parser.add_argument("--threads", type=int, help="one thread count (default: 1, then 2)")
    args = parser.parse_args()
    if args.threads is None:
        print(f"torch {torch.__version__}, {len(os.sched_getaffinity(0))} cores", flush=True)
        for threads in (1, 2):
            cmd = [sys.executable, __file__, "--root", args.root, "--threads", str(threads)]
            subprocess.run(cmd, check=True)
        return
    threads = args.threads
    for momentum in (0.0, 0.9):
        t = per_step(threads, momentum)
        print(f"step, {threads} thread(s), momentum {momentum}: "
              f"torch {t['torch']:.1f} us, flat {t['flat']:.1f} us")  # fmt: skip
    data = load_torchvision(0, "FashionMNIST", args.root, 0.0833)
    steps = -(-len(data.y_train) // 64)
    times: dict[str, list[float]] = {"torch": [], "flat": []}
    for _ in range(5):
        (t_ref, ref), (t_flat, got) = (one_epoch(data, c, threads)
                                       for c in (TorchSGD, torch.optim.SGD))  # fmt: skip
        assert all(torch.equal(a, b) for a, b in zip(ref, got)), "weights differ"
        times["torch"].append(t_ref)
        times["flat"].append(t_flat)
    med = {k: statistics.median(v) for k, v in times.items()}
    runs = {k: " ".join(f"{x:.3f}" for x in v) for k, v in times.items()}
    print(f"fit, one epoch ({len(data.y_train)} images, {steps} steps), {threads} thread(s): "
          f"torch step {med['torch']:.3f} s ({runs['torch']}), flat {med['flat']:.3f} s "
          f"({runs['flat']}): {(med['torch'] - med['flat']) / steps * 1e6:.1f} us a step "
          f"less, weights equal")  # fmt: skip


if __name__ == "__main__":
    main()
