"""Benchmark: inference of the 784-256-10 MLP in onnxruntime against Keras.

The model is `zoo.build.build_model` of specs/fashion-mnist-mlp.json, untrained (the
weights do not change the arithmetic), exported with `zoo.export.to_onnx` +
`write_onnx` exactly as `zoo export` does, then timed three ways on uint8 inputs of
shape (batch, 28, 28):

- onnxruntime: `InferenceSession.run(None, {"input": x})`, CPUExecutionProvider,
  default session options; it computes both outputs, logits and probabilities.
- keras predict: `model.predict(x, verbose=0)` (logits).
- keras call: `model(x, training=False)` (logits, an eager call).

Each call is timed alone and the figure is the median. The methods take turns in
blocks (--rounds blocks of each, a few untimed calls opening every block), so a burst
of load from another process hits all three alike. Not call by call: on a 2-core
machine TensorFlow's and onnxruntime's thread pools keep spinning for a while after
a call, and alternating single calls times their contention (measured: onnxruntime
at batch 1 took 15 us a call on its own, 1.9 ms alternating with Keras calls).

GFLOP/s counts the MLP's 2 * (784*256 + 256*10) FLOPs per example (the rescale,
bias, ReLU and softmax are left out). The reference "peak" is float32 sgemm measured
in the same run: numpy matmul (whatever BLAS numpy ships; OpenBLAS may pick an older
kernel than the CPU supports) and, for the runtime's own ceiling, a one-node ONNX
MatMul in onnxruntime, each the median of repeated calls.

Usage:
    python benchmarks/infer_bench.py                  # batches 1 and 1024
    python benchmarks/infer_bench.py --repeats 50     # quicker
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo.core.backend import import_keras  # noqa: E402

keras = import_keras()

import numpy as np  # noqa: E402

from zoo.spec import load_spec  # noqa: E402
from zoo.stages import build, export  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_bench import machine  # noqa: E402

SPEC = ROOT / "specs" / "fashion-mnist-mlp.json"
FLOPS_PER_EXAMPLE = 2 * (784 * 256 + 256 * 10)


def timed_blocks(jobs, rounds, settle=3):
    """Run every job's calls in `rounds` blocks, the jobs taking turns; returns {name: [seconds per call]}.

    jobs: {name: (fn, calls)}. The first `settle` calls of each block are not timed.
    """
    times = {name: [] for name in jobs}
    for _ in range(rounds):
        for name, (fn, calls) in jobs.items():
            for _ in range(settle):
                fn()
            for _ in range(max(1, calls // rounds)):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    return times


def ort_matmul(m, k, n, rng):
    """A session computing x @ w for a constant w of shape (k, n): onnxruntime's own sgemm."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), name="w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], initializer=[w])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)  # IR 8 goes with opset 17
    onnx.checker.check_model(proto)
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def sgemm_jobs(calls, rng):
    """float32 matmul in numpy and in onnxruntime, the MLP's own layer shape and a large square one.

    Returns {name: (fn, calls)} and {name: FLOPs per call}.
    """
    jobs, flops = {}, {}
    for m, k, n in ((1024, 784, 256), (2048, 2048, 2048)):
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        sess = ort_matmul(m, k, n, rng)
        shape = f"{m}x{k} @ {k}x{n}"
        jobs[f"numpy {shape}"] = (lambda a=a, b=b: a @ b, calls)
        jobs[f"onnxruntime MatMul {shape}"] = (lambda s=sess, a=a: s.run(None, {"x": a}), calls)
        flops[f"numpy {shape}"] = flops[f"onnxruntime MatMul {shape}"] = 2 * m * k * n
    return jobs, flops


def blas_threads():
    try:
        from threadpoolctl import threadpool_info

        return ", ".join(f"{i['internal_api']} {i.get('version', '')} ({i.get('architecture', '?')} kernels, "
                         f"{i['num_threads']} threads)" for i in threadpool_info() if i.get("user_api") == "blas")
    except ImportError:
        return "threadpoolctl not installed"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 1024])
    p.add_argument("--repeats", type=int, default=300, help="timed calls per method at batch <= 64 (default 300)")
    p.add_argument("--large-repeats", type=int, default=100, help="timed calls per method at batch > 64 (default 100)")
    p.add_argument("--sgemm-repeats", type=int, default=50, help="timed calls of each reference matmul (default 50)")
    p.add_argument("--warmup", type=int, default=20, help="untimed calls of each method first (default 20)")
    p.add_argument("--rounds", type=int, default=5, help="blocks of each method, taking turns (default 5)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the spec's)")
    args = p.parse_args(argv)

    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    spec = load_spec(SPEC)
    opset = args.opset or spec.export.opset
    model = build.build_model(spec)
    with tempfile.TemporaryDirectory(prefix="zoo-infer-") as tmp:
        path = Path(tmp) / "model.onnx"
        export.write_onnx(export.to_onnx(model, spec, opset), path, export.metadata(spec, None, spec.model.class_names))
        size = path.stat().st_size
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; load average at start: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"model: {spec.name} (784-256-10, untrained), ONNX opset {opset}, {size / 1024:.0f} KiB; "
          f"onnxruntime providers {sess.get_providers()}, default SessionOptions; numpy BLAS: {blas_threads()}")
    print(f"settings: warm-up {args.warmup} calls each, then {args.repeats} (batch <= 64) / {args.large_repeats} "
          f"(batch > 64) / {args.sgemm_repeats} (reference matmuls) timed calls per method, in {args.rounds} "
          f"interleaved blocks; median per call", flush=True)

    rng = np.random.default_rng(0)
    jobs, flops, diffs = {}, {}, {}
    for batch in args.batches:
        x = rng.integers(0, 256, size=(batch, 28, 28), dtype=np.uint8)
        feed = {export.INPUT_NAME: x}
        calls = args.repeats if batch <= 64 else args.large_repeats
        methods = {
            "onnxruntime run": lambda feed=feed: sess.run(None, feed),
            "keras model.predict": lambda x=x: model.predict(x, verbose=0),
            "keras model(x)": lambda x=x: model(x, training=False).numpy(),
        }
        # the three must agree, else we would be timing a broken graph
        ref = methods["keras model(x)"]()
        diffs[batch] = max(float(np.max(np.abs(sess.run(["logits"], feed)[0] - ref))),
                           float(np.max(np.abs(np.asarray(methods["keras model.predict"]()) - ref))))
        for m, fn in methods.items():
            jobs[(batch, m)] = (fn, calls)
            flops[(batch, m)] = FLOPS_PER_EXAMPLE * batch
    ref_jobs, ref_flops = sgemm_jobs(args.sgemm_repeats, rng)
    jobs.update(ref_jobs)
    flops.update(ref_flops)
    for fn, _ in jobs.values():
        for _ in range(args.warmup):
            fn()
    times = timed_blocks(jobs, args.rounds)
    med = {k: statistics.median(v) for k, v in times.items()}
    gflops = {k: flops[k] / med[k] / 1e9 for k in jobs}

    numpy_peak_name = max((k for k in ref_jobs if k.startswith("numpy")), key=gflops.get)
    best_name = max(ref_jobs, key=gflops.get)
    numpy_peak, best = gflops[numpy_peak_name], gflops[best_name]

    print()
    print("| batch | method | median ms/call (p10-p90) | examples/s | GFLOP/s | % of numpy sgemm | % of best sgemm "
          "| time / onnxruntime |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in args.batches:
        for m in ("onnxruntime run", "keras model.predict", "keras model(x)"):
            k = (batch, m)
            p10, p90 = np.percentile(times[k], [10, 90])
            print(f"| {batch} | {m} | {med[k] * 1e3:.3f} ({p10 * 1e3:.3f}-{p90 * 1e3:.3f}) | {batch / med[k]:,.0f} | "
                  f"{gflops[k]:.2f} | {100 * gflops[k] / numpy_peak:.0f}% | {100 * gflops[k] / best:.0f}% | "
                  f"{med[k] / med[(batch, 'onnxruntime run')]:.2f} |")
    print()
    print("| reference float32 matmul | median ms/call (p10-p90) | GFLOP/s |")
    print("|---|---|---|")
    for k in ref_jobs:
        p10, p90 = np.percentile(times[k], [10, 90])
        print(f"| {k} | {med[k] * 1e3:.3f} ({p10 * 1e3:.3f}-{p90 * 1e3:.3f}) | {gflops[k]:.1f} |")
    print()
    print(f"- numpy sgemm peak used: {numpy_peak_name}, {numpy_peak:.1f} GFLOP/s; "
          f"best sgemm: {best_name}, {best:.1f} GFLOP/s")
    print("- max |logits difference| of onnxruntime and predict vs model(x): "
          + ", ".join(f"batch {b}: {d:.1e}" for b, d in diffs.items()))
    print(f"- FLOPs per example: {FLOPS_PER_EXAMPLE:,} (2 x (784x256 + 256x10)); "
          f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
