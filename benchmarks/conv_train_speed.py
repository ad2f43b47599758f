"""How fast does a conv net train on this CPU? Memory formats and thread counts against the
FLOP bound, for `model=resnet` (the autograd path every conv net takes).

    python benchmarks/conv_train_speed.py                    # ResNet-8 width 16, batch 128
    python benchmarks/conv_train_speed.py --smoke            # seconds; what a test runs
    python benchmarks/conv_train_speed.py --depth 20 --width 16 --batch 128

One process times training steps (the trainer's autograd path: forward, cross-entropy,
backward, then torch.optim.SGD's step, momentum 0.9) on Fashion-MNIST's first images (random
images where the file is missing: speed does not depend on the pixels) in every setting in
alternation, `--repeats` rounds of `--steps`
steps each, and takes each setting's median step:

- `nchw` (torch's default contiguous layout), `channels_last` (NHWC: the model's weights
  and each batch converted with `memory_format=torch.channels_last`, the layout oneDNN's
  convolutions prefer on CPU, PyTorch's "Channels Last Memory Format" tutorial) and
  `input_channels_last` (each batch converted, the weights left as they are: what the
  trainer can do without changing the order of its flat parameter buffer),
- at each of `--threads` (torch.set_num_threads).

The FLOP bound: a training step costs 3x the forward pass's multiply-adds of its conv and
linear layers (forward, the input gradient and the weight gradient: Kaplan et al. 2020's
6N FLOPs per token, counted per multiply-add as `sweep.models.cost.flops` counts), times 2
FLOPs per multiply-add; divided by the rate this CPU reaches on a large float32 matrix
product (torch.mm, 1024^3, best of 20) at the same thread count, it is the time a step
cannot beat. The last line is machine-readable (key=value pairs). On a machine shared with
other jobs the absolute times move with their load; the ratios, measured in alternation in
one process, are the figures.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: import sweep from this checkout

from sweep.models.cost import flops  # noqa: E402
from sweep.models.resnet import resnet  # noqa: E402
from sweep.training.layout import channels_last_forward  # noqa: E402

# the weights and the batch in torch's default layout; both channels-last; the batch alone
LAYOUTS = ("nchw", "channels_last", "input_channels_last", "weight_copies")
FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n Fashion-MNIST training images in [0, 1], (n, 1, 28, 28), and labels (random ones:
    speed does not depend on them); random images where the file is missing."""
    gen = torch.Generator().manual_seed(0)
    if FASHION.exists():
        with gzip.open(FASHION) as f:
            x = np.frombuffer(f.read(), np.uint8, offset=16)[: n * 784].reshape(-1, 1, 28, 28)
        x = torch.from_numpy(x.astype(np.float32) / 255.0)
    else:
        x = torch.rand(n, 1, 28, 28, generator=gen)
    return x, torch.randint(0, 10, (len(x),), generator=gen)


def gemm_gflops(threads: int, size: int = 1024, tries: int = 20) -> float:
    """The best GFLOP/s of a size^3 float32 torch.mm at `threads` threads (2 * size^3 FLOPs
    a product)."""
    torch.set_num_threads(threads)
    a, b = torch.rand(size, size), torch.rand(size, size)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(tries))
    return 2 * size**3 / best / 1e9


def _timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class Setting:
    """One model in one memory format, trained by autograd and torch.optim.SGD (momentum
    0.9), as the trainer trains any model that is not a plain MLP."""

    def __init__(self, a: argparse.Namespace, layout: str) -> None:
        torch.manual_seed(0)
        self.model = resnet(784, 10, (1, 28, 28), a.depth, a.width).train()
        last = layout != "nchw"
        self.format = torch.channels_last if last else torch.contiguous_format
        if layout == "channels_last":  # else the weights stay NCHW (the trainer's flat views)
            self.model.to(memory_format=self.format)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9)
        self.forward = self.model
        if layout == "weight_copies":
            self.forward = channels_last_forward(self.model)

    def run(self, x: torch.Tensor, y: torch.Tensor, batch: int, steps: int) -> list[float]:
        """Seconds of each of `steps` training steps over consecutive batches."""
        out = []
        for i in range(steps):
            j = (i * batch) % (len(x) - batch + 1)
            t0 = time.perf_counter()
            xb = x[j : j + batch].contiguous(memory_format=self.format)
            loss = F.cross_entropy(self.forward(xb), y[j : j + batch])
            self.opt.zero_grad(set_to_none=False)
            loss.backward()
            self.opt.step()
            out.append(time.perf_counter() - t0)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few steps: seconds")
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=10, help="steps per timing round")
    parser.add_argument("--repeats", type=int, default=7, help="alternating rounds")
    a = parser.parse_args()
    if a.smoke:
        a.steps, a.repeats, a.threads = 2, 2, [1]
    x, y = images(max(4 * a.batch, 512))
    settings = {(fmt, t): Setting(a, fmt) for fmt in LAYOUTS for t in a.threads}
    macs = flops(resnet(784, 10, (1, 28, 28), a.depth, a.width), (1, 28, 28))
    step_flops = 2 * 3 * macs * a.batch  # forward + input grad + weight grad, 2 FLOPs a MAC
    rates = {t: gemm_gflops(t) for t in a.threads}
    print(f"resnet depth {a.depth} width {a.width}, batch {a.batch}, {macs / 1e6:.2f} M "
          f"multiply-adds an image forward, {step_flops / 1e9:.3f} GFLOP a training step; "
          f"torch {torch.__version__}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    times: dict[tuple[str, int], list[float]] = {k: [] for k in settings}
    for k, s in settings.items():  # warm up: oneDNN builds its kernels on first use
        torch.set_num_threads(k[1])
        s.run(x, y, a.batch, 2)
    for _ in range(a.repeats):
        for k, s in settings.items():
            torch.set_num_threads(k[1])
            times[k] += s.run(x, y, a.batch, a.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {}
    for t in a.threads:
        bound = step_flops / (rates[t] * 1e9)
        nchw = med[("nchw", t)]
        print(f"{t} thread(s): gemm {rates[t]:.0f} GFLOP/s -> FLOP bound {1e3 * bound:.1f} ms "
              f"a step", flush=True)  # fmt: skip
        for fmt in LAYOUTS:
            m = med[(fmt, t)]
            print(
                f"  {fmt:>21}: {1e3 * m:7.1f} ms a step, {a.batch / m:5.0f} img/s, "
                f"{m / bound:.2f}x the bound, {nchw / m:.3f}x nchw's speed",
                flush=True,
            )
            out |= {f"{fmt}_ms_t{t}": 1e3 * m, f"{fmt}_over_bound_t{t}": m / bound,
                    f"{fmt}_speedup_t{t}": nchw / m}  # fmt: skip
    if len(a.threads) > 1:
        t0, t1 = a.threads[0], a.threads[-1]
        out[f"nchw_threads_{t1}_over_{t0}"] = med[("nchw", t0)] / med[("nchw", t1)]
    print(" ".join(f"{k}={v:.4g}" for k, v in out.items()))


if __name__ == "__main__":
    main()
