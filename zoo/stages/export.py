"""Keras -> ONNX with tf2onnx, then (by default) verification with onnxruntime.

Why `tf2onnx.convert.from_function` and not `from_keras`: `from_keras` is broken with
Keras 3 (KeyError on `keras_tensor_*`; tf2onnx issues #2329, #2348, #2448). Tracing
the model with `tf.function` and converting the concrete function works, and is what
Keras's own `model.export(format="onnx")` does. We trace our own function rather than
call `model.export` so the graph can have named outputs (`logits` and
`probabilities`, or `predictions`) and a batch axis named `batch`.

The graph takes the dataset's raw examples (uint8 pixels, say): preprocessing layers
are part of the model, so a client in another runtime needs no Python.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from zoo.core import backend, contract, files, provenance
from zoo.core.contract import (
    BATCH_DIM,
    HISTORY_FILE,
    INPUT_NAME,
    LOGITS,
    METRICS_FILE,
    MODEL_KERAS,
    MODEL_ONNX,
    PREDICTIONS,
    PROBABILITIES,
    SPEC_FILE,
)
from zoo.core.errors import ExportError, UsageError
from zoo.core.version import __version__
from zoo.spec import Spec, dumps, load_spec


def output_names(spec: Spec) -> list[str]:
    return contract.output_names(spec.is_classifier)


def _patch_tf2onnx():
    # tf2onnx 1.17 still uses np.object & co. removed in numpy 2; Keras ships the fix.
    try:
        from keras.src.export.tf2onnx_lib import patch_tf2onnx
    except ImportError:  # a future Keras without it: tf2onnx presumably fixed by then
        return
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        patch_tf2onnx()


def to_onnx(model, spec: Spec, opset: int, input_shape=None):
    """Convert a Keras model (TensorFlow backend) to an onnx.ModelProto.

    `input_shape`: a table's encoded width (its Keras core's input); its regression on
    log(y) answers exp(prediction), in y's own units."""
    import logging

    import keras
    import tensorflow as tf
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    _patch_tf2onnx()
    shape = list(input_shape or spec.model.input_shape)
    signature = [tf.TensorSpec([None, *shape], spec.model.input_dtype, name=INPUT_NAME)]

    @tf.function(input_signature=signature)
    def forward(x):
        y = model(x, training=False)
        if spec.is_classifier:
            return {LOGITS: y, PROBABILITIES: keras.ops.softmax(y, axis=-1)}
        if spec.data.target_transform == "log":
            y = keras.ops.exp(y)
        return {PREDICTIONS: y}

    try:
        proto, _ = tf2onnx.convert.from_function(forward, input_signature=signature, opset=opset)
    except Exception as e:
        raise ExportError(f"tf2onnx could not convert {spec.name} at opset {opset}: "
                          f"{type(e).__name__}: {str(e)[:200]}; try another --opset") from None
    _name_batch_axis(proto)
    contract.check_signature([i.name for i in proto.graph.input], [o.name for o in proto.graph.output],
                             f"the converted {spec.name}", spec.is_classifier, error=ExportError)
    return proto


def _name_batch_axis(proto):
    for value in [*proto.graph.input, *proto.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = BATCH_DIM


def metadata(spec: Spec, metrics: dict | None, class_names, made_from=None) -> dict[str, str]:
    lo, hi = (0, 255) if spec.model.input_dtype == "uint8" else ("-inf", "inf")
    return {
        contract.META_SPEC: dumps(spec),
        contract.META_CLASS_NAMES: json.dumps(class_names or []),
        contract.META_INPUT: json.dumps({"name": INPUT_NAME, "shape": [BATCH_DIM, *(spec.model.input_shape or ())],
                                 "dtype": spec.model.input_dtype, "range": [lo, hi],
                                 "preprocessing": "inside the graph; feed raw examples"}),
        contract.META_OUTPUTS: json.dumps(output_names(spec)),
        contract.META_METRICS: json.dumps((metrics or {}).get("test", {})),
        contract.META_VERSIONS: json.dumps({**backend.versions(), "zoo": __version__}),
        contract.META_PROVENANCE: json.dumps(made_from or {}),
    }


def write_onnx(proto, path: Path, meta: dict[str, str], run=None, inputs=(SPEC_FILE, MODEL_KERAS, METRICS_FILE)) -> None:
    """Attach metadata, check the model, and only then put it at `path` (in `run`: recorded
    as made from the run's spec, model.keras and metrics)."""
    import onnx

    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    proto.producer_name, proto.producer_version = "zoo", __version__
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:
        raise ExportError(f"the converted model fails onnx.checker: {str(e)[:300]}") from None
    if run is None:
        with files.atomic_path(path) as tmp:
            onnx.save_model(proto, str(tmp))
        return
    with provenance.artefact(run, Path(path).relative_to(run).as_posix(), "export",
                       inputs=list(inputs)) as tmp:
        onnx.save_model(proto, str(tmp))


def trained_spec(run: Path, spec: Spec | None = None) -> Spec:
    """The run's spec, after checking that model.keras is the model training produced
    and metrics.json describes it (provenance.json); else one error that names the file.

    `spec`: the one the caller already holds (the command that trained the run): checked
    against spec.json's record instead of read again."""
    if not run.is_dir():
        raise UsageError(f"{run}: no such run folder")
    history = run / HISTORY_FILE
    if not history.exists() or not files.read_json(history):
        raise UsageError(f"{run}: this run was never trained; run `zoo train {run}` first")
    if not (run / MODEL_KERAS).exists() or not (run / METRICS_FILE).exists():
        raise UsageError(f"{run}: training did not finish; run `zoo train {run} --resume` first")
    provenance.check(run, SPEC_FILE)
    if provenance.check(run, MODEL_KERAS)["stage"] != "train":
        raise UsageError(f"{run}/model.keras: is the untrained model `zoo build` wrote; run `zoo train {run}` first")
    provenance.check_chain(run, METRICS_FILE)  # made from this very model.keras
    if spec is not None and dumps(spec) == (run / SPEC_FILE).read_text(encoding="utf-8"):
        return spec
    return load_spec(run / SPEC_FILE)


def export_run(spec: Spec, run: Path, *, opset=None, metrics=None, log=print):
    """Convert the run's trained model.keras to run/model.onnx (TensorFlow backend). Returns the Keras model.

    `spec` is the run's own (trained_spec), `metrics` metrics.json's content where the caller
    has it; the caller holds the run's lock.
    """
    from zoo.stages.build import load_model

    opset = opset or spec.export.opset
    model = load_model(run / MODEL_KERAS)
    metrics = files.read_json(run / METRICS_FILE) if metrics is None else metrics
    if spec.is_table:
        return _export_table(spec, run, model, metrics, opset, log)
    proto = to_onnx(model, spec, opset)
    write_onnx(proto, run / MODEL_ONNX, metadata(spec, metrics, spec.model.class_names, provenance.made_from(run)), run)
    size = (run / MODEL_ONNX).stat().st_size
    log(f"wrote {run}/model.onnx ({size / 1024:.0f} KiB, opset {opset}, inputs {INPUT_NAME}"
        f"[{BATCH_DIM}, {', '.join(map(str, spec.model.input_shape))}] {spec.model.input_dtype}, "
        f"outputs {', '.join(output_names(spec))})")
    return model


def _export_table(spec: Spec, run: Path, model, metrics: dict, opset: int, log):
    """A table's model.onnx: the preprocessing graph (zoo.stages.tabular_onnx) in front of the
    converted Keras core, one input per column."""
    from zoo.core.contract import PREPROCESSING_FILE
    from zoo.stages import tabular, tabular_onnx

    prep = tabular.read_preprocessing(run)
    proto = tabular_onnx.attach(to_onnx(model, spec, opset, [prep.width]), prep)
    names = (SPEC_FILE, MODEL_KERAS, METRICS_FILE, PREPROCESSING_FILE)
    meta = metadata(spec, metrics, list(prep.class_names), provenance.made_from(run, names))
    columns = tabular_onnx.columns_metadata(prep)
    meta[contract.META_INPUT] = json.dumps({"columns": [c["input"] for c in columns], "shape": [BATCH_DIM, 1],
                                            "missing": "NaN for numbers, '' or 'NA' for categories",
                                            "preprocessing": "inside the graph; feed raw column values"})
    meta[contract.META_COLUMNS] = json.dumps(columns)
    write_onnx(proto, run / MODEL_ONNX, meta, run, inputs=names)
    size = (run / MODEL_ONNX).stat().st_size
    log(f"wrote {run}/model.onnx ({size / 1024:.0f} KiB, opset {opset}, {len(columns)} inputs, one per column: "
        + ", ".join(f"{c['input']} {c['dtype']}" for c in columns[:6]) + (", ..." if len(columns) > 6 else "")
        + f"; outputs {', '.join(output_names(spec))})")
    return model


# ----- under TensorFlow, from a process on another Keras backend ---------------------------------
#
# tf2onnx converts TensorFlow graphs only, and a process has one Keras backend: a model trained
# on jax or torch is exported (and verified) by a child process on TensorFlow, which works on
# the run under the lock its parent holds and hands it (runs.adopted).

def export_in_tensorflow(lock, *, opset=None, atol=None, rtol=None, data_dir=None, verify=True, variants=()) -> None:
    """Run this module's main() on TensorFlow for the locked run `lock.run`; ExportError if it fails."""
    cmd = [sys.executable, "-m", "zoo.stages.export", str(lock.run), "--lock-fd", str(lock.fd)]
    for flag, value in (("--opset", opset), ("--atol", atol), ("--rtol", rtol), ("--data-dir", data_dir)):
        if value is not None:
            cmd += [flag, str(value)]
    if not verify:
        cmd.append("--no-verify")
    for name in variants:
        cmd += ["--variant", name]
    done = subprocess.run(cmd, env={**os.environ, "KERAS_BACKEND": "tensorflow"}, pass_fds=(lock.fd,))
    if done.returncode:
        raise ExportError(f"exporting {lock.run} under the tensorflow backend failed (exit {done.returncode})")


def _parse(argv):
    import argparse

    p = argparse.ArgumentParser(prog="python -m zoo.stages.export",
                                description="Export (and verify) a trained run on TensorFlow, under its parent's lock.")
    p.add_argument("run", type=Path)
    p.add_argument("--lock-fd", type=int, required=True, help="the run's lock, held by the parent process")
    p.add_argument("--opset", type=int)
    p.add_argument("--atol", type=float)
    p.add_argument("--rtol", type=float)
    p.add_argument("--data-dir")
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("--variant", action="append", default=[])
    return p.parse_args(argv)


def main(argv=None) -> int:
    """The child's entry point: export_run, then verify_run, on TensorFlow. Returns the exit code."""
    from zoo.core import console, signals

    signals.install()
    return console.exit_code(_export_and_verify, _parse(argv))


def _export_and_verify(args) -> None:
    from zoo.core import backend, runs

    backend.import_keras("tensorflow")
    from zoo.stages.verify import verify_run

    with runs.adopted(args.run, args.lock_fd):
        spec = trained_spec(args.run)
        model = export_run(spec, args.run, opset=args.opset)
        if not args.no_verify:
            verify_run(spec, args.run, model=model, atol=args.atol, rtol=args.rtol, data_dir=args.data_dir)
        if spec.export.variants or args.variant:
            from zoo.stages.variants_verify import run_variants

            run_variants(spec, args.run, args.variant, model=model, data_dir=args.data_dir, verify=not args.no_verify,
                         atol=args.atol, rtol=args.rtol)


if __name__ == "__main__":
    from zoo.core.console import finish

    finish(main())  # os._exit, as the zoo command ends: no teardown for a late signal to land in
