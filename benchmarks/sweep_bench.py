"""Benchmark: `zoo sweep` beside the sweep a user would otherwise write (issue 20, section 2).

One grid of 24 trials per spec (4 learning rates x 3 values of a second key x 2 seeds),
3 epochs each, 2 workers, run two ways:

- zoo: `zoo sweep SPEC --set ... --seeds 0,1 --epochs 3 --workers 2` in a fresh folder
  (SQLite study, two worker processes, each loading its dataset once, the default
  `--export best`: the best run exported to ONNX and verified at the end; that export
  is inside the time).
- peer: one process (this script with --peer), an Optuna study with a GridSampler over the same grid and
  `study.optimize(objective, n_jobs=2)`; the data loaded once, up front, with zoo's own
  loader (the peer's fastest way to the same arrays); each trial builds the same Keras
  model (`zoo.stages.build.build_model`), compiles it with SGD and the spec's loss, and
  calls plain `model.fit(x, y, batch_size, epochs=3, verbose=0)` then `model.evaluate`
  on the test set. Nothing is written, exported or verified.

Reported per spec: trials per minute of each (wall clock from the command's start to its
end, imports and data loading included for both), the ratio, and zoo's median
non-training seconds per trial (results.csv's `other_seconds`).

Usage:
    nice python benchmarks/sweep_bench.py                        # both specs
    python benchmarks/sweep_bench.py --specs digits-mlp --epochs 1   # smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GRIDS = {  # spec -> (second key, its values); every grid also sweeps train.learning_rate and seeds 0,1
    "digits-mlp": ("model.hidden[0].units", [32, 64, 128]),
    "fashion-mnist-softmax": ("train.batch_size", [128, 256, 512]),
}
LEARNING_RATES = [0.02, 0.05, 0.1, 0.2]
SEEDS = [0, 1]


def run_zoo(spec: str, epochs: int, workers: int) -> dict:
    key, values = GRIDS[spec]
    with tempfile.TemporaryDirectory(prefix="zoo-sweep-bench-") as folder:
        cmd = [sys.executable, "-m", "zoo", "sweep", str(ROOT / "specs" / f"{spec}.json"),
               "--set", f"train.learning_rate={','.join(map(str, LEARNING_RATES))}",
               "--set", f"{key}={','.join(map(str, values))}", "--seeds", ",".join(map(str, SEEDS)),
               "--epochs", str(epochs), "--workers", str(workers), "--out", f"{folder}/exports", "--quiet"]
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=folder, stdin=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"zoo sweep failed ({done.returncode}): {done.stderr[-2000:]}")
        results = next(Path(folder, "exports", "sweeps").glob("*/results.csv"))
        rows = list(csv.DictReader(open(results)))
        best = next(line for line in done.stdout.splitlines() if line.startswith("Best:"))
        run = Path(best.split("its best run: ", 1)[1].split(" (", 1)[0])
        verified = json.loads((run / "verify.json").read_text())["status"]
        return {"trials": len(rows), "wall": wall, "verified": verified,
                "other": statistics.median(float(r["other_seconds"]) for r in rows),
                "train": statistics.median(float(r["train_seconds"]) for r in rows),
                "best": max(float(r["test_accuracy"]) for r in rows)}


def run_peer(spec_name: str, epochs: int, workers: int) -> dict:
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")  # as zoo's workers: the CPU
    from zoo.core.backend import import_keras

    keras = import_keras()
    import optuna

    from zoo.api import load_spec, with_overrides
    from zoo.stages.build import build_model
    from zoo.stages.data import load_dataset

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    key, values = GRIDS[spec_name]
    base = load_spec(ROOT / "specs" / f"{spec_name}.json")
    data = load_dataset(base)  # once, up front
    x, y, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test

    def objective(trial):
        lr = trial.suggest_categorical("lr", LEARNING_RATES)
        value = trial.suggest_categorical("value", values)
        seed = trial.suggest_categorical("seed", SEEDS)
        spec = with_overrides(base, learning_rate=lr, seed=seed, epochs=epochs)
        batch = value if key == "train.batch_size" else spec.train.batch_size
        if key == "model.hidden[0].units":
            from zoo.spec import resolve, validate
            from zoo.spec.keys import set_key

            spec = validate(set_key(resolve(spec), key, value, "bench"), "bench")
        keras.utils.set_random_seed(seed)
        model = build_model(spec)
        model.compile(optimizer=keras.optimizers.SGD(lr),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0)
        return model.evaluate(x_test, y_test, verbose=0)[1]

    sampler = optuna.samplers.GridSampler({"lr": LEARNING_RATES, "value": values, "seed": SEEDS})
    study = optuna.create_study(direction="maximize", sampler=sampler)
    started = time.perf_counter()
    study.optimize(objective, n_jobs=workers)
    wall = time.perf_counter() - started
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    return {"trials": len(done), "wall": wall, "best": max(t.value for t in done)}


def time_peer(spec: str, epochs: int, workers: int) -> dict:
    """The peer as a user runs it: a fresh process, its imports and data loading in the time."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--peer", spec, "--epochs", str(epochs), "--workers",
                           str(workers)], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SystemExit(f"the peer failed: {done.stderr[-2000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--peer", choices=list(GRIDS), help="run only the peer's sweep of this spec (JSON out)")
    args = parser.parse_args()
    if args.peer:
        print(json.dumps(run_peer(args.peer, args.epochs, args.workers)))
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
          f"{args.epochs} epochs, {args.workers} workers")
    print("| spec | trials | zoo trials/min | peer trials/min | ratio | zoo median other s/trial | "
          "zoo median train s/trial | best acc zoo / peer | best run verified |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for spec in args.specs:
        zoo = run_zoo(spec, args.epochs, args.workers)
        peer = time_peer(spec, args.epochs, args.workers)
        z, p = 60 * zoo["trials"] / zoo["wall"], 60 * peer["trials"] / peer["wall"]
        print(f"| {spec} | {zoo['trials']} | {z:.1f} ({zoo['wall']:.0f} s) | {p:.1f} ({peer['wall']:.0f} s) | "
              f"**{z / p:.2f}x** | {zoo['other']:.2f} | {zoo['train']:.2f} | {zoo['best']:.4f} / {peer['best']:.4f} | "
              f"{zoo['verified']} |", flush=True)


if __name__ == "__main__":
    main()
