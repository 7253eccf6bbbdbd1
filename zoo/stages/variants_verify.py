"""Each variant verified on the whole test set, held to its gate, and timed.

For every variant file (zoo.stages.variants) this computes, on the WHOLE test set:
- the largest difference of each output from Keras's;
- the argmax agreement with Keras (classifiers);
- the test metric (accuracy, or MSE for regression) and its drop from model.onnx's
  (float32) on the same examples: accuracy points lost, or the relative MSE increase;
- the latency of one call at batch 1 and at batch 256, the median of LATENCY_REPEATS calls
  on one thread, in the variant's own runtime (onnxruntime, or the LiteRT interpreter).

Which checks apply to which variant, and why:
- every variant: zoo's inputs and outputs (names, shapes), and the gate of its spec entry
  (`max_accuracy_drop`, default 0.01; regression `max_mse_increase`, default 0.05);
- ort and litert compute in float32 as model.onnx does, so they are also held to the spec's
  atol/rtol against Keras and must agree on every argmax;
- int8, litert-int8 and fp16 change the arithmetic on purpose (256 levels per tensor, or
  11-bit mantissas): an elementwise float32 tolerance would refuse every one of them, and a
  few argmaxes flip near decision boundaries, so their differences and agreement are
  reported, and the gate on the test metric decides.

A variant that fails is exit 6 (VerificationError) with its figures: the file is kept for
inspection, verify.json records it as failed, and no card, page or server uses it.
Each variant gets test_data_set_0.<variant>/: the inputs and its own outputs.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

from zoo.core import files, litert, provenance
from zoo.core.arrays import tensor_proto_bytes
from zoo.core.contract import (
    FLOAT32_VARIANTS,
    INPUT_NAME,
    LOGITS,
    META_PROVENANCE,
    META_VARIANT,
    MODEL_KERAS,
    MODEL_ONNX,
    PREDICTIONS,
    VARIANT_FILES,
    VERIFY_FILE,
    Contract,
    output_names,
    variant_test_data_name,
)
from zoo.core.errors import ProvenanceError, UsageError, VerificationError, ZooError
from zoo.spec import Spec

LATENCY_REPEATS = {1: 200, 256: 30}  # calls timed per batch size; the median is reported
TEST_DATA_EXAMPLES = 16
BATCH = 1000


def open_model(path: Path, threads: int | None = None):
    """(contract, run(names, x) -> arrays, runtime name) for a model.onnx, an .ort or a .tflite file."""
    path = Path(path)
    if path.suffix == ".tflite":
        runner = litert.Runner(path, threads=threads or 1)
        return litert.contract_of(path, runner), runner.run, "LiteRT"
    import onnxruntime as ort

    from zoo.core.runtime import providers, session

    if threads is None:
        sess = session(path)
    else:
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        sess = ort.InferenceSession(str(path), options, providers=providers())
    contract = Contract.from_session(sess, path)
    name = sess.get_inputs()[0].name
    return contract, lambda names, x: sess.run(list(names), {name: x}), "onnxruntime"


def machine() -> str:
    """This machine in words: CPU model, cores, architecture."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores, {platform.machine()}, {platform.system()}"


def latency_ms(run, names, x_test) -> dict:
    """Median milliseconds per call at batch 1 and 256 (examples repeated where the test set is smaller)."""
    out = {}
    for batch, repeats in LATENCY_REPEATS.items():
        x = np.resize(x_test, (batch, *x_test.shape[1:])).astype(x_test.dtype)
        run(names, x)  # warm-up: first-call allocation and resizing are not latency
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            run(names, x)
            times.append(time.perf_counter() - t)
        out[f"batch_{batch}"] = float(np.median(times) * 1000)
    return out


def outputs_of(run, names, x) -> dict[str, np.ndarray]:
    parts = [run(names, x[i:i + BATCH]) for i in range(0, len(x), BATCH)]
    return {n: np.concatenate([p[k] for p in parts]) for k, n in enumerate(names)}


def metric(spec: Spec, outputs: dict, y) -> float:
    """Accuracy (classifiers) or MSE (regression) on the whole test set."""
    if spec.is_classifier:
        return float((outputs[LOGITS].argmax(-1) == np.asarray(y).reshape(-1)).mean())
    pred = outputs[PREDICTIONS]
    return float(np.mean((pred.astype(np.float64) - np.asarray(y, np.float64).reshape(pred.shape)) ** 2))


def drop(spec: Spec, value: float, reference: float) -> float:
    """Accuracy lost (classifiers) or the relative MSE increase (regression); > 0 is worse."""
    if spec.is_classifier:
        return reference - value
    return (value - reference) / reference if reference > 0 else (0.0 if value <= reference else float("inf"))


def check_variant_provenance(run: Path, name: str) -> dict:
    """The variant's chain back to model.keras is intact, and its metadata says it was made from
    this model.keras. Returns the variant's metadata. ProvenanceError names the file."""
    filename = VARIANT_FILES[name]
    provenance.check_chain(run, filename)
    path = run / filename
    meta = (litert.contract_of(path) if path.suffix == ".tflite" else Contract.from_onnx(path)).metadata
    current = provenance.check(run, MODEL_KERAS)["sha256"]
    made_from = (meta.get(META_PROVENANCE) or {}).get(MODEL_KERAS)
    if made_from != current:
        raise ProvenanceError(f"{path}: was made from another model.keras (sha256 {str(made_from)[:12]}) than the "
                              f"one in {run} ({current[:12]}); make it again with `zoo export {run} --variant {name}`")
    return meta


def compare(spec: Spec, got: dict, want: dict, atol: float, rtol: float) -> dict:
    """Per-output differences from Keras, violations of atol/rtol, and the argmax agreement."""
    stats = {}
    for n, b in want.items():
        a = got[n]
        if a.shape != b.shape:
            stats[n] = {"shape_mismatch": f"variant {list(a.shape)} vs keras {list(b.shape)}"}
            continue
        diff = np.abs(a.astype(np.float64) - b)
        stats[n] = {"max_abs_diff": float(diff.max(initial=0)),
                    "max_rel_diff": float((diff / np.maximum(np.abs(b), 1e-12)).max(initial=0)),
                    "violations": int((diff > atol + rtol * np.abs(b)).sum())}
    report = {"outputs": stats}
    if spec.is_classifier and LOGITS in got and got[LOGITS].shape == want[LOGITS].shape:
        report["argmax_agreement"] = float((got[LOGITS].argmax(-1) == want[LOGITS].argmax(-1)).mean())
    return report


def judge(spec: Spec, variant, figures: dict, reference: float) -> list[str]:
    """What fails this variant's checks (see the module's docstring); [] when it passes."""
    name = variant.name
    key, gate = variant.gate(spec.is_classifier)
    figures["drop"] = drop(spec, figures["value"], reference)
    figures["gate"] = {key: gate}
    failures = [f"{n}: {s['shape_mismatch']}" for n, s in figures["outputs"].items() if "shape_mismatch" in s]
    if figures["drop"] > gate + 1e-12:
        failures.append(f"{figures['metric']} {figures['value']:.6g} vs float32 {reference:.6g}: "
                        f"{key.removeprefix('max_')} {figures['drop']:.4g} > {key} {gate:g}")
    figures["tolerance_checked"] = name in FLOAT32_VARIANTS
    if name in FLOAT32_VARIANTS:
        failures += [f"{n}: {s['violations']} values out of atol/rtol (max abs diff {s['max_abs_diff']:.3g})"
                     for n, s in figures["outputs"].items() if s.get("violations")]
        if figures.get("argmax_agreement", 1.0) < 1.0:
            failures.append(f"argmax agreement {figures['argmax_agreement']:.2%}")
    figures["status"] = "failed" if failures else "passed"
    figures["failures"] = failures
    return failures


def write_test_data(run: Path, name: str, x, outputs: dict) -> None:
    """test_data_set_0.<name>/input_0.pb and output_N.pb: the variant's own outputs."""
    prefix = variant_test_data_name(name, "input", 0).split("/")[0] + "/"
    provenance.invalidate(run, prefix=prefix)
    tensors = [(variant_test_data_name(name, "input", 0), x, INPUT_NAME)] + [
        (variant_test_data_name(name, "output", i), outputs[n][:len(x)], n) for i, n in enumerate(outputs)]
    for filename, array, tensor in tensors:
        with provenance.artefact(run, filename, "verify", inputs=[VARIANT_FILES[name]]) as tmp:
            tmp.write_bytes(tensor_proto_bytes(array, tensor))


def verify_variants(spec: Spec, run: Path, variants, *, model, dataset, log=print, atol=None, rtol=None) -> dict:
    """Verify each variant (the caller holds the run's lock, and verify_run has just written
    verify.json for model.onnx); add the figures to verify.json. Raises VerificationError
    naming every variant that failed, after writing them all."""
    from zoo.stages.verify import keras_outputs

    run = Path(run)
    atol = spec.export.atol if atol is None else atol
    rtol = spec.export.rtol if rtol is None else rtol
    x, y = dataset.x_test, dataset.y_test
    names = output_names(spec.is_classifier)
    want = {n: np.concatenate([keras_outputs(model, spec, x[i:i + BATCH])[n] for i in range(0, len(x), BATCH)])
            for n in names}
    _, run_float, _ = open_model(run / MODEL_ONNX, threads=1)
    reference = metric(spec, outputs_of(run_float, names, x), y)
    table = {"float32": {"file": MODEL_ONNX, "runtime": "onnxruntime", "metric": _metric_name(spec),
                         "value": reference, "size_bytes": (run / MODEL_ONNX).stat().st_size,
                         "latency_ms": latency_ms(run_float, names, x)}}
    failed = []
    for variant in variants:
        figures = _one(spec, run, variant, names, x, y, want, reference, atol, rtol)
        table[variant.name] = figures
        _log_variant(log, variant.name, figures)
        if figures["status"] == "failed":
            failed.append(f"{variant.name} ({'; '.join(figures['failures'])})")
    report = files.read_json(run / VERIFY_FILE)
    report.update({"variants": table, "variants_examples": int(len(x)), "machine": machine(),
                   "latency": "the median of " + " and ".join(f"{n} calls at batch {b}" for b, n in LATENCY_REPEATS.items())
                   + ", on one thread"})
    provenance.save_json(run, VERIFY_FILE, report, "verify",
                         inputs=[MODEL_ONNX, MODEL_KERAS, *(VARIANT_FILES[v.name] for v in variants)])
    if failed:
        raise VerificationError(f"{run}: variant(s) failed their gate on {len(x):,} test examples, kept for "
                                f"inspection but not used (see {run}/{VERIFY_FILE}): " + "; ".join(failed))
    return report


def _metric_name(spec: Spec) -> str:
    return "accuracy" if spec.is_classifier else "mse"


def _one(spec, run, variant, names, x, y, want, reference, atol, rtol) -> dict:
    name = variant.name
    path = run / VARIANT_FILES[name]
    if not path.is_file():
        raise UsageError(f"{path}: no such variant file; run `zoo export {run} --variant {name}`")
    meta = check_variant_provenance(run, name)
    contract, run_variant, runtime = open_model(path, threads=1)
    got = outputs_of(run_variant, names, x) if list(contract.outputs) == names else {}
    if not got:
        raise VerificationError(f"{path}: outputs {list(contract.outputs)} are not {names}")
    figures = {"file": VARIANT_FILES[name], "runtime": runtime, "made": meta.get(META_VARIANT) or {},
               "size_bytes": path.stat().st_size, "metric": _metric_name(spec), "value": metric(spec, got, y),
               "float32_value": reference, **compare(spec, got, want, atol, rtol)}
    judge(spec, variant, figures, reference)
    figures["latency_ms"] = latency_ms(run_variant, names, x)
    write_test_data(run, name, x[:TEST_DATA_EXAMPLES], got)
    return figures


def _log_variant(log, name, f) -> None:
    agree = f" argmax agreement {f['argmax_agreement']:.2%}," if "argmax_agreement" in f else ""
    diff = max((s.get("max_abs_diff", 0.0) for s in f["outputs"].values()), default=0.0)
    log(f"  {name:<12} {f['size_bytes'] / 1024:>7.0f} KiB  {f['metric']} {f['value']:.4f} (drop {f['drop']:+.4f}),"
        f"{agree} max abs diff {diff:.3g}, {f['latency_ms']['batch_1']:.3f} / {f['latency_ms']['batch_256']:.3f} ms "
        f"at batch 1 / 256: {f['status']}" + (f" ({'; '.join(f['failures'])})" if f["failures"] else ""))


def verified(run: Path, name: str) -> Path:
    """The path of a variant that verify.json records as passed and whose file is still that one;
    UsageError (exit 2) or ProvenanceError (exit 8) otherwise. What cards, pages and servers use."""
    run = Path(run)
    if name not in VARIANT_FILES:
        raise UsageError(f"--variant {name}: unknown variant; valid: {', '.join(VARIANT_FILES)}")
    path = run / VARIANT_FILES[name]
    if not path.exists():
        raise UsageError(f"{path}: no such variant; run `zoo export {run} --variant {name}` first")
    provenance.check_chain(run, VARIANT_FILES[name])
    report = files.read_json(run / VERIFY_FILE) if (run / VERIFY_FILE).is_file() else {}
    status = (report.get("variants") or {}).get(name, {}).get("status")
    if status != "passed":
        raise UsageError(f"{path}: not verified ({'it failed its gate' if status else 'never verified'}; see "
                         f"{run}/{VERIFY_FILE}); run `zoo export {run} --variant {name}`")
    provenance.check_chain(run, VERIFY_FILE)
    return path


def recorded(run: Path) -> list[str]:
    """The variants whose files the run's provenance records."""
    entries = provenance.manifest(run)
    return [n for n, f in VARIANT_FILES.items() if f in entries]


def run_variants(spec: Spec, run: Path, names=(), *, model=None, data_dir=None, verify=True, atol=None, rtol=None,
                 log=print, remake=True) -> dict | None:
    """Make the spec's variants and `names` (--variant), then verify model.onnx (unless verify.json
    is already its current record) and every one of them. The caller holds the run's lock.
    Returns verify.json's content, or None when there was nothing to do or verify."""
    from zoo.stages import data as data_mod
    from zoo.stages.build import load_model
    from zoo.stages.variants import make_variants, resolve

    chosen = resolve(spec, names)
    if not chosen:
        return None
    model = model or load_model(run / MODEL_KERAS)
    dataset = data_mod.load_dataset(spec, data_dir, run=run)
    if remake:
        make_variants(spec, run, chosen, model=model, x_train=dataset.x_train, log=log)
    else:  # verify only those made before (a variant the spec names but never made is not verified)
        chosen = [v for v in chosen if v.name in recorded(run)]
    if not verify:
        return None
    return verify_all(spec, run, chosen, model=model, dataset=dataset, atol=atol, rtol=rtol, log=log,
                      force=not remake)


def verify_all(spec: Spec, run: Path, variants, *, model, dataset, atol=None, rtol=None, log=print,
               force=False) -> dict:
    """verify_run for model.onnx unless verify.json is already its current record (or `force`: it
    was just written), then the variants."""
    from zoo.stages.verify import verify_run

    if force:
        return verify_variants(spec, run, variants, model=model, dataset=dataset, log=log, atol=atol, rtol=rtol)
    try:
        provenance.check_chain(run, VERIFY_FILE)
        current = files.read_json(run / VERIFY_FILE).get("status") == "passed"
    except ZooError:
        current = False
    if not current:
        verify_run(spec, run, model=model, atol=atol, rtol=rtol, log=log)
    log(f"verify {len(variants)} variant(s) on all {len(dataset.x_test):,} test examples ({machine()}):")
    return verify_variants(spec, run, variants, model=model, dataset=dataset, log=log, atol=atol, rtol=rtol)
