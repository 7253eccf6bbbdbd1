"""Benchmark: zoo's trainer against a plain `model.fit` on Fashion-MNIST.

Both train the same model (`zoo.build.build_model(spec)`) with the spec's batch size,
learning rate and epochs, validating on the test set after every epoch:

- plain: `model.fit(x_train, y_train, batch_size, epochs, validation_data=(x_test, y_test))`
  on numpy arrays, compiled with SparseCategoricalCrossentropy(from_logits=True),
  accuracy and SGD(learning_rate); every other setting is Keras's default.
- zoo: `zoo.train.train(spec, run)` into a temporary run folder. Its `wall_seconds`
  times the fit alone ("zoo fit"); the whole call ("zoo train()") adds loading the
  data, building, one checkpoint + history.json per epoch, the final evaluation,
  model.keras, metrics.json and the two plots.

Runs are interleaved (the order of the two methods alternates every repeat) and
each figure is the median over the repeats; one untimed 1-epoch run of each method
comes first, so one-time process costs (lazy imports, TF start-up) land in neither.

zoo.train.configure turns TensorFlow op determinism on for the whole process; the
plain runs switch it back off (TensorFlow's default) unless --plain-determinism.

Usage:
    python benchmarks/train_bench.py                      # both catalog specs, 3 repeats
    python benchmarks/train_bench.py --epochs 1 --repeats 1   # smoke run
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo._quiet import import_keras  # noqa: E402

keras = import_keras()

import tensorflow as tf  # noqa: E402

from zoo import build, data, train  # noqa: E402
from zoo.spec import load_spec  # noqa: E402

DEFAULT_SPECS = [ROOT / "specs" / "fashion-mnist-softmax.json", ROOT / "specs" / "fashion-mnist-mlp.json"]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets"
# The targets for 10 epochs (zoo's trainer, fit time) and plain fit's accuracy.
TARGET_SECONDS = {"fashion-mnist-softmax": 4.0, "fashion-mnist-mlp": 8.0}
TARGET_ACCURACY_GAP = 0.005  # zoo within 0.5 points of plain fit


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    v = train.versions()
    ort = v.get("onnxruntime-gpu") or v.get("onnxruntime", "-")
    return (f"{cpu}, {os.cpu_count()} cores ({usable} usable), {platform.system()} {platform.machine()}; "
            f"python {v['python']}, tensorflow {v.get('tensorflow')}, keras {v.get('keras')}, numpy {v.get('numpy')}, "
            f"tf2onnx {v.get('tf2onnx', '-')}, onnxruntime {ort}, backend {keras.backend.backend()}")


def with_epochs(spec, epochs):
    if epochs is None:
        return spec
    return spec.model_copy(update={"train": spec.train.model_copy(update={"epochs": epochs})})


def set_determinism(on: bool):
    from tensorflow.python.framework import config as tf_config  # not exported: there is no public "off"

    if on:
        tf.config.experimental.enable_op_determinism()
    elif hasattr(tf_config, "disable_op_determinism"):
        tf_config.disable_op_determinism()


def fresh():
    keras.backend.clear_session()
    gc.collect()


def run_plain(spec, ds, determinism):
    """Plain Keras: build, compile with defaults, fit on numpy arrays. Returns (fit seconds, test accuracy)."""
    fresh()
    set_determinism(determinism)
    model = build.build_model(spec)
    build.adapt(model, ds.x_train)  # a no-op for these specs (no standardize layer)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=spec.train.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    started = time.perf_counter()
    history = model.fit(ds.x_train, ds.y_train, batch_size=spec.train.batch_size, epochs=spec.train.epochs,
                        validation_data=(ds.x_test, ds.y_test), verbose=0)
    fit = time.perf_counter() - started
    return {"fit": fit, "accuracy": float(history.history["val_accuracy"][-1])}


def run_zoo(spec, data_dir):
    """zoo.train.train into a fresh temporary run. Returns fit seconds, whole-call seconds, test accuracy."""
    fresh()
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as tmp:
        run = Path(tmp) / spec.name
        started = time.perf_counter()
        metrics = train.train(spec, run, data_dir=data_dir, quiet=True, log=lambda m: None)
        total = time.perf_counter() - started
    return {"fit": metrics["wall_seconds"], "total": total, "accuracy": metrics["test"]["accuracy"]}


def summarize(times):
    return statistics.median(times), min(times), max(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--specs", nargs="+", type=Path, default=DEFAULT_SPECS, help="spec files (default: the two Fashion-MNIST catalog specs)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each method per spec (default 3)")
    p.add_argument("--epochs", type=int, default=None, help="override the specs' epochs (for a quick smoke run)")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("ZOO_DATA_DIR", DEFAULT_DATA)))
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed 1-epoch run of each method")
    p.add_argument("--plain-determinism", action="store_true",
                   help="leave TF op determinism on for plain fit too (zoo always turns it on)")
    args = p.parse_args(argv)

    specs = [with_epochs(load_spec(s), args.epochs) for s in args.specs]
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; load average at start: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"settings: repeats {args.repeats}, epochs {args.epochs or 'from spec'}, data {args.data_dir}, "
          f"plain-fit op determinism {'on' if args.plain_determinism else 'off'}", flush=True)

    datasets = {s.name: data.load_dataset(s, args.data_dir) for s in specs}
    if not args.no_warmup:
        warm = with_epochs(specs[0], 1)
        run_plain(warm, datasets[warm.name], args.plain_determinism)
        run_zoo(warm, args.data_dir)

    results = {s.name: {"plain": [], "zoo": []} for s in specs}
    for r in range(args.repeats):
        for s in specs:
            order = ["plain", "zoo"] if r % 2 == 0 else ["zoo", "plain"]
            for method in order:
                if method == "plain":
                    out = run_plain(s, datasets[s.name], args.plain_determinism)
                    print(f"  repeat {r + 1} {s.name} plain: fit {out['fit']:.2f}s acc {out['accuracy']:.4f}", flush=True)
                else:
                    out = run_zoo(s, args.data_dir)
                    print(f"  repeat {r + 1} {s.name} zoo: fit {out['fit']:.2f}s train() {out['total']:.2f}s "
                          f"acc {out['accuracy']:.4f}", flush=True)
                results[s.name][method].append(out)

    print()
    print("| spec | method | median s (min-max) | samples/s | test accuracy | ratio zoo/plain |")
    print("|---|---|---|---|---|---|")
    verdicts = []
    for s in specs:
        n = len(datasets[s.name].x_train) * s.train.epochs
        res = results[s.name]
        plain_med, plain_lo, plain_hi = summarize([o["fit"] for o in res["plain"]])
        plain_acc = statistics.median(o["accuracy"] for o in res["plain"])
        zoo_acc = statistics.median(o["accuracy"] for o in res["zoo"])
        rows = [("plain model.fit (fit)", [o["fit"] for o in res["plain"]], plain_acc),
                ("zoo train: fit (wall_seconds)", [o["fit"] for o in res["zoo"]], zoo_acc),
                ("zoo train() whole call", [o["total"] for o in res["zoo"]], zoo_acc)]
        for label, times, acc in rows:
            med, lo, hi = summarize(times)
            ratio = "1.00" if label.startswith("plain") else f"{med / plain_med:.2f}"
            print(f"| {s.name} | {label} | {med:.2f} ({lo:.2f}-{hi:.2f}) | {n / med:,.0f} | {acc:.4f} | {ratio} |")
        zoo_fit = statistics.median(o["fit"] for o in res["zoo"])
        target = TARGET_SECONDS.get(s.name)
        if target is not None and s.train.epochs == 10:
            verdicts.append(f"{s.name}: zoo fit {zoo_fit:.2f}s vs target <= {target:.0f}s: "
                            f"{'met' if zoo_fit <= target else 'NOT met'}")
        gap = zoo_acc - plain_acc
        if s.train.epochs == 10:  # the targets are for 10 epochs
            verdicts.append(f"{s.name}: accuracy zoo - plain = {gap * 100:+.2f} points (target within "
                            f"{TARGET_ACCURACY_GAP * 100:.1f}): {'met' if abs(gap) <= TARGET_ACCURACY_GAP else 'NOT met'}")
    print()
    for v in verdicts:
        print(f"- {v}")
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"samples/s = training examples x epochs / median seconds")


if __name__ == "__main__":
    main()
