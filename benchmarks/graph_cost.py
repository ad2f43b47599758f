"""What a conv net's row costs in dependency-graph work: one process per checkout, alternated.

    git archive 3a0b3ec | tar -x -C /tmp/base      # the checkout to compare (before graph_of)
    python benchmarks/graph_cost.py --base /tmp/base --rounds 3

Each process builds a ResNet (`model=resnet`, `--depth` 8 and `--width` 8 by default, on
the digits' 8x8 images), runs what a
run of `prune=neurons` on it does to the graph (`NeuronPruner.check` before training, then
`--levels` times: the mask of a cut to 50% and the row's compact figures,
`compact.measures`), and prints its seconds (time.perf_counter, one torch thread) and how
many times Torch-Pruning traced the model. This checkout and `--base` alternate, `--rounds`
times each; the last line is the medians and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import time, torch, torch_pruning as tp
torch.set_num_threads(1)
traces = [0]
build = tp.DependencyGraph.build_dependency
def counted(self, *a, **k):
    traces[0] += 1
    return build(self, *a, **k)
tp.DependencyGraph.build_dependency = counted
from sweep.models import compact
from sweep.models.resnet import resnet
from sweep.sparsity.pruning import NeuronPruner, apply_
from sweep.sparsity.regularizers import Regularizer
torch.manual_seed(0)
model, shape = resnet(64, 10, (8, 8), depth=DEPTH, width=WIDTH), (8, 8)
start = time.perf_counter()
pruner = NeuronPruner("neurons", sparsity=0.5, scope="global", criterion="bn_scale")
pruner.check(model, shape)
counted_params = Regularizer(0, 0, True, "weights").select(model)
for level in range(LEVELS):
    target = 0.5 * (level + 1) / LEVELS
    apply_(pruner.held(model, counted_params), pruner.mask(model, counted_params, target))
    figures = compact.measures(model, shape)
print(time.perf_counter() - start, traces[0], figures["compact_shape"], figures["flops"])
"""


def one(path: Path, levels: int, depth: int, width: int) -> tuple[float, int, str]:
    """(seconds, traces, the last row's compact_shape and flops) of one process on `path`."""
    env = {**os.environ, "PYTHONPATH": str(path)}
    code = CHILD.replace("LEVELS", str(levels)).replace("DEPTH", str(depth))
    out = subprocess.run([sys.executable, "-c", code.replace("WIDTH", str(width))],
                         capture_output=True, text=True, env=env, cwd=path, check=True)  # fmt: skip
    seconds, traces, *figures = out.stdout.split()
    return float(seconds), int(traces), " ".join(figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the checkout to compare")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--levels", type=int, default=3, help="prune levels (mask + row)")
    parser.add_argument("--depth", type=int, default=8, help="model=resnet's model.depth")
    parser.add_argument("--width", type=int, default=8, help="model=resnet's model.width")
    a = parser.parse_args()
    times: dict[str, list[float]] = {"base": [], "this": []}
    for r in range(a.rounds):
        for name, path in (("base", a.base), ("this", REPO)):
            seconds, traces, figures = one(path, a.levels, a.depth, a.width)
            times[name].append(seconds)
            print(f"round {r} {name}: {seconds:.2f} s, {traces} traces, last row {figures}, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    base, this = (statistics.median(times[k]) for k in ("base", "this"))
    print(f"median base={base:.3f}s this={this:.3f}s ratio={base / this:.2f}")


if __name__ == "__main__":
    main()
