"""Does the ONNX model compute what the Keras model computes? Fail loudly if not.

The same inputs go to Keras and to an onnxruntime session: up to 2,000 real test
examples in batches of 1,000, plus edge inputs (all zeros, all maximum values, batch
sizes 1, 3 and 7). For each output we compare names, shapes and values, elementwise
as numpy.allclose does, |onnx - keras| <= atol + rtol * |keras|, and for classifiers
the argmax, which must agree on every example.

Defaults (atol 1e-4, rtol 1e-3, from the spec's `export`): float32 carries about 7
significant digits and onnxruntime sums a 784-term dot product in another order than
TensorFlow/oneDNN, which moves logits of magnitude ~10 by ~1e-6; the tolerances leave
two orders of magnitude of headroom and still catch any real error (a changed weight
moves outputs by ~1e-2 or more).

Writes `verify.json` with every figure, and `test_data_set_0/` (ONNX Model Zoo
convention: input_0.pb, output_0.pb, ...) so other runtimes can check the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.core import backend, files, provenance
from zoo.core.arrays import tensor_proto_bytes
from zoo.core.contract import (
    INPUT_NAME,
    LOGITS,
    METRICS_FILE,
    MODEL_KERAS,
    MODEL_ONNX,
    PREDICTIONS,
    PROBABILITIES,
    TEST_DATA_SET,
    VERIFY_FILE,
    check_signature,
    output_names,
    test_data_name,
)
from zoo.core.errors import UsageError, VerificationError
from zoo.core.runtime import session
from zoo.spec import Spec

MAX_EXAMPLES = 2000
TEST_DATA_EXAMPLES = 16


def edge_inputs(spec: Spec, x_test) -> dict[str, np.ndarray]:
    shape, dtype = spec.model.input_shape, spec.model.input_dtype
    top = 255 if dtype == "uint8" else float(np.max(x_test))
    return {
        "zeros": np.zeros((1, *shape), dtype),
        "max": np.full((2, *shape), top, dtype),
        "batch_1": x_test[:1],
        "batch_3": x_test[:3],
        "batch_7": x_test[-7:],
    }


def keras_outputs(model, spec: Spec, x) -> dict[str, np.ndarray]:
    import keras

    y = keras.ops.convert_to_numpy(model(x, training=False))
    if not spec.is_classifier:
        return {PREDICTIONS: np.exp(y) if spec.data.target_transform == "log" else y}
    return {LOGITS: y, PROBABILITIES: keras.ops.convert_to_numpy(keras.ops.softmax(y, axis=-1))}


def compare(sess, model, spec, batches, atol, rtol) -> dict:
    """Run every batch through both; return the per-output figures."""
    names = [o.name for o in sess.get_outputs()]
    inputs = [INPUT_NAME] if spec.is_table else [i.name for i in sess.get_inputs()]  # a table's: one per column
    check_signature(inputs, names, "the ONNX graph", spec.is_classifier, error=VerificationError)
    stats = {n: {"max_abs_diff": 0.0, "max_rel_diff": 0.0, "violations": 0, "elements": 0} for n in names}
    agree = total = 0
    shapes_ok = True
    for x in batches:
        feeds, x = x if isinstance(x, tuple) else ({INPUT_NAME: x}, x)  # a table's: (raw columns, encoded)
        got = dict(zip(names, sess.run(names, feeds)))
        want = keras_outputs(model, spec, x)
        for n in names:
            a, b = got[n], want[n]
            if a.shape != b.shape:
                shapes_ok = False
                stats[n]["shape_mismatch"] = f"onnx {list(a.shape)} vs keras {list(b.shape)}"
                continue
            diff = np.abs(a.astype(np.float64) - b)
            s = stats[n]
            s["max_abs_diff"] = max(s["max_abs_diff"], float(diff.max(initial=0)))
            s["max_rel_diff"] = max(s["max_rel_diff"], float((diff / np.maximum(np.abs(b), 1e-12)).max(initial=0)))
            s["violations"] += int((diff > atol + rtol * np.abs(b)).sum())
            s["elements"] += int(diff.size)
        if spec.is_classifier and got[LOGITS].shape == want[LOGITS].shape:
            agree += int((got[LOGITS].argmax(-1) == want[LOGITS].argmax(-1)).sum())
            total += len(x)
    report = {"outputs": stats, "shapes_match": shapes_ok}
    if spec.is_classifier:
        report["argmax_agreement"] = agree / total if total else None
    report["passed"] = shapes_ok and all(s["violations"] == 0 for s in stats.values()) and (
        not spec.is_classifier or agree == total)
    return report


def write_test_data(run: Path, model, spec: Spec, x, made_from) -> None:
    """test_data_set_0/input_0.pb and output_N.pb: TensorProtos any runtime can read."""
    provenance.invalidate(run, prefix=TEST_DATA_SET + "/")
    files.remove(run / TEST_DATA_SET)  # files of an older zoo, unrecorded
    feeds, x = x if isinstance(x, tuple) else ({INPUT_NAME: x}, x)  # a table's: one input_N.pb per column
    outputs = keras_outputs(model, spec, x)
    tensors = [(test_data_name("input", i), a, n) for i, (n, a) in enumerate(feeds.items())] + [
        (test_data_name("output", i), outputs[n], n) for i, n in enumerate(output_names(spec.is_classifier))]
    for filename, array, name in tensors:
        with provenance.artefact(run, filename, "verify", **made_from) as tmp:
            tmp.write_bytes(tensor_proto_bytes(array, name))


def table_batches(run: Path, test) -> tuple[list, dict]:
    """A table's batches for compare(): (raw column feeds, zoo's own encoding) for the test
    rows (TEST_DATA_EXAMPLES first, for test_data_set_0), and the edge rows' by name."""
    from zoo.stages import tabular

    prep = tabular.read_preprocessing(run)
    pair = lambda t: (prep.feeds(t), prep.encode(t))  # noqa: E731
    n = TEST_DATA_EXAMPLES
    batches = [pair(test.take(slice(0, n)))] + [pair(test.take(slice(i, i + 1000))) for i in range(n, len(test), 1000)]
    edges = {name: pair(t) for name, t in tabular.edge_rows(prep, test).items()}
    return batches, edges


def check_provenance(run: Path, onnx_path: Path) -> dict:
    """The chain model.keras -> model.onnx is intact, and the ONNX file says it was made
    from this model.keras and these metrics. Returns provenance.artefact()'s inputs for what
    verification writes. Raises ProvenanceError naming the file that breaks the chain."""
    from zoo.core.contract import META_METRICS, META_PROVENANCE, Contract
    from zoo.core.errors import ProvenanceError

    own = onnx_path.resolve() == (run / MODEL_ONNX).resolve()
    if own:
        provenance.check_chain(run, MODEL_ONNX)
    meta = Contract.from_onnx(onnx_path).metadata
    model_entry = provenance.check(run, MODEL_KERAS)
    if model_entry["stage"] != "train":
        raise UsageError(f"{run}/model.keras: is the untrained model `zoo build` wrote; run `zoo train {run}` first")
    made_from = (meta.get(META_PROVENANCE) or {}).get(MODEL_KERAS)
    current = model_entry["sha256"]
    if made_from != current:
        raise ProvenanceError(f"{onnx_path}: was exported from another model.keras (sha256 {str(made_from)[:12]}) "
                              f"than the one in {run} ({current[:12]}); export it again with `zoo export {run}`")
    if own and (run / METRICS_FILE).exists():
        recorded = files.read_json(run / METRICS_FILE).get("test", {})
        if meta.get(META_METRICS) != recorded:
            raise ProvenanceError(f"{onnx_path}: its metadata metrics {meta.get(META_METRICS)} are not "
                                  f"metrics.json's {recorded}; export it again with `zoo export {run}`")
    if own:
        return {"inputs": [MODEL_ONNX, MODEL_KERAS]}
    return {"inputs": [MODEL_KERAS], "extra": {"@onnx": files.digest(onnx_path)}}


def verify_run(spec: Spec, run: Path, *, model=None, onnx_path=None, atol=None, rtol=None, data_dir=None,
               log=print) -> dict:
    """Verify run/model.onnx (or `onnx_path`) against run/model.keras (or `model`, already loaded).

    `spec` is the run's own. Raises VerificationError on mismatch, ProvenanceError when the
    ONNX file was not made from this run's model.keras. The caller holds the run's lock."""
    from zoo.stages import data as data_mod
    from zoo.stages.build import load_model

    run = Path(run)
    onnx_path = Path(onnx_path or run / MODEL_ONNX)
    made_from = check_provenance(run, onnx_path)
    sess = session(onnx_path)
    model = model or load_model(run / MODEL_KERAS)
    atol = spec.export.atol if atol is None else atol
    rtol = spec.export.rtol if rtol is None else rtol

    dataset = data_mod.load_dataset(spec, data_dir, run=run)
    x_test = dataset.x_test[:MAX_EXAMPLES]
    batches = [x_test[i:i + 1000] for i in range(0, len(x_test), 1000)]
    if spec.is_table:
        batches, edges = table_batches(run, dataset.table.test.take(slice(0, MAX_EXAMPLES)))
    else:
        edges = edge_inputs(spec, x_test)
    report = compare(sess, model, spec, batches + list(edges.values()), atol, rtol)
    report = {
        "status": "passed" if report["passed"] else "failed",
        "model": str(onnx_path),
        "examples": int(len(x_test)),
        "edge_inputs": {k: list((v[1] if isinstance(v, tuple) else v).shape) for k, v in edges.items()},
        "atol": atol, "rtol": rtol,
        **report,
        "providers": sess.get_providers(),
        "versions": backend.versions(),
    }
    provenance.save_json(run, VERIFY_FILE, report, "verify", **made_from)
    write_test_data(run, model, spec, batches[0] if spec.is_table else x_test[:TEST_DATA_EXAMPLES], made_from)

    log(f"verify {onnx_path} on {report['examples']:,} test examples + {len(edges)} edge batches "
        f"({report['providers'][0]}; atol {atol:g}, rtol {rtol:g})")
    log(f"  {'output':<14} {'max abs diff':>13} {'max rel diff':>13} {'out of tol':>11}")
    for name, s in report["outputs"].items():
        log(f"  {name:<14} {s['max_abs_diff']:>13.3e} {s['max_rel_diff']:>13.3e} {s['violations']:>11,}")
    if spec.is_classifier:
        log(f"  argmax agreement: {report['argmax_agreement']:.2%}")
    if not report["passed"]:
        raise VerificationError(f"{onnx_path} does not match the Keras model (see {run}/verify.json): "
                                + "; ".join(f"{n}: {s['violations']} values out of tolerance, max abs diff {s['max_abs_diff']:.3g}"
                                            for n, s in report["outputs"].items() if s["violations"])
                                + ("" if report.get("argmax_agreement") in (None, 1.0) else
                                   f"; argmax agreement {report['argmax_agreement']:.2%}"))
    log(f"  passed; wrote {run}/verify.json and test_data_set_0/")
    return report
