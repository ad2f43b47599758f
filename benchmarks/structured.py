"""What structured sparsity buys on a CPU: a dense model against its compact twin.

    python benchmarks/structured.py --work /tmp/structured-bench     # Fashion-MNIST, 4 seeds
    python benchmarks/structured.py --smoke                          # digits, 1 seed, quick
    python benchmarks/structured.py --model lenet5 --seeds 1 ...     # the same for lenet5

For each seed, two models are trained as a user trains them (`python -m sweep.run
experiment=fashion_structured ...`): the structured one (group lasso on neurons and pixels,
then neuron pruning with masked fine-tuning) and the dense baseline of the same recipe with the
sparsity terms off (`group_lambda=0 prune=none`). Each is read back from its model.pt, the
structured one compacted (`sweep.models.compact.compact`: dead neurons and unread pixels taken out);
the script checks that the compact model's logits equal the masked model's on the test set,
then measures in one process, on one thread, torch eager, the dense and the compact model in
alternation (`--repeats` rounds, each a run of calls lasting `--seconds`, every call timed):
the throughput at batch 256 and the time per call at batch 1, from the median call (the cost
of a call no other process interrupts; on a shared machine most are not), and beside it the
ratio of the runs' mean times, which also counts the interruptions.
The compact model is timed on inputs already cut to the pixels it reads (a deployed model is
fed only those).
Test accuracies are of the models read back from disk (the compact one on the kept pixels).
The last line is machine-readable: key=value pairs (medians over the seeds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: import sweep from this checkout

from sweep.models import compact  # noqa: E402
from sweep.training.train import accuracy, build  # noqa: E402

SMOKE = ["data=digits", "train.epochs=15", "prune.rounds=1", "prune.epochs=2",
         "group_lambda=1e-3"]  # fmt: skip


def train(work: Path, name: str, seed: int, args: list[str]) -> Path:
    """One `python -m sweep.run` into work/name_seed; its run directory."""
    out = work / f"{name}_{seed}"
    if not (out / "metrics.json").exists():
        cmd = [sys.executable, "-m", "sweep.run", *args, f"seed={seed}", "train.threads=1",
               f"hydra.run.dir={out}", "train.log_every=100"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
        subprocess.run(cmd, cwd=work, check=True, capture_output=True, env=env)
    return out


def load(run: Path) -> tuple[torch.nn.Module, object]:
    """The trained model of a run directory, read back from model.pt, and its data."""
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    data = build(cfg.data, seed=cfg.seed)
    model = build(cfg.model, n_inputs=data.n_inputs, n_classes=data.n_classes,
                  input_shape=data.image_shape)  # fmt: skip
    model.load_state_dict(torch.load(run / "model.pt", weights_only=True))
    return model.eval(), data


@torch.inference_mode()
def calls(model: torch.nn.Module, x: torch.Tensor, seconds: float) -> list[float]:
    """Seconds of each call of model(x), over a run of calls lasting about `seconds`."""
    model(x)
    clock = time.perf_counter
    out, end = [], clock() + seconds
    while (t0 := clock()) < end:
        model(x)
        out.append(clock() - t0)
    return out


def timings(pairs: dict, repeats: int, seconds: float) -> dict[str, tuple[float, float]]:
    """Per (model, input): (the median call's seconds, the median run's mean seconds a call),
    from `repeats` runs each, the pairs measured in alternation. The median call is what one
    call costs when no other process interrupts it (on a busy machine most calls are not
    interrupted); a run's mean also counts the interruptions."""
    times: dict[str, list[list[float]]] = {k: [] for k in pairs}
    for _ in range(repeats):
        for key, (model, x) in pairs.items():
            times[key].append(calls(model, x, seconds))
    return {
        k: (statistics.median(c for run in v for c in run),
            statistics.median(statistics.fmean(run) for run in v))
        for k, v in times.items()
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="digits, 1 seed, few epochs")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--model", default="simple_net", help="simple_net or lenet5")
    parser.add_argument("--work", type=Path, default=None, help="scratch dir (runs, data)")
    parser.add_argument("--repeats", type=int, default=7, help="alternating timing rounds")
    parser.add_argument("--seconds", type=float, default=0.2, help="per timing run")
    parser.add_argument("overrides", nargs="*", help="more sweep.run overrides, both models")
    a = parser.parse_args()
    seeds = 1 if a.smoke else a.seeds
    work = (a.work or Path.cwd() / "structured-bench").resolve()
    work.mkdir(parents=True, exist_ok=True)
    common = ["experiment=fashion_structured", f"model={a.model}", f"data.root={work}/data"]
    if a.model == "lenet5":  # a conv layer reads whole images: its filters go, not pixels
        common.append("prune.inputs=0")
    common += (SMOKE if a.smoke else []) + a.overrides
    if a.smoke:
        common.remove(f"data.root={work}/data")
        a.repeats, a.seconds = 3, 0.05
    torch.set_num_threads(1)
    print(f"model {a.model}, {'digits (smoke)' if a.smoke else 'fashion_mnist'}, {seeds} seeds;"
          f" overrides: {' '.join(common)}; 1 thread, torch {torch.__version__} eager, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    rows = []
    for seed in range(seeds):
        start = time.perf_counter()
        dense_run = train(work, f"{a.model}_dense", seed, [*common, "group_lambda=0", "prune=none"])
        sparse_run = train(work, f"{a.model}_structured", seed, common)
        trained = time.perf_counter() - start
        dense, data = load(dense_run)
        masked, _ = load(sparse_run)
        small, kept = compact.compact(masked, data.image_shape)
        x_small = compact.select_inputs(data.x_test, kept)
        with torch.inference_mode():
            gap = float((small(x_small) - masked(data.x_test)).abs().max())
        assert gap < 1e-4, f"compact logits differ from the masked model's by {gap}"
        n_kept = int(kept.sum())
        row = {
            "seed": seed,
            "dense_acc": accuracy(dense, data.x_test, data.y_test),
            "masked_acc": accuracy(masked, data.x_test, data.y_test),
            "compact_acc": accuracy(small, x_small, data.y_test),
            "shape": compact.shape_string(small, n_kept),
            "dense_shape": compact.shape_string(dense, data.n_inputs),
            "flops_ratio": compact.flops(dense, data.image_shape) / compact.flops(small, (n_kept,)),
            "gap": gap,
        }
        t = timings(
            {
                "dense_256": (dense, data.x_test[:256]),
                "compact_256": (small, x_small[:256]),
                "dense_1": (dense, data.x_test[:1]),
                "compact_1": (small, x_small[:1]),
            },
            a.repeats,
            a.seconds,
        )
        call = {k: v[0] for k, v in t.items()}
        run = {k: v[1] for k, v in t.items()}
        row.update(
            dense_256=256 / call["dense_256"], compact_256=256 / call["compact_256"],
            dense_1=call["dense_1"] * 1e6, compact_1=call["compact_1"] * 1e6,
            speedup_256=call["dense_256"] / call["compact_256"],
            speedup_1=call["dense_1"] / call["compact_1"],
            run_256=run["dense_256"] / run["compact_256"], run_1=run["dense_1"] / run["compact_1"],
        )  # fmt: skip
        rows.append(row)
        print(
            f"seed {seed}: dense {row['dense_shape']} test_acc {row['dense_acc']:.4f} | compact "
            f"{row['shape']} test_acc {row['compact_acc']:.4f} (masked {row['masked_acc']:.4f}, "
            f"logit gap {gap:.1e}) | FLOPs {row['flops_ratio']:.2f}x fewer | batch 256: "
            f"{row['dense_256']:.0f} vs {row['compact_256']:.0f} examples/s "
            f"({row['speedup_256']:.2f}x; run means {row['run_256']:.2f}x) | batch 1: "
            f"{row['dense_1']:.1f} vs {row['compact_1']:.1f} us ({row['speedup_1']:.2f}x; "
            f"run means {row['run_1']:.2f}x) | trained in {trained:.0f} s"
        )
    med = {k: statistics.median(r[k] for r in rows) for k in
           ("dense_acc", "compact_acc", "speedup_256", "speedup_1", "flops_ratio", "run_256",
            "run_1")}  # fmt: skip
    drop = 100 * (statistics.fmean(r["dense_acc"] for r in rows)
                  - statistics.fmean(r["compact_acc"] for r in rows))  # fmt: skip
    print(
        f"seeds={seeds} dense_test_acc={med['dense_acc']:.4f} "
        f"compact_test_acc={med['compact_acc']:.4f} mean_drop_points={drop:.2f} "
        f"speedup_batch256={med['speedup_256']:.2f} speedup_batch1={med['speedup_1']:.2f} "
        f"flops_ratio={med['flops_ratio']:.2f} "
        f"min_speedup_batch256={min(r['speedup_256'] for r in rows):.2f} "
        f"min_speedup_batch1={min(r['speedup_1'] for r in rows):.2f} "
        f"run_speedup_batch256={med['run_256']:.2f} run_speedup_batch1={med['run_1']:.2f}"
    )


if __name__ == "__main__":
    main()
