"""The spec: catalog round trips, schema in sync, and a suite of malformed specs."""

import copy
import json
import subprocess
import sys

import pytest
from conftest import SPECS, catalog_specs, spec_dict, write_spec

from zoo.core.errors import SpecError
from zoo.spec import CHECKS, dumps, json_schema, load_spec, resolve, validate


@pytest.mark.parametrize("path", catalog_specs(), ids=lambda p: p.name)
def test_catalog_round_trips(path):
    spec = load_spec(path)
    again = validate(json.loads(dumps(spec)))
    assert again == spec
    assert resolve(again) == resolve(spec)
    assert spec.name == path.stem  # the file is named after the run it makes


def test_schema_file_is_in_sync():
    on_disk = json.loads((SPECS / "schema.json").read_text())
    assert on_disk == json_schema(), "regenerate with: zoo schema --out specs/schema.json"


def test_schema_accepts_every_catalog_spec():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json_schema()
    for path in catalog_specs():
        jsonschema.validate(json.loads(path.read_text()), schema)


def test_defaults_filled_from_one_place():
    data = {"version": 1, "name": "tiny", "model": {"kind": "softmax", "input_shape": [8, 8], "num_classes": 10},
            "data": {"dataset": "digits"}}
    resolved = resolve(validate(data))
    assert resolved["train"] == {"optimizer": "sgd", "learning_rate": 0.1, "momentum": 0.0, "weight_decay": None,
                                 "batch_size": 256, "epochs": 10, "seed": 0, "validation": "test",
                                 "early_stopping": None, "folds": None,
                                 "schedule": {"kind": "constant", "step_size": None, "gamma": None, "min_learning_rate": None}}
    assert resolved["model"]["kernel_initializer"] == "glorot_uniform"
    assert resolved["export"] == {"opset": 17, "atol": 1e-4, "rtol": 1e-3, "variants": []}


def _set(d, path, value):
    *parents, last = path
    for key in parents:
        d = d.setdefault(key, {}) if isinstance(d, dict) else d[key]
    if value is _DROP:
        del d[last]
    else:
        d[last] = value


_DROP = object()
MLP = "fashion-mnist-mlp"
LIN = "linear-synthetic"

# (case id, base spec, [(key path, new value)], expected JSON path in the message, expected words)
MALFORMED = [
    ("unknown-top-key", MLP, [(("modle",), {})], "modle", "unknown key; valid keys here: version, name"),
    ("unknown-nested-key", MLP, [(("train", "lr"), 0.1)], "train.lr", "learning_rate"),
    ("unknown-hidden-key", MLP, [(("model", "hidden", 0, "unit"), 3)], "model.hidden[0].unit", "units"),
    ("missing-version", MLP, [(("version",), _DROP)], "version", "missing"),
    ("wrong-version", MLP, [(("version",), 2)], "version", "spec version 1"),
    ("missing-name", MLP, [(("name",), _DROP)], "name", "missing"),
    ("name-path-escape", MLP, [(("name",), "../../x")], "name", "pattern"),
    ("name-uppercase-space", MLP, [(("name",), "My Model")], "name", "pattern"),
    ("missing-model", MLP, [(("model",), _DROP)], "model", "missing"),
    ("bad-kind", MLP, [(("model", "kind"), "cnn")], "model.kind", "'linear', 'softmax' or 'mlp'"),
    ("negative-units", MLP, [(("model", "hidden", 0, "units"), -3)], "model.hidden[0].units", "received -3"),
    ("zero-units", MLP, [(("model", "hidden", 0, "units"), 0)], "model.hidden[0].units", "greater than 0"),
    ("string-units", MLP, [(("model", "hidden", 0, "units"), "256")], "model.hidden[0].units", "integer"),
    ("float-epochs", MLP, [(("train", "epochs"), 2.5)], "train.epochs", "integer"),
    ("bool-batch", MLP, [(("train", "batch_size"), True)], "train.batch_size", "integer"),
    ("negative-lr", MLP, [(("train", "learning_rate"), -0.1)], "train.learning_rate", "greater than 0"),
    ("bad-activation", MLP, [(("model", "hidden", 0, "activation"), "relu6x")], "model.hidden[0].activation", "relu"),
    ("dropout-one", MLP, [(("model", "hidden", 0, "dropout"), 1.0)], "model.hidden[0].dropout", "less than 1"),
    ("bad-optimizer", MLP, [(("train", "optimizer"), "lbfgs")], "train.optimizer", "sgd"),
    ("momentum-with-adam", MLP, [(("train", "optimizer"), "adam"), (("train", "momentum"), 0.9)], "train.momentum", "takes no momentum"),
    ("linear-with-classes", LIN, [(("model", "num_classes"), 10)], "model.num_classes", "takes no num_classes"),
    ("classifier-without-classes", MLP, [(("model", "num_classes"), _DROP), (("model", "class_names"), _DROP)], "model.num_classes", "required"),
    ("class-name-newline", MLP, [(("model", "class_names"), [f"c{i}" for i in range(9)] + ["a\nb"])],
     "model.class_names[9]", "control characters"),
    ("class-name-tab", MLP, [(("model", "class_names"), ["\tT-shirt"] + [f"c{i}" for i in range(9)])],
     "model.class_names[0]", "control characters"),
    ("class-name-line-separator", MLP, [(("model", "class_names"), ["a\u2028b"] + [f"c{i}" for i in range(9)])],
     "model.class_names[0]", "control characters"),
    ("class-names-length", MLP, [(("model", "class_names"), ["a", "b"])], "model.class_names", "expected 10 names"),
    ("mlp-without-hidden", MLP, [(("model", "hidden"), [])], "model.hidden", "at least one hidden layer"),
    ("softmax-with-hidden", "fashion-mnist-softmax", [(("model", "hidden"), [{"units": 3}])], "model.hidden", "has no hidden layers"),
    ("wrong-input-shape", MLP, [(("model", "input_shape"), [32, 32])], "model.input_shape", "[28, 28]"),
    ("npz-without-path", MLP, [(("data", "dataset"), "npz")], "data.path", "give its path"),
    ("builtin-with-path", MLP, [(("data", "path"), "x.npz")], "data.path", "takes no path"),
    ("bad-dataset", MLP, [(("data", "dataset"), "cifar")], "data.dataset", "fashion_mnist"),
    ("opset-too-new", MLP, [(("export", "opset"), 99)], "export.opset", "less than or equal to 18"),
    ("zero-tolerance", MLP, [(("export", "atol"), 0)], "export.atol", "greater than 0"),
    ("synthetic-shape", LIN, [(("model", "input_shape"), [3])], "model.input_shape", "shape [2]"),
    ("hidden-not-list", MLP, [(("model", "hidden"), {"units": 3})], "model.hidden", "list"),
    ("validation-bad", MLP, [(("train", "validation"), 1.5)], "train.validation", "received 1.5"),
    # tables (check_table)
    ("columns-not-table", MLP, [(("data", "columns"), {"a": "drop"})], "data.columns", "only tables"),
    ("table-with-shape", MLP, [(("data", "dataset"), "penguins")], "model.input_shape", "remove input_shape"),
    ("one-fold", MLP, [(("train", "folds"), 1)], "train.folds", "greater than or equal to 2"),
    # kernel_initializer, leaky_relu's slope, early stopping, schedules (check_training_extras)
    ("bad-initializer", MLP, [(("model", "kernel_initializer"), "orthogonal")], "model.kernel_initializer", "he_normal"),
    ("initializer-object-name", MLP, [(("model", "kernel_initializer"), {"name": "he_normal", "stddev": 1})],
     "model.kernel_initializer.name", "random_normal"),
    ("stddev-zero", MLP, [(("model", "kernel_initializer"), {"name": "random_normal", "stddev": 0})],
     "model.kernel_initializer.stddev", "greater than 0"),
    ("slope-on-relu", MLP, [(("model", "hidden", 0, "negative_slope"), 0.1)], "model.hidden[0].negative_slope",
     "only activation 'leaky_relu' takes negative_slope"),
    ("gamma-on-cosine", MLP, [(("train", "schedule"), {"kind": "cosine", "gamma": 0.5})], "train.schedule.gamma",
     "only schedule kind 'step' takes gamma"),
    ("min-lr-above-lr", MLP, [(("train", "schedule"), {"kind": "cosine", "min_learning_rate": 1.0})],
     "train.schedule.min_learning_rate", "must not exceed"),
    ("bad-schedule", MLP, [(("train", "schedule"), {"kind": "exponential"})], "train.schedule.kind", "cosine"),
    ("early-stopping-without-validation", MLP, [(("train", "validation"), "none"), (("train", "early_stopping"), {"patience": 2})],
     "train.early_stopping.monitor", "needs validation"),
    ("early-stopping-mae-on-classifier", MLP, [(("train", "early_stopping"), {"monitor": "val_mae"})],
     "train.early_stopping.monitor", "not mae"),
    ("patience-zero", MLP, [(("train", "early_stopping"), {"patience": 0})], "train.early_stopping.patience", "greater than or equal to 1"),
    # export variants (check_variants)
    ("variant-twice", MLP, [(("export", "variants"), [{"name": "fp16"}, {"name": "fp16"}])], "export.variants[1].name",
     "listed twice"),
    ("int8-on-regression", LIN, [(("export", "variants"), [{"name": "int8"}])], "export.variants[0].name",
     "cannot apply to a linear (regression) model"),
    ("variant-unknown", MLP, [(("export", "variants"), [{"name": "int4"}])], "export.variants[0].name", "'litert-int8'"),
    ("variant-gate-over-1", MLP, [(("export", "variants"), [{"name": "int8", "max_accuracy_drop": 2}])],
     "export.variants[0].max_accuracy_drop", "less than or equal to 1"),
    ("limit-one-held-out", MLP, [(("data", "limit"), 1), (("train", "validation"), 0.5)], "train.validation",
     "leaves none to train on"),
    ("over-memory-limit", MLP, [(("model", "hidden"), [{"units": 65536}] * 3)], "model.hidden", "would take an estimated"),
]


@pytest.mark.parametrize("case,base,edits,path,words", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_spec_is_rejected_with_its_path(case, base, edits, path, words):
    data = copy.deepcopy(spec_dict(base))
    for keys, value in edits:
        _set(data, keys, value)
    with pytest.raises(SpecError) as info:
        validate(data, "spec.json")
    paths = [p for p, _ in info.value.problems]
    assert path in paths, info.value
    message = dict(info.value.problems)[path]
    assert words in message, message


def test_a_dozen_errors_are_reported_at_once():
    data = spec_dict(MLP)
    data["name"] = "Bad Name"
    data["model"]["hidden"] = [{"units": -1}, {"units": "x"}, {"units": 3, "activation": "nope"}]
    data["model"]["input_dtype"] = "int64"
    data["data"]["test_fraction"] = 2
    data["data"]["preprocessing"]["rescale"] = "1/255"
    data["train"] = {"optimizer": "sgdx", "learning_rate": 0, "batch_size": -1, "epochs": 0, "seed": -5, "extra": 1}
    data["export"] = {"opset": 1, "atol": -1}
    with pytest.raises(SpecError) as info:
        validate(data, "spec.json")
    assert len(info.value.problems) >= 12
    lines = str(info.value).splitlines()
    assert all(line.startswith("spec.json: ") for line in lines)


def test_every_cross_field_check_has_a_case():
    """Each named check is exercised by at least one malformed case above."""
    words = " ".join(c[4] for c in MALFORMED)
    assert len(CHECKS) == 12
    for phrase in ["takes no num_classes", "expected 10 names", "at least one hidden layer", "give its path",
                   "[28, 28]", "takes no momentum", "needs validation", "listed twice", "only tables",
                   "leaves none to train on", "would take an estimated"]:
        assert phrase in words


@pytest.mark.parametrize("content,expected", [
    (None, "no such file"),
    (b"", "empty file"),
    (b"   \n", "empty file"),
    (b"{not json", "not valid JSON"),
    (b"[1, 2, 3]", "expected a JSON object"),
    (b'"a string"', "expected a JSON object"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b'{"version": 1, "version": 1}', "duplicate key 'version'"),
    (b'{"version": NaN}', "NaN is not valid JSON"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
])
def test_bad_files(tmp_path, content, expected):
    path = tmp_path / "spec.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_huge_file_is_refused_without_reading(tmp_path):
    path = tmp_path / "big.json"
    with open(path, "wb") as f:
        f.truncate(50_000_000)
    with pytest.raises(SpecError, match="too large for a spec"):
        load_spec(path)


def test_directory_is_not_a_spec(tmp_path):
    with pytest.raises(SpecError, match="not a file"):
        load_spec(tmp_path)


def test_cli_reports_every_problem_with_exit_2(tmp_path):
    data = spec_dict(MLP)
    data["model"]["hidden"][0]["units"] = -3
    data["train"]["epochs"] = "ten"
    path = write_spec(tmp_path, data)
    done = subprocess.run([sys.executable, "-m", "zoo", "check", str(path)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0] == f"Error: {path}: model.hidden[0].units: Input should be greater than 0; received -3"
    assert any("train.epochs" in line for line in lines)
