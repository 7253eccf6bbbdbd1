"""The spec's schema: one JSON document describing one model, its data, its training and its export.

Typed, frozen pydantic models, and the cross-field checks as small named functions
(CHECKS). zoo.spec.load validates a file against them. No TensorFlow is imported here.

Keys reuse Keras's argument names (`units`, `activation`, `use_bias`, `learning_rate`,
`batch_size`, `epochs`), and every default lives on the classes below, so
`resolve(spec)` (the spec with all defaults filled in) comes from one place.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from zoo.core import contract
from zoo.spec import budget

SPEC_VERSION = 1
TABLE_DATASETS = ("table", "penguins")
MAX_SPEC_BYTES = 1_000_000  # a spec is a few hundred bytes; anything this big is a mistake
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"  # file-name safe: no '/', no '..', no dot files

PositiveInt = Annotated[int, Field(gt=0, strict=True)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


class _Strict(BaseModel):
    # frozen: a spec never changes after validation; forbid: unknown keys are errors;
    # strict: "256" is not 256 and 1.0 is not True; allow_inf_nan off: JSON cannot spell
    # them, so a spec holding one (1e999, --learning-rate inf) would not reload from spec.json.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Hidden(_Strict):
    """One hidden Dense layer of an MLP."""

    units: PositiveInt = Field(le=65536)
    activation: Literal["relu", "sigmoid", "tanh", "gelu", "elu", "selu", "swish", "leaky_relu"] = "relu"
    # leaky_relu only: the slope for x < 0; default 0.01, PyTorch's nn.LeakyReLU default (Keras's is 0.2).
    negative_slope: Optional[Annotated[float, Field(ge=0.0, lt=1.0)]] = None
    dropout: Fraction = 0.0  # applied after the activation; d2l's MLP uses none


class RandomNormal(_Strict):
    """N(0, stddev^2) weights, untruncated: d2l's `normal(0, 0.01)`."""

    name: Literal["random_normal"]
    stddev: Annotated[float, Field(gt=0.0, le=10.0)] = 0.01


# glorot_uniform: Keras's (and d2l's TensorFlow code's) default; he_normal: PyTorch's
# kaiming_normal_ (N(0, 2/fan_in), untruncated); random_normal: N(0, 0.01^2) unless an
# object {"name": "random_normal", "stddev": s} says otherwise.
KernelInitializer = Union[Literal["glorot_uniform", "he_normal", "random_normal"], RandomNormal]


class Model(_Strict):
    kind: Literal["linear", "softmax", "mlp"]
    # per example, no batch axis; required, except for tables (dataset table/penguins), whose
    # width is the encoded columns' and is found from the data
    input_shape: Optional[list[PositiveInt]] = Field(default=None, min_length=1, max_length=3)
    # The dtype of the raw examples the model (and its ONNX export) takes: images are
    # uint8 pixels; preprocessing inside the model casts and scales them.
    input_dtype: Literal["uint8", "float32"] = "float32"
    num_classes: Optional[Annotated[int, Field(ge=2, le=100_000, strict=True)]] = None  # classifiers only
    class_names: Optional[list[Annotated[str, Field(min_length=1, max_length=64)]]] = None
    hidden: list[Hidden] = Field(default_factory=list, max_length=64)  # mlp only
    # linear: default 1; mlp: given, a regression MLP with this many targets (no num_classes)
    outputs: Optional[Annotated[int, Field(ge=1, le=100_000, strict=True)]] = None
    use_bias: bool = True
    kernel_initializer: KernelInitializer = "glorot_uniform"  # every Dense layer's weights; biases start at 0


class Preprocessing(_Strict):
    """Layers at the front of the model, so exported graphs take raw inputs."""

    rescale: Optional[float] = None  # x * rescale + offset, e.g. 1/255 for 8-bit pixels
    offset: float = 0.0
    standardize: bool = False  # (x - mean) / std per feature, fitted on the training set


class Synthetic(_Strict):
    """d2l's synthetic regression data: X ~ N(0, 1), y = Xw + b + N(0, noise^2)."""

    w: list[float] = Field(default_factory=lambda: [2.0, -3.4], min_length=1, max_length=10_000)
    b: float = 4.2
    noise: Annotated[float, Field(ge=0.0)] = 0.01
    num_examples: PositiveInt = Field(default=1000, le=10_000_000)


class Data(_Strict):
    # table: a CSV of numeric and text columns, empty/NA cells allowed (zoo.stages.tabular);
    # penguins: palmerpenguins' penguins.csv read as a table (ships in the package: offline)
    dataset: Literal["fashion_mnist", "mnist", "digits", "synthetic_linear", "npz", "csv", "table", "penguins"]
    # npz/csv file; relative paths are looked up in the current directory, then in
    # the data directory (--data-dir / ZOO_DATA_DIR).
    path: Optional[Annotated[str, Field(min_length=1, max_length=4096)]] = None
    label_column: str = "label"  # csv only
    # digits, synthetic_linear and csv have no official split: hold out this fraction (seeded).
    test_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    limit: Optional[PositiveInt] = None  # use only the first N training examples (quick runs)
    synthetic: Optional[Synthetic] = None  # synthetic_linear only; defaults are d2l's
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    # tables only: a column's kind, overriding the one inferred from the training split
    # (numbers -> numeric, text -> categorical); "drop" leaves a column (an identifier) out
    columns: Optional[dict[Annotated[str, Field(min_length=1, max_length=256)],
                           Literal["numeric", "categorical", "drop"]]] = Field(default=None, max_length=10_000)
    # tables, regression only: train on log(y); metrics report the RMSE of log(y) and the
    # exported model answers in y's own units (exp inside the graph)
    target_transform: Optional[Literal["log"]] = None


class EarlyStopping(_Strict):
    """Stop when `monitor` has not improved for `patience` epochs; keep the best epoch's weights."""

    monitor: Literal["val_loss", "val_accuracy", "val_mae", "loss", "accuracy", "mae"] = "val_loss"
    patience: Annotated[int, Field(ge=1, le=100_000, strict=True)] = 3
    min_delta: Annotated[float, Field(ge=0.0)] = 0.0  # a smaller change is no improvement


class Schedule(_Strict):
    """The learning rate of each epoch e (0-based) of E = train.epochs.

    constant: learning_rate; step: learning_rate * gamma ** (e // step_size) (PyTorch's
    StepLR); cosine: min_learning_rate + (learning_rate - min_learning_rate) * (1 + cos(pi e / E)) / 2
    (PyTorch's CosineAnnealingLR with T_max = E).
    """

    kind: Literal["constant", "step", "cosine"] = "constant"
    step_size: Optional[Annotated[int, Field(ge=1, le=100_000, strict=True)]] = None  # step only; default 1
    gamma: Optional[Annotated[float, Field(gt=0.0, le=1.0)]] = None  # step only; default 0.1
    min_learning_rate: Optional[Annotated[float, Field(ge=0.0)]] = None  # cosine only; default 0


class Train(_Strict):
    optimizer: Literal["sgd", "adam", "adamw", "rmsprop"] = "sgd"
    learning_rate: Annotated[float, Field(gt=0.0)] = 0.1  # d2l's SGD setting
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0  # sgd and rmsprop only
    weight_decay: Optional[Annotated[float, Field(ge=0.0)]] = None
    batch_size: PositiveInt = Field(default=256, le=1_000_000)
    epochs: PositiveInt = Field(default=10, le=100_000)
    seed: Annotated[int, Field(ge=0, lt=2**31, strict=True)] = 0
    # "test": evaluate on the test set after every epoch, as d2l does; a fraction holds
    # out that share of the training set instead; "none" skips per-epoch validation.
    validation: Union[Literal["test", "none"], Annotated[float, Field(gt=0.0, lt=1.0)]] = "test"
    early_stopping: Optional[EarlyStopping] = None  # none: train every epoch
    schedule: Schedule = Field(default_factory=Schedule)
    # K-fold cross-validation of the training set (d2l's k_fold) before the final model is
    # trained on all of it; per-fold and mean ± std metrics go to metrics.json's "cv"
    folds: Optional[Annotated[int, Field(ge=2, le=50, strict=True)]] = None


# The gate a variant must pass on the whole test set, unless its entry sets its own: classifiers
# may lose at most 1 point of accuracy against model.onnx (float32); regression models may have an
# MSE at most 5% higher (max_mse_increase is relative: (mse - mse_float32) / mse_float32).
DEFAULT_MAX_ACCURACY_DROP = 0.01
DEFAULT_MAX_MSE_INCREASE = 0.05
Gate = Annotated[float, Field(ge=0.0, le=1.0)]


class Variant(_Strict):
    """One export variant beside model.onnx (zoo/core/contract.py VARIANT_FILES) and its gate."""

    name: Literal["int8", "fp16", "ort", "litert", "litert-int8"]
    max_accuracy_drop: Optional[Gate] = None  # classifiers; default DEFAULT_MAX_ACCURACY_DROP
    max_mse_increase: Optional[Gate] = None  # regression; default DEFAULT_MAX_MSE_INCREASE

    def gate(self, is_classifier: bool) -> tuple[str, float]:
        """(the gate's key, its value): the metric drop this variant may show at most."""
        if is_classifier:
            return "max_accuracy_drop", (DEFAULT_MAX_ACCURACY_DROP if self.max_accuracy_drop is None
                                         else self.max_accuracy_drop)
        return "max_mse_increase", DEFAULT_MAX_MSE_INCREASE if self.max_mse_increase is None else self.max_mse_increase


class Export(_Strict):
    opset: Annotated[int, Field(ge=13, le=18, strict=True)] = 17  # tf2onnx 1.17 writes up to 18
    # float32 carries ~7 significant digits; ONNX kernels sum in a different order than
    # TensorFlow's, so 784-term dot products differ by ~1e-6 relative.
    atol: Annotated[float, Field(gt=0.0)] = 1e-4
    rtol: Annotated[float, Field(gt=0.0)] = 1e-3
    variants: list[Variant] = Field(default_factory=list, max_length=5)  # none: model.onnx only


class Spec(_Strict):
    version: Literal[1]
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: Annotated[str, Field(max_length=2000)] = ""
    model: Model
    data: Data
    train: Train = Field(default_factory=Train)
    export: Export = Field(default_factory=Export)

    @model_validator(mode="after")
    def _cross_checks(self):
        problems = [p for check in CHECKS for p in check(self)]
        if problems:
            raise _CrossFieldProblems(problems)
        return self

    @property
    def is_classifier(self) -> bool:
        # an mlp with `outputs` (and no num_classes) is a regression: d2l's house-price MLP
        return self.model.kind == "softmax" or (self.model.kind == "mlp" and self.model.outputs is None)

    @property
    def is_table(self) -> bool:
        """Rows of named numeric and text columns: one ONNX input per column."""
        return self.data.dataset in TABLE_DATASETS

    @property
    def num_outputs(self) -> int:
        return self.model.num_classes if self.is_classifier else (self.model.outputs or 1)


# ----- cross-field checks: each returns [(path, message)] -----------------------------

class _CrossFieldProblems(ValueError):
    def __init__(self, problems):
        self.problems = problems
        super().__init__("; ".join(f"{p}: {m}" for p, m in problems))


def check_classifier_fields(spec):
    m = spec.model
    if m.kind == "linear":
        if m.num_classes is not None:
            yield "model.num_classes", "a linear model is a regression and takes no num_classes; remove it or use kind 'softmax'"
        if m.class_names is not None:
            yield "model.class_names", "a linear model has no classes; remove class_names"
    elif m.kind == "mlp" and m.outputs is not None:  # a regression MLP
        if m.num_classes is not None or m.class_names is not None:
            yield "model.outputs", "an mlp with outputs is a regression; remove num_classes and class_names, or outputs"
    else:
        if m.num_classes is None:
            yield "model.num_classes", f"required for kind '{m.kind}': the number of classes, e.g. 10"
        if m.outputs is not None:
            yield "model.outputs", f"kind '{m.kind}' has num_classes outputs; remove outputs"


def check_class_names(spec):
    m = spec.model
    if m.class_names is not None and m.num_classes is not None:
        if len(m.class_names) != m.num_classes:
            yield "model.class_names", f"expected {m.num_classes} names (num_classes), received {len(m.class_names)}"
        if len(set(m.class_names)) != len(m.class_names):
            yield "model.class_names", "names must be distinct"
    for i, name in enumerate(m.class_names or ()):
        # labels.txt is one name a line (Triton's classification, the card, the page, predict):
        # a newline or tab in a name would shift every label after it
        if contract.breaks_a_line(name):
            yield f"model.class_names[{i}]", f"control characters (newline, tab) are not allowed in a class name; received {name!r}"


def check_hidden(spec):
    m = spec.model
    if m.kind == "mlp" and not m.hidden:
        yield "model.hidden", "an mlp needs at least one hidden layer, e.g. [{\"units\": 256}]; or use kind 'softmax'"
    if m.kind != "mlp" and m.hidden:
        yield "model.hidden", f"kind '{m.kind}' has no hidden layers; remove hidden or use kind 'mlp'"


def check_data_source(spec):
    d = spec.data
    needs_path = d.dataset in ("npz", "csv", "table")
    if needs_path and d.path is None:
        yield "data.path", f"dataset '{d.dataset}' reads a file: give its path"
    if not needs_path and d.path is not None:
        yield "data.path", f"dataset '{d.dataset}' is built in and takes no path; remove it or use 'npz'/'csv'"
    if d.synthetic is not None and d.dataset != "synthetic_linear":
        yield "data.synthetic", "only dataset 'synthetic_linear' takes synthetic parameters"


def check_data_matches_model(spec):
    d, m = spec.data, spec.model
    if d.dataset == "synthetic_linear":
        if m.kind != "linear":
            yield "data.dataset", f"synthetic_linear is regression data; kind '{m.kind}' needs class labels"
        features = len((d.synthetic or Synthetic()).w)
        if m.input_shape != [features]:
            yield "model.input_shape", f"synthetic_linear with {features} weights gives inputs of shape [{features}], received {m.input_shape}"
        if (m.outputs or 1) != 1:
            yield "model.outputs", "synthetic_linear has one target; outputs must be 1"
    builtin = {"fashion_mnist": ([28, 28], 10, "uint8"), "mnist": ([28, 28], 10, "uint8"), "digits": ([8, 8], 10, "float32")}
    if d.dataset in builtin:
        shape, classes, dtype = builtin[d.dataset]
        if m.kind == "linear":
            yield "model.kind", f"{d.dataset} is a classification dataset; use kind 'softmax' or 'mlp'"
        if m.input_shape != shape:
            yield "model.input_shape", f"{d.dataset} examples have shape {shape}, received {m.input_shape}"
        if m.num_classes is not None and m.num_classes != classes:
            yield "model.num_classes", f"{d.dataset} has {classes} classes, received {m.num_classes}"
        if m.input_dtype != dtype:
            yield "model.input_dtype", f"{d.dataset} examples are {dtype}, received {m.input_dtype!r}"


def check_table(spec):
    d, m = spec.data, spec.model
    table = spec.is_table
    if not table and m.input_shape is None:
        yield "model.input_shape", "required key is missing"
    if table and m.input_shape is not None:
        yield "model.input_shape", f"dataset '{d.dataset}' finds the width from its columns; remove input_shape"
    if table and m.input_dtype != "float32":
        yield "model.input_dtype", "a table's inputs are its columns (text or float32); remove input_dtype"
    if table and (d.preprocessing.rescale is not None or d.preprocessing.offset or d.preprocessing.standardize):
        yield "data.preprocessing", "a table's numeric columns are always standardized (missing -> 0); remove preprocessing"
    if not table and d.columns is not None:
        yield "data.columns", "only tables (dataset 'table' or 'penguins') take columns"
    if d.target_transform is not None and (not table or spec.is_classifier):
        yield "data.target_transform", "only a table's regression (kind 'linear', or 'mlp' with outputs) takes a target transform"
    if d.columns and d.label_column in d.columns:
        yield f"data.columns[{d.label_column!r}]", "is the label column (data.label_column); remove it here"


def check_optimizer(spec):
    t = spec.train
    if t.momentum and t.optimizer not in ("sgd", "rmsprop"):
        yield "train.momentum", f"optimizer '{t.optimizer}' takes no momentum; remove it or use 'sgd'"


def check_preprocessing(spec):
    p = spec.data.preprocessing
    if p.rescale is not None and (not math.isfinite(p.rescale) or p.rescale == 0):
        yield "data.preprocessing.rescale", f"expected a finite non-zero number such as 0.00392156862745098 (1/255), received {p.rescale}"
    if spec.data.dataset == "synthetic_linear" and (p.rescale is not None or p.standardize):
        yield "data.preprocessing", "synthetic_linear data is already standard normal; remove preprocessing"


def check_training_extras(spec):
    t, m = spec.train, spec.model
    sched = t.schedule
    if sched.kind != "step":
        for key in ("step_size", "gamma"):
            if getattr(sched, key) is not None:
                yield f"train.schedule.{key}", f"only schedule kind 'step' takes {key}; remove it or use kind 'step'"
    if sched.kind != "cosine" and sched.min_learning_rate is not None:
        yield "train.schedule.min_learning_rate", "only schedule kind 'cosine' takes min_learning_rate"
    if sched.min_learning_rate is not None and sched.min_learning_rate > t.learning_rate:
        yield "train.schedule.min_learning_rate", f"must not exceed train.learning_rate ({t.learning_rate})"
    es = t.early_stopping
    if es is not None:
        if es.monitor.startswith("val_") and t.validation == "none":
            yield "train.early_stopping.monitor", f"{es.monitor} needs validation; set train.validation or monitor 'loss'"
        wanted = "accuracy" if spec.is_classifier else "mae"
        if es.monitor.endswith(("accuracy", "mae")) and not es.monitor.endswith(wanted):
            yield "train.early_stopping.monitor", f"a {m.kind} model reports loss and {wanted}, not {es.monitor.removeprefix('val_')}"
    for i, layer in enumerate(m.hidden):
        if layer.activation != "leaky_relu" and layer.negative_slope is not None:
            yield f"model.hidden[{i}].negative_slope", "only activation 'leaky_relu' takes negative_slope"


def check_variants(spec):
    seen = set()
    if spec.is_table and spec.export.variants:  # a graph of N named string/float inputs: not made or gated yet
        yield "export.variants", "variants are made for array models only, not yet for tables; remove export.variants"
        return
    for i, v in enumerate(spec.export.variants):
        if v.name in seen:
            yield f"export.variants[{i}].name", f"{v.name!r} is listed twice; list each variant once"
        seen.add(v.name)
        if not spec.is_classifier and v.name in ("int8", "litert-int8"):
            yield (f"export.variants[{i}].name", f"{v.name} cannot apply to a {spec.model.kind} (regression) model: "
                   f"int8 quantizes its predictions to 256 levels; use fp16, ort or litert")
        wrong = "max_mse_increase" if spec.is_classifier else "max_accuracy_drop"
        if getattr(v, wrong) is not None:
            right = "max_accuracy_drop" if spec.is_classifier else "max_mse_increase"
            yield f"export.variants[{i}].{wrong}", f"a {'classifier' if spec.is_classifier else 'regression'} model's gate is {right}"



def check_validation_split(spec):
    """A held-out fraction of data.limit examples must leave at least one to train on."""
    n, v = spec.data.limit, spec.train.validation
    if n is not None and isinstance(v, float) and n - max(1, int(n * v)) < 1:
        yield "train.validation", (f"holding out {v} of data.limit {n} examples leaves none to train on; "
                                   f"raise data.limit or use validation 'test'")



CHECKS = [check_classifier_fields, check_class_names, check_hidden, check_data_source,
          check_data_matches_model, check_table, check_optimizer, check_preprocessing, check_training_extras,
          check_variants, check_validation_split, budget.check_memory]
