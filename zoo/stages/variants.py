"""Export variants beside model.onnx: int8, fp16, ort, litert, litert-int8 (zoo.core.contract.VARIANT_FILES).

- int8: onnxruntime's static quantization (QDQ format, per-channel int8 weights, int8
  activations, MinMax calibration) after onnxruntime's recommended pre-processing
  (`quant_pre_process`: graph optimization and shape inference). It calibrates on
  CALIBRATION_EXAMPLES training examples (never test ones) drawn without replacement with
  the spec's `train.seed`. Where static quantization cannot run, dynamic quantization
  (int8 weights, activations quantized at run time) is the fallback, and the variant's
  metadata and verify.json say which ran.
- fp16: float16 weights and arithmetic, float32 inputs and outputs (onnxruntime's own
  converter, `onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)`).
- ort: ONNX Runtime's .ort format for its mobile and minimal builds
  (`onnxruntime.tools.convert_onnx_models_to_ort`, the fixed optimization style).
- litert: Keras's `model.export(format="litert")` of the trained model.keras, with zoo's
  outputs; litert-int8 the same with TFLite's full-integer quantization, calibrated on the
  same training examples (float32 inputs and outputs).

int8 variants refuse regression models: quantizing the predictions to 256 levels is not a
model anyone should ship silently. Every file is written atomically and recorded in
provenance.json as made from model.onnx (or, for LiteRT, from model.keras), so a retrain
removes it and a hand edit is named.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from zoo.core import litert, provenance
from zoo.core.contract import (
    INPUT_NAME,
    LITERT_VARIANTS,
    LOGITS,
    META,
    META_VARIANT,
    METRICS_FILE,
    MODEL_KERAS,
    MODEL_ONNX,
    PREDICTIONS,
    PROBABILITIES,
    QUANTIZED_VARIANTS,
    SPEC_FILE,
    VARIANT_FILES,
)
from zoo.core.errors import ExportError, UsageError
from zoo.spec import Spec
from zoo.spec.schema import Variant

CALIBRATION_EXAMPLES = 512  # training examples the int8 variants calibrate on (fewer if the set is smaller)
CALIBRATION_BATCH = 64


def resolve(spec: Spec, names=()) -> list[Variant]:
    """The spec's export.variants, then each of `names` (from --variant) not among them, with the default gate.

    UsageError (exit 2) for a name zoo does not know, or a variant that cannot apply to this model."""
    chosen = list(spec.export.variants)
    if names and spec.is_table:
        raise UsageError(f"--variant {names[0]}: {spec.name} is a table model, and variants are made for array "
                         f"models only, not yet for tables")
    for name in names:
        if name not in VARIANT_FILES:
            raise UsageError(f"--variant {name}: unknown variant; valid: {', '.join(VARIANT_FILES)}")
        if not spec.is_classifier and name in QUANTIZED_VARIANTS:
            raise UsageError(f"--variant {name}: cannot apply to {spec.name}, a {spec.model.kind} (regression) model: "
                             f"int8 quantizes its predictions to 256 levels; use fp16, ort or litert")
        if name not in [v.name for v in chosen]:
            chosen.append(Variant(name=name))
    return chosen


def calibration_examples(spec: Spec, x_train: np.ndarray) -> np.ndarray:
    """CALIBRATION_EXAMPLES training examples, drawn with the spec's train.seed."""
    rng = np.random.default_rng(spec.train.seed)
    idx = np.sort(rng.choice(len(x_train), min(CALIBRATION_EXAMPLES, len(x_train)), replace=False))
    return x_train[idx]


def make_variants(spec: Spec, run: Path, variants, *, model=None, x_train=None, log=print) -> dict:
    """Write each variant's file into the run (the caller holds its lock). Returns {name: how it was made}."""
    made = {}
    for v in variants:
        name = v.name
        needs_data = name in QUANTIZED_VARIANTS
        x_cal = calibration_examples(spec, x_train) if needs_data else None
        if name in LITERT_VARIANTS:
            info = _litert(spec, run, model, quantize=name == "litert-int8", x_cal=x_cal)
        else:
            info = {"int8": lambda: _int8(run, x_cal, spec), "fp16": lambda: _fp16(run),
                    "ort": lambda: _ort(run)}[name]()
        made[name] = info
        size = (run / VARIANT_FILES[name]).stat().st_size
        log(f"wrote {run}/{VARIANT_FILES[name]} ({size / 1024:.0f} KiB; {info['method']})")
    return made


def _with_info(proto, info: dict):
    """proto with zoo's metadata only (model.onnx's keys, then META_VARIANT: how it was made)."""
    props = {p.key: p.value for p in proto.metadata_props if p.key in META}
    props[META_VARIANT] = json.dumps(info)
    del proto.metadata_props[:]
    for k, v in props.items():
        proto.metadata_props.add(key=k, value=v)
    return proto


def _save_onnx(run: Path, name: str, proto, info: dict) -> None:
    import onnx

    with provenance.artefact(run, VARIANT_FILES[name], "export", inputs=[MODEL_ONNX]) as tmp:
        onnx.save_model(_with_info(proto, info), str(tmp))


def _source(run: Path):
    import onnx

    provenance.check_chain(run, MODEL_ONNX)
    return onnx.load(str(run / MODEL_ONNX))


class _Reader:
    """onnxruntime's CalibrationDataReader over the calibration examples, in batches."""

    def __init__(self, x):
        self.batches = iter([{INPUT_NAME: x[i:i + CALIBRATION_BATCH]} for i in range(0, len(x), CALIBRATION_BATCH)])

    def get_next(self):
        return next(self.batches, None)


def _int8(run: Path, x_cal: np.ndarray, spec: Spec) -> dict:
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_dynamic, quantize_static

    _source(run)
    info = {"name": "int8", "made_from": MODEL_ONNX, "format": "QDQ", "per_channel": True,
            "calibration": {"examples": int(len(x_cal)), "from": "training set", "seed": spec.train.seed,
                            "method": "MinMax"}}
    # the file's temporary twin exists from the start: an interrupted quantization leaves neither
    with provenance.artefact(run, VARIANT_FILES["int8"], "export", inputs=[MODEL_ONNX]) as target, \
            tempfile.TemporaryDirectory(prefix="zoo-int8-") as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        # no symbolic shape inference (it needs sympy): the only symbolic dim is the batch axis
        quant_pre_process(str(run / MODEL_ONNX), str(pre), skip_symbolic_shape=True)
        try:
            quantize_static(str(pre), str(out), _Reader(x_cal), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
            info["method"] = "static QDQ, per-channel int8"
        except Exception as e:  # static quantization cannot run here: dynamic is the documented fallback
            info["method"] = "dynamic (static failed: " + f"{type(e).__name__}: {str(e)[:120]})"
            info["format"] = "QOperator"
            quantize_dynamic(str(pre), str(out), per_channel=True, weight_type=QuantType.QInt8)
        onnx.save_model(_with_info(onnx.load(str(out)), info), str(target))
    return info


def _fp16(run: Path) -> dict:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = convert_float_to_float16(_source(run), keep_io_types=True)
    info = {"name": "fp16", "made_from": MODEL_ONNX, "method": "float16 weights, float32 inputs and outputs"}
    _save_onnx(run, "fp16", proto, info)
    return info


def _ort(run: Path) -> dict:
    import contextlib
    import io
    import logging

    import onnx
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    proto = _source(run)
    info = {"name": "ort", "made_from": MODEL_ONNX, "method": "ORT format, fixed optimizations"}
    proto.metadata_props.add(key=META_VARIANT, value=json.dumps(info))
    with tempfile.TemporaryDirectory(prefix="zoo-ort-") as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        src.mkdir()
        onnx.save_model(proto, str(src / MODEL_ONNX))
        logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per model
            convert_onnx_models_to_ort(src / MODEL_ONNX, output_dir=out, optimization_styles=[OptimizationStyle.Fixed])
        made = out / (Path(MODEL_ONNX).stem + ".ort")
        if not made.is_file():
            raise ExportError(f"onnxruntime's ORT converter wrote no {made.name} for {run}/{MODEL_ONNX}")
        with provenance.artefact(run, VARIANT_FILES["ort"], "export", inputs=[MODEL_ONNX]) as target:
            shutil.copyfile(made, target)
    return info


def name_of(quantize: bool) -> str:
    return "litert-int8" if quantize else "litert"


def _litert(spec: Spec, run: Path, model, *, quantize: bool, x_cal) -> dict:
    """model.keras -> .tflite with zoo's outputs (TensorFlow backend), zoo's metadata inside."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ExportError(f"{name_of(quantize)}: Keras exports LiteRT here on the TensorFlow backend only; "
                          f"rerun with KERAS_BACKEND=tensorflow")
    import tensorflow as tf

    from zoo.stages.build import load_model

    provenance.check_chain(run, METRICS_FILE)
    model = model or load_model(run / MODEL_KERAS)
    name = name_of(quantize)
    inp = keras.Input(shape=tuple(spec.model.input_shape), dtype=spec.model.input_dtype, name=INPUT_NAME)
    y = model(inp)
    outs = {LOGITS: y, PROBABILITIES: keras.layers.Softmax()(y)} if spec.is_classifier else {PREDICTIONS: y}
    wrapped = keras.Model(inp, outs)
    signature = [tf.TensorSpec([None, *spec.model.input_shape], spec.model.input_dtype, name=INPUT_NAME)]
    info = {"name": name, "made_from": MODEL_KERAS, "method": "Keras LiteRT export, float32"}
    options = {}
    if quantize:
        info["method"] = "Keras LiteRT export, TFLite int8 quantization (float fallback; float32 inputs and outputs)"
        info["calibration"] = {"examples": int(len(x_cal)), "from": "training set", "seed": spec.train.seed}
        options = {"optimizations": [tf.lite.Optimize.DEFAULT],
                   "representative_dataset": lambda: ([x_cal[i:i + 1]] for i in range(len(x_cal)))}
    # the same description as model.onnx's metadata (spec, classes, metrics, versions, what it was made from)
    meta = {p.key: p.value for p in _source(run).metadata_props if p.key in META}
    meta[META_VARIANT] = json.dumps(info)
    with tempfile.TemporaryDirectory(prefix="zoo-litert-") as tmp:
        path = Path(tmp) / "model.tflite"
        try:
            wrapped.export(str(path), format="litert", input_signature=signature, verbose=False, **options)
        except Exception as e:
            raise ExportError(f"Keras could not export {spec.name} to LiteRT: {type(e).__name__}: "
                              f"{str(e)[:200]}") from None
        data = litert.with_metadata(path.read_bytes(), meta)
    with provenance.artefact(run, VARIANT_FILES[name], "export", inputs=[SPEC_FILE, MODEL_KERAS, METRICS_FILE]) as tmp:
        Path(tmp).write_bytes(data)
    return info
