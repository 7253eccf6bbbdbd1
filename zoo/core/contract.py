"""The exported artefact's contract, in one place: what model.onnx takes and gives.

Every consumer reads it from here: export writes it, verify checks it, card documents
it, predict, the Triton writer, the server and the web page rely on it. Nothing else
spells an input name, an output name, a dtype or a metadata key.

The graph has one input, `input`, of shape [batch, *input_shape] in the dataset's raw
dtype (uint8 pixels, say: preprocessing is inside the graph), and the outputs `logits`
and `probabilities` (classifiers) or `predictions` (regression), batch axis first.
Model metadata (ONNX `metadata_props`) carries the keys in META, each a JSON value.
"""

from __future__ import annotations

import json
import math
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from zoo.core.errors import UsageError

INPUT_NAME = "input"
BATCH_DIM = "batch"
LOGITS, PROBABILITIES, PREDICTIONS = "logits", "probabilities", "predictions"
CLASSIFIER_OUTPUTS = (LOGITS, PROBABILITIES)
REGRESSION_OUTPUTS = (PREDICTIONS,)
LABELED_OUTPUT = PROBABILITIES  # the output whose columns are the classes (Triton's label_filename)
# A table's graph instead has one input per feature column, named after it (made safe:
# zoo.stages.tabular.safe_names), each [batch, 1]: `string` for a category, float32 for a
# number with NaN meaning missing. Those names never take these:
RESERVED_NAMES = (INPUT_NAME, *CLASSIFIER_OUTPUTS, *REGRESSION_OUTPUTS)
STRING = "string"  # a table's categorical input's dtype (ONNX tensor(string), Triton TYPE_STRING)

# the files of a run folder, <out>/<name>/
SPEC_FILE = "spec.json"  # the resolved spec
MODEL_KERAS = "model.keras"  # the built, then trained, Keras model
HISTORY_FILE = "history.json"  # one record per completed epoch
METRICS_FILE = "metrics.json"  # the trained model's test metrics
CURVES_PNG, PREDICTIONS_PNG = "curves.png", "predictions.png"
CHECKPOINTS = "checkpoints"  # checkpoints/epoch-NNNN.keras
MODEL_ONNX = "model.onnx"
PREPROCESSING_FILE = "preprocessing.json"  # a table's fitted preprocessing: vocabularies, means, stds
CV_FILE = "cv.json"  # train.folds' cross-validation figures, recorded once the folds finish (kept by --resume)
CARD_FILE = "card.md"
VERIFY_FILE = "verify.json"
TEST_DATA_SET = "test_data_set_0"  # beside model.onnx: input_0.pb, output_0.pb, ... (ONNX Model Zoo convention)
MANIFEST = "provenance.json"  # zoo.core.provenance's record of every artefact
REPLACED_DIR = ".replaced"  # a fresh training's earlier artefacts, until it commits (zoo.core.aside)
WEB_DIR, TRITON_DIR = "web", "triton"

# export variants (zoo.stages.variants): files beside model.onnx, each with its own test data.
# int8: onnxruntime static QDQ quantization; fp16: float16 weights, float32 inputs and outputs;
# ort: ONNX Runtime's .ort format (mobile and minimal builds); litert: Keras's LiteRT (.tflite)
# export, and litert-int8 the same with TFLite's full-integer quantization (float32 inputs and outputs).
VARIANT_FILES = {"int8": "model.int8.onnx", "fp16": "model.fp16.onnx", "ort": "model.ort",
                 "litert": "model.tflite", "litert-int8": "model.int8.tflite"}
ONNX_VARIANTS = ("int8", "fp16")  # ONNX files: onnxruntime (any build), onnxruntime-web, Triton can load them
LITERT_VARIANTS = ("litert", "litert-int8")  # run by the LiteRT interpreter (ai-edge-litert)
QUANTIZED_VARIANTS = ("int8", "litert-int8")  # 256 levels per tensor: classifiers only
FLOAT32_VARIANTS = ("ort", "litert")  # float32 arithmetic: held to model.onnx's tolerances too


def checkpoint_name(epoch: int) -> str:
    """The run-relative name of the checkpoint after `epoch`."""
    return f"{CHECKPOINTS}/epoch-{epoch:04d}.keras"


def test_data_name(kind: str, index: int) -> str:
    """The run-relative name of test_data_set_0's `kind` ("input" or "output") number `index`."""
    return f"{TEST_DATA_SET}/{kind}_{index}.pb"


def variant_test_data_name(variant: str, kind: str, index: int) -> str:
    """test_data_set_0.<variant>/<kind>_<index>.pb: the inputs and the variant's own outputs."""
    return f"{TEST_DATA_SET}.{variant}/{kind}_{index}.pb"


# metadata_props keys; every value is JSON
META_SPEC = "zoo.spec"
META_CLASS_NAMES = "zoo.class_names"
META_INPUT = "zoo.input"
META_OUTPUTS = "zoo.outputs"
META_METRICS = "zoo.metrics"
META_VERSIONS = "zoo.versions"
META_PROVENANCE = "zoo.provenance"
META_VARIANT = "zoo.variant"  # variants only: {"name", "made_from", ...how it was made}
META_COLUMNS = "zoo.columns"  # tables: [{name, input, kind, dtype, categories?}, ...], one per graph input
META = (META_SPEC, META_CLASS_NAMES, META_INPUT, META_OUTPUTS, META_METRICS, META_VERSIONS, META_PROVENANCE,
        META_VARIANT, META_COLUMNS)

# one row per input dtype zoo writes: numpy name, ONNX type string (onnxruntime), Triton, JS typed array
DTYPES = {
    "uint8": {"onnx": "tensor(uint8)", "triton": "TYPE_UINT8", "oip": "UINT8", "js": "Uint8Array",
              "c": "uint8_t", "range": (0, 255)},
    "float32": {"onnx": "tensor(float)", "triton": "TYPE_FP32", "oip": "FP32", "js": "Float32Array",
                "c": "float", "range": (float("-inf"), float("inf"))},
}
# a table's text inputs: not an example dtype (no range, no typed array)
STRING_DTYPE = {"onnx": "tensor(string)", "triton": "TYPE_STRING", "oip": "BYTES", "js": "string", "c": "std::string"}
OUTPUT_DTYPE = "float32"


def output_names(is_classifier: bool) -> list[str]:
    return list(CLASSIFIER_OUTPUTS if is_classifier else REGRESSION_OUTPUTS)


@dataclass(frozen=True)
class Contract:
    """One exported model's interface: all a client in any runtime needs."""

    name: str
    input_shape: tuple[int, ...]  # one example, no batch axis
    input_dtype: str  # a key of DTYPES
    outputs: tuple[str, ...]
    output_widths: tuple[int, ...]  # each output's size per example
    class_names: tuple[str, ...] = ()
    metadata: dict = field(default_factory=dict, compare=False)
    output_shapes: tuple[tuple[int, ...], ...] = ()  # each output's dims without the batch axis; () = (width,) each
    # tables: ((input name, dtype "string" or "float32", column name), ...), one per graph input; () otherwise
    columns: tuple[tuple[str, str, str], ...] = ()

    @property
    def is_table(self) -> bool:
        return bool(self.columns)

    def output_dims(self, name: str) -> tuple[int, ...]:
        """An output's dims without the batch axis (Triton's `dims`)."""
        i = self.outputs.index(name)
        return self.output_shapes[i] if self.output_shapes else (self.output_widths[i],)

    def triton_dtype(self, name: str) -> str:
        """Triton's TYPE_* name of a tensor of this interface."""
        column = self.column_dtype(name)
        if column is not None:
            return (STRING_DTYPE if column == STRING else DTYPES[column])["triton"]
        return DTYPES[self.input_dtype if name == INPUT_NAME else OUTPUT_DTYPE]["triton"]

    def column_dtype(self, name: str) -> str | None:
        """A table's input's dtype ("string" or "float32"); None for any other tensor."""
        return next((d for n, d, _ in self.columns if n == name), None)

    def input_dims(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, dims without the batch axis) of every graph input: one, or a table's one per column."""
        if self.is_table:
            return [(n, (1,)) for n, _, _ in self.columns]
        return [(INPUT_NAME, self.input_shape)]

    def oip_dtype(self, name: str) -> str:
        """The Open Inference Protocol's datatype name (FP32, UINT8, a table's text: BYTES) of a tensor of this interface."""
        column = self.column_dtype(name)
        if column is not None:
            return (STRING_DTYPE if column == STRING else DTYPES[column])["oip"]
        return DTYPES[self.input_dtype if name == INPUT_NAME else OUTPUT_DTYPE]["oip"]

    @property
    def is_classifier(self) -> bool:
        return LABELED_OUTPUT in self.outputs

    @property
    def example_size(self) -> int:
        return math.prod(self.input_shape)

    def labels(self) -> list[str]:
        """Class names for the labeled output; indices where the spec named none."""
        width = self.output_widths[self.outputs.index(LABELED_OUTPUT)] if self.is_classifier else 0
        return list(self.class_names) or [str(i) for i in range(width)]

    def to_json(self) -> dict:
        """The contract as plain JSON, for clients that cannot read ONNX metadata (the web page)."""
        return {"name": self.name, "input": {"name": INPUT_NAME, "shape": list(self.input_shape),
                                             "dtype": self.input_dtype, "js": DTYPES[self.input_dtype]["js"]},
                "outputs": list(self.outputs), "output_widths": list(self.output_widths),
                "is_classifier": self.is_classifier, "class_names": self.labels() if self.is_classifier else []}

    @classmethod
    def from_spec(cls, spec) -> "Contract":
        outs = output_names(spec.is_classifier)
        return cls(name=spec.name, input_shape=tuple(spec.model.input_shape), input_dtype=spec.model.input_dtype,
                   outputs=tuple(outs), output_widths=tuple(spec.num_outputs for _ in outs),
                   class_names=tuple(spec.model.class_names or ()))

    @classmethod
    def from_onnx(cls, path) -> "Contract":
        """Read and check the contract of an ONNX file; UsageError naming the file if it breaks it."""
        from zoo.core.runtime import session

        return cls.from_session(session(Path(path)), path)

    @classmethod
    def from_session(cls, sess, source="<model>") -> "Contract":
        """The contract of a loaded onnxruntime session (onnxruntime only: no onnx, no TensorFlow)."""
        inputs = sess.get_inputs()
        outputs = tuple(o.name for o in sess.get_outputs())
        props = sess.get_modelmeta().custom_metadata_map  # a table says so (zoo.columns), or takes strings
        if META_COLUMNS in props or any(i.type == STRING_DTYPE["onnx"] for i in inputs):
            return cls._table_from_session(sess, inputs, outputs, source)
        check_signature([i.name for i in inputs], outputs, source, allow_other_input_name=True)
        inp = inputs[0]
        by_type = {v["onnx"]: k for k, v in DTYPES.items()}
        if inp.type not in by_type:
            raise UsageError(f"{source}: input {inp.name!r} is {inp.type}; zoo models take uint8 or float32")
        shapes = tuple(_dims(o.name, o.shape, source) for o in sess.get_outputs())
        widths = tuple(math.prod(d) for d in shapes)
        meta = read_metadata(sess.get_modelmeta().custom_metadata_map, source)
        names = read_class_names(meta, source)
        spec = meta.get(META_SPEC) if isinstance(meta.get(META_SPEC), dict) else {}
        return cls(name=str(spec.get("name") or Path(str(source)).parent.name or "model"),
                   input_shape=_dims(inp.name, inp.shape, source), input_dtype=by_type[inp.type], outputs=outputs,
                   output_widths=widths, class_names=tuple(names), metadata=meta, output_shapes=shapes)


    @classmethod
    def _table_from_session(cls, sess, inputs, outputs, source) -> "Contract":
        """A table's contract: every input [batch, 1], string or float32, described by zoo.columns."""
        check_signature([INPUT_NAME], outputs, source)
        meta = read_metadata(sess.get_modelmeta().custom_metadata_map, source)
        described = {c.get("input"): c for c in meta.get(META_COLUMNS) or [] if isinstance(c, dict)}
        columns = []
        for i in inputs:
            dtype = STRING if i.type == STRING_DTYPE["onnx"] else "float32" if i.type == "tensor(float)" else None
            if dtype is None or _dims(i.name, i.shape, source) != (1,):
                raise UsageError(f"{source}: input {i.name!r} is {i.type} {i.shape}; a table's inputs are "
                                 f"[batch, 1] string or float32")
            columns.append((i.name, dtype, str(described.get(i.name, {}).get("name", i.name))))
        shapes = tuple(_dims(o.name, o.shape, source) for o in sess.get_outputs())
        spec = meta.get(META_SPEC) if isinstance(meta.get(META_SPEC), dict) else {}
        return cls(name=str(spec.get("name") or Path(str(source)).parent.name or "model"), input_shape=(len(inputs),),
                   input_dtype="float32", outputs=outputs, output_widths=tuple(math.prod(d) for d in shapes),
                   class_names=read_class_names(meta, source), metadata=meta, output_shapes=shapes,
                   columns=tuple(columns))


def check_signature(inputs, outputs, source="<model>", is_classifier=None, allow_other_input_name=False,
                    error=UsageError) -> None:
    """The graph's input and output names are zoo's: one input, and the classifier's or the
    regression's outputs (those of `is_classifier` when given). Raises `error` naming both."""
    inputs, outputs = list(inputs), list(outputs)
    if len(inputs) != 1 or (inputs[0] != INPUT_NAME and not allow_other_input_name):
        raise error(f"{source}: the graph has {len(inputs)} inputs {inputs}; zoo models take exactly one "
                    f"({INPUT_NAME!r}): export it with `zoo export`")
    allowed = ([output_names(is_classifier)] if is_classifier is not None
               else [list(CLASSIFIER_OUTPUTS), list(REGRESSION_OUTPUTS)])
    if sorted(outputs) not in [sorted(a) for a in allowed]:
        raise error(f"{source}: outputs {outputs} are not zoo's " + " or ".join(str(a) for a in allowed))


def _dims(name, shape, source) -> tuple[int, ...]:
    """The non-batch dims of a graph value; every one must be a fixed positive size."""
    if shape is None or len(shape) < 2:
        raise UsageError(f"{source}: {name!r} has shape {shape}; zoo models have a batch axis and an example shape")
    for i, d in enumerate(shape[1:], start=1):
        if not isinstance(d, int) or d <= 0:
            raise UsageError(f"{source}: {name!r} has a symbolic or unknown size on axis {i} ({d}); "
                             f"only the batch axis may vary")
    return tuple(shape[1:])


# A class name is one line wherever it goes (labels.txt, the card, the page, predict's output): a
# control character (newline, tab, \r: Unicode Cc) or a line or paragraph separator (U+2028, U+2029)
# would shift every later name onto another class. The spec refuses them; so does every reader of
# a model file, which may come from elsewhere.
NOT_IN_NAMES = ("Cc", "Zl", "Zp")


def breaks_a_line(name: str) -> bool:
    """Whether `name` holds a character that NOT_IN_NAMES forbids."""
    return any(unicodedata.category(c) in NOT_IN_NAMES for c in name)


def read_class_names(meta: dict, source="<model>") -> tuple[str, ...]:
    """The class names of a model's metadata (read_metadata's), checked: a list of one-line strings."""
    names = meta.get(META_CLASS_NAMES) or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UsageError(f"{source}: metadata {META_CLASS_NAMES} is not a list of strings; re-export the run")
    bad = next((n for n in names if breaks_a_line(n)), None)
    if bad is not None:
        raise UsageError(f"{source}: metadata {META_CLASS_NAMES} holds the class name {bad!r}, with a control "
                         f"character (newline, tab, \\r or a line separator); labels, the card, the page and "
                         f"predict show one name a line: rename the class and export the model again")
    return tuple(names)


def read_metadata(props: dict[str, str], source="<model>") -> dict:
    """zoo's metadata keys, JSON-decoded; a clear error for one that is not JSON.

    An ONNX file from elsewhere may have none of them: it is still served and predicted."""
    meta = {}
    for key in META:
        if key in props:
            try:
                meta[key] = json.loads(props[key])
            except ValueError:
                raise UsageError(f"{source}: metadata {key} is not valid JSON; the file was edited or "
                                 f"corrupted: re-export it with `zoo export`") from None
    return meta
