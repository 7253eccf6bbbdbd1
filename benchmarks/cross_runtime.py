"""Cross-runtime agreement: every exported catalog model on test_data_set_0 in five runtimes.

Table models (one named input per column, some of them strings) go through each runtime
with those inputs; a runtime that cannot take them is named with its error, not counted
as a disagreement.

For each spec in specs/ whose data is here, the model is trained briefly (--epochs, default
1: the arithmetic, not the accuracy, is under test) and exported by the real `zoo run`, or
taken from --runs where a run of that name is already exported. Its test_data_set_0 batch
(16 test examples) then goes through

- Python onnxruntime (CPUExecutionProvider): the reference for the others;
- Node, onnxruntime-node (benchmarks/cross_runtime_node.mjs);
- the browser: the page `zoo export --web` writes, in headless Debian chromium driven by
  Playwright, through window.zoo.predict (onnxruntime-web, WebAssembly, one thread);
- OpenVINO's CPU plugin (pip `openvino`, reading the ONNX file; inference precision
  pinned to f32: on CPUs with bf16 it would otherwise compute in bf16);
- the ONNX reference evaluator (`onnx.reference.ReferenceEvaluator`, numpy);
- LiteRT (`ai-edge-litert`'s interpreter) on the float32 model as Keras exports it
  (`zoo export RUN --variant litert`), held to the same tolerance;

and, with --variants, the export variants in onnxruntime: `ort` (held to the tolerance),
`fp16` and `int8` (not float32 arithmetic: their largest difference and the examples whose
top class differs from float32 onnxruntime's are listed, not failed).

It prints, per model, the largest |difference| of each runtime's outputs from Python
onnxruntime's and from the Keras outputs saved at export (test_data_set_0/output_*.pb),
whether that is within the spec's tolerance (|a - b| <= atol + rtol |b|), and the median
wall time of one call on the batch of 16 (each runtime timed in its own loop after
warm-up calls; the browser's figure is the median of blocks of 10 calls, as a page's
clock is coarse, and includes window.zoo.predict's conversion to plain arrays; Node's is
one `session.run`). Exits 1 if any runtime disagrees. The browser step (re)writes each
run's web/ as `zoo export --web` does.

Usage (from the repository root, after `bash .ci/setup-web.sh` and `pip install -e '.[runtimes,web]'`):
    python benchmarks/cross_runtime.py                     # all catalog specs, 1 epoch each
    python benchmarks/cross_runtime.py --runs exports      # reuse runs exported there
    python benchmarks/cross_runtime.py --specs specs/digits-softmax.json --repeats 50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo.core.contract import TEST_DATA_SET, Contract  # noqa: E402

CHROMIUM = os.environ.get("ZOO_CHROMIUM", "/usr/bin/chromium")
RUNTIMES = ("onnxruntime", "node", "browser", "openvino", "onnx.reference")  # then LiteRT and the variants


def read_tensor(path: Path) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    return numpy_helper.to_array(onnx.load_tensor(str(path)))


def read_inputs(run: Path, contract):
    """test_data_set_0's input: one array, or a table's {input name: array} (input_N.pb in input order)."""
    if not contract.is_table:
        return read_tensor(run / TEST_DATA_SET / "input_0.pb")
    return {name: read_tensor(run / TEST_DATA_SET / f"input_{i}.pb") for i, (name, _, _) in enumerate(contract.columns)}


def timed(fn, repeats, warmup=5):
    for _ in range(warmup):
        out = fn()
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ms.append((time.perf_counter() - t0) * 1e3)
    return out, ms


def feeds_of(x) -> dict:
    """A model's inputs: {"input": x}, or a table's {input name: [batch, 1] array} as given."""
    return x if isinstance(x, dict) else {"input": x}


def plain(a: np.ndarray) -> list:
    """An input's values for JSON: Python str and float, NaN (missing) as None."""
    return [None if isinstance(v, float) and v != v else v for v in a.ravel().tolist()]


def batch_of(x) -> int:
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def run_onnxruntime(model, x, names, repeats):
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    out, ms = timed(lambda: session.run(names, feeds_of(x)), repeats)
    return dict(zip(names, out)), ms


def run_openvino(model, x, names, repeats):
    import openvino as ov

    compiled = ov.Core().compile_model(str(model), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    def call():
        request.infer(feeds_of(x))
        return {n: request.get_tensor(n).data.copy() for n in names}

    return timed(call, repeats)


def run_reference(model, x, names, repeats):
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(str(model))
    out, ms = timed(lambda: evaluator.run(names, feeds_of(x)), max(3, repeats // 10), warmup=1)
    return dict(zip(names, out)), ms


def run_litert(model, x, names, repeats):
    from zoo.core.litert import Runner

    runner = Runner(model)
    out, ms = timed(lambda: runner.run(names, x), repeats)
    return dict(zip(names, out)), ms


def make_variants(run: Path, classifier: bool, with_onnx_variants: bool) -> str | None:
    """zoo export RUN --variant litert (and ort, fp16, int8); None, or why it failed (exit 6 is a gate, kept)."""
    names = ["litert"] + (["ort", "fp16"] + (["int8"] if classifier else []) if with_onnx_variants else [])
    flags = [x for v in names for x in ("--variant", v)]
    done = subprocess.run([sys.executable, "-m", "zoo", "export", str(run), *flags], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"})
    return None if done.returncode in (0, 6) else (done.stderr.strip().splitlines() or ["failed"])[-1]


def variant_rows(name, run, x, names, ref, keras, tol, repeats, with_onnx_variants) -> tuple[list, int]:
    """Rows for LiteRT (float32) and, with --variants, ort, fp16 and int8 in onnxruntime; and the failures."""
    from zoo.core.contract import VARIANT_FILES

    error = make_variants(run, "probabilities" in names, with_onnx_variants)
    if error:
        print(f"{name}: variants not made: {error}")
        return [], 1
    rows, failures = [], 0
    chosen = ["litert"] + (["ort", "fp16", "int8"] if with_onnx_variants else [])
    for variant in [v for v in chosen if (run / VARIANT_FILES[v]).is_file()]:
        path = run / VARIANT_FILES[variant]
        fn = run_litert if variant == "litert" else run_onnxruntime
        out, ms = fn(path, x, names, repeats)
        vs_ort = max(float(np.abs(np.asarray(out[n], np.float64) - ref[n]).max()) for n in names)
        vs_keras = max(float(np.abs(np.asarray(out[n], np.float64) - keras[n]).max()) for n in names)
        exact = variant in ("litert", "ort")
        ok = all(np.all(np.abs(np.asarray(out[n], np.float64) - keras[n]) <= tol[0] + tol[1] * np.abs(keras[n]))
                 for n in names)
        note = ""
        if "probabilities" in names:
            differ = np.flatnonzero(out["probabilities"].argmax(-1) != ref["probabilities"].argmax(-1))
            ok = ok and not len(differ)
            note = f"top class differs on examples {differ.tolist()}" if len(differ) else ""
        if exact:
            failures += not ok
        label = "LiteRT (float32)" if variant == "litert" else f"onnxruntime, {variant} variant"
        rows.append((name, label, vs_ort, vs_keras, ok if exact else None, statistics.median(ms), len(ms), note))
    return rows, failures


def run_node(model, x, names, repeats):
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "onnxruntime-node").is_dir():
        raise RuntimeError("needs node and onnxruntime-node (bash .ci/setup-web.sh)")
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(x, dict):  # a table: every input as JSON (null = NaN), dtype and dims
            inputs = Path(tmp) / "x.json"
            inputs.write_text(json.dumps({n: {"dtype": "string" if a.dtype == object else "float32", "dims": list(a.shape),
                                              "data": plain(a)}
                                          for n, a in x.items()}))
            dtype, dims = "table", "[]"
        else:
            inputs = Path(tmp) / "x.bin"
            inputs.write_bytes(np.ascontiguousarray(x).tobytes())
            dtype, dims = str(x.dtype), json.dumps(list(x.shape))
        done = subprocess.run([node, str(Path(__file__).with_name("cross_runtime_node.mjs")), str(model),
                               str(inputs), dtype, dims, str(repeats),
                               str(Path(tmp) / "out.json")], capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
        result = json.loads((Path(tmp) / "out.json").read_text())
    outputs = {n: np.asarray(result["outputs"][n], np.float32).reshape(batch_of(x), -1) for n in names}
    return outputs, result["ms"]


class Browser:
    """One headless chromium for all models; each model's page served on 127.0.0.1."""

    def __init__(self):
        from playwright.sync_api import sync_playwright

        if not Path(CHROMIUM).is_file():
            raise RuntimeError(f"needs chromium at {CHROMIUM} (bash .ci/setup-web.sh)")
        self._p = sync_playwright().start()
        self.browser = self._p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])

    def run(self, run_dir, x, names, repeats):
        from zoo.deploy.web import make_server, write_web

        write_web(run_dir, log=lambda m: None)
        if not (run_dir / "web" / "ort").is_dir():
            raise RuntimeError("no local onnxruntime-web (bash .ci/setup-web.sh): would need the network")
        server = make_server(run_dir, 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        page = self.browser.new_page()
        try:
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
            page.evaluate("window.zoo.ready")
            if isinstance(x, dict):  # a table: window.zoo.predict takes an object of columns (null = missing)
                make, values = "values", {n: plain(a) for n, a in x.items()}
            else:
                make = f"new {'Uint8Array' if x.dtype == np.uint8 else 'Float32Array'}(values)"
                values = x.ravel().tolist()
            result = page.evaluate(f"""async ([values, repeats]) => {{
                const x = {make};
                let out;
                for (let i = 0; i < 5; i++) out = await window.zoo.predict(x);
                const ms = [];  // blocks of 10 calls: performance.now() is coarse (100 us) in a page
                for (let i = 0; i < Math.ceil(repeats / 10); i++) {{
                    const t0 = performance.now();
                    for (let j = 0; j < 10; j++) out = await window.zoo.predict(x);
                    ms.push((performance.now() - t0) / 10);
                }}
                return {{out, ms}};
            }}""", [values, repeats])
        finally:
            page.close()
            server.shutdown()
            server.server_close()
        return {n: np.asarray(result["out"][n], np.float32) for n in names}, result["ms"]

    def close(self):
        self.browser.close()
        self._p.stop()


def train(spec_path: Path, out: Path, epochs: int, data_dir: str) -> Path | str:
    name = json.loads(spec_path.read_text())["name"]
    done = subprocess.run([sys.executable, "-m", "zoo", "run", str(spec_path), "--epochs", str(epochs), "--quiet",
                           "--out", str(out), "--data-dir", data_dir], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode:
        return (done.stderr.strip().splitlines() or ["failed"])[-1]
    return out / name


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, load average {load}"


def versions() -> str:
    import onnx
    import onnxruntime

    parts = [f"onnxruntime {onnxruntime.__version__}", f"onnx {onnx.__version__}"]
    try:
        import openvino

        parts.append(f"openvino {openvino.__version__.split('-')[0]}")
    except ImportError:
        pass
    pkg = ROOT / "node_modules"
    for name in ("onnxruntime-node", "onnxruntime-web"):
        with __import__("contextlib").suppress(OSError, ValueError):
            parts.append(f"{name} {json.loads((pkg / name / 'package.json').read_text())['version']}")
    node = shutil.which("node")
    if node:
        parts.append("node " + subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip())
    with __import__("contextlib").suppress(OSError, FileNotFoundError):
        parts.append(subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.split("built")[0].strip())
    return ", ".join(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--specs", nargs="*", type=Path, default=None, help="spec files [default: the catalog]")
    ap.add_argument("--runs", type=Path, default=None, help="reuse exported runs found here by name")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=100,
                    help="timed calls per runtime (onnx.reference: a tenth; browser: in blocks of 10)")
    ap.add_argument("--variants", action="store_true",
                    help="also make the ort, fp16 and int8 variants and run them in onnxruntime")
    ap.add_argument("--data-dir", default=os.environ.get("ZOO_DATA_DIR", str(ROOT.parent / "shared" / "datasets")))
    args = ap.parse_args(argv)
    specs = args.specs or sorted(p for p in (ROOT / "specs").glob("*.json") if p.name != "schema.json")

    print(f"# cross-runtime agreement, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"machine: {machine()}")
    print(f"versions: {versions()}\n")
    work = Path(tempfile.mkdtemp(prefix="zoo-cross-"))
    browser = None
    try:
        browser = Browser()
    except Exception as e:
        print(f"browser: not run ({e})")
    runners = {"onnxruntime": run_onnxruntime, "node": run_node,
               "browser": browser.run if browser else None, "openvino": run_openvino, "onnx.reference": run_reference}
    rows, failures, skipped, unsupported = [], 0, [], []
    try:
        for spec_path in specs:
            name = json.loads(spec_path.read_text())["name"]
            run = args.runs / name if args.runs and (args.runs / name / "model.onnx").is_file() else None
            if run is None:
                run = train(spec_path, work / "exports", args.epochs, args.data_dir)
                if isinstance(run, str):
                    skipped.append(f"{name}: {run}")
                    continue
            spec = json.loads((run / "spec.json").read_text())
            atol, rtol = spec["export"]["atol"], spec["export"]["rtol"]
            contract = Contract.from_onnx(run / "model.onnx")
            names = list(contract.outputs)
            x = read_inputs(run, contract)
            keras = {n: read_tensor(run / TEST_DATA_SET / f"output_{i}.pb") for i, n in enumerate(names)}
            results = {}
            for runtime in RUNTIMES:
                fn = runners[runtime]
                if fn is None:
                    continue
                try:
                    results[runtime] = fn(run / "model.onnx", x, names, args.repeats) if runtime != "browser" \
                        else fn(run, x, names, args.repeats)
                except Exception as e:
                    if contract.is_table:  # string tensors: say which runtime does not take them, and why
                        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
                        why = next((ln for ln in lines if "LabelEncoder" in ln or "string" in ln.lower()), lines[-1] if lines else "")
                        unsupported.append(f"{name}: {runtime} does not run it: {why[:200]}")
                        continue
                    print(f"{name}: {runtime} failed: {str(e)[:200]}")
                    failures += 1
            ref = results["onnxruntime"][0]
            for runtime, (out, ms) in results.items():
                vs_ort = max(float(np.abs(np.asarray(out[n], np.float64) - ref[n]).max()) for n in names)
                vs_keras = max(float(np.abs(np.asarray(out[n], np.float64) - keras[n]).max()) for n in names)
                ok = all(np.all(np.abs(np.asarray(out[n], np.float64) - keras[n]) <= atol + rtol * np.abs(keras[n]))
                         for n in names)
                if contract.is_classifier:
                    ok = ok and np.array_equal(np.asarray(out["probabilities"]).argmax(-1), ref["probabilities"].argmax(-1))
                failures += not ok
                rows.append((name, runtime, vs_ort, vs_keras, ok, statistics.median(ms), len(ms), ""))
            more, failed = variant_rows(name, run, x, names, ref, keras, (atol, rtol), args.repeats, args.variants)
            rows += more
            failures += failed
    finally:
        if browser:
            browser.close()
        shutil.rmtree(work, ignore_errors=True)

    print(f"batch: test_data_set_0 ({batch_of(x) if rows else 16} examples); tolerance: each spec's atol + rtol·|keras| "
          "(1e-4 + 1e-3·|keras| for the catalog), and the same argmax as onnxruntime\n")
    print("| model | runtime | max abs diff vs onnxruntime | max abs diff vs Keras | within tolerance "
          "| ms per batch (median) | × onnxruntime | timed samples | note |")
    print("|---|---|---:|---:|:-:|---:|---:|---:|---|")
    base = {name: ms for name, runtime, *_, ms, n, note in rows if runtime == "onnxruntime"}
    for name, runtime, vs_ort, vs_keras, ok, ms, n, note in rows:
        verdict = "not held (not float32)" if ok is None else "yes" if ok else "NO"
        print(f"| {name} | {runtime} | {vs_ort:.2e} | {vs_keras:.2e} | {verdict} | {ms:.3f} "
              f"| {ms / base[name]:.1f} | {n} | {note} |")
    for line in skipped:
        print(f"\nnot run: {line}")
    for line in unsupported:
        print(f"\ntable model not taken: {line}")
    print(f"\n{'all runtimes agree' if not failures else f'{failures} disagreement(s) or failure(s)'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
