"""zoo.core.contract: the names, dtypes and checks every consumer of model.onnx reads, tried
on real ONNX graphs in real onnxruntime sessions (built with onnx.helper: no TensorFlow)."""

import json

import numpy as np
import pytest

from zoo.core import contract
from zoo.core.contract import Contract, check_signature
from zoo.core.errors import ExportError, UsageError


def _model(path, inputs=(("input", 1, [None, 4]),), outputs=("logits", "probabilities"), meta=None, width=3):
    """A real ONNX file: each output is MatMul(input, W) (+ Softmax for probabilities)."""
    from onnx import TensorProto, helper, numpy_helper, save_model

    types = {"uint8": TensorProto.UINT8, 1: TensorProto.FLOAT, "string": TensorProto.STRING}
    ins = [helper.make_tensor_value_info(n, types[t], shape) for n, t, shape in inputs]
    w = numpy_helper.from_array(np.ones((4, width), np.float32), "w")
    nodes = [helper.make_node("MatMul", [inputs[0][0], "w"], ["mm"])]
    outs = []
    for name in outputs:
        op = "Softmax" if name == "probabilities" else "Identity"
        nodes.append(helper.make_node(op, ["mm"], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, width]))
    graph = helper.make_graph(nodes, "g", ins, outs, initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v)
    save_model(model, str(path))
    return path


def test_every_run_file_name_is_spelled_once_here():
    assert contract.checkpoint_name(7) == "checkpoints/epoch-0007.keras"
    assert contract.test_data_name("output", 1) == "test_data_set_0/output_1.pb"
    assert contract.output_names(True) == [contract.LOGITS, contract.PROBABILITIES]
    assert contract.output_names(False) == [contract.PREDICTIONS]
    assert contract.LABELED_OUTPUT == contract.PROBABILITIES


@pytest.mark.parametrize("inputs,outputs,classifier,words", [
    (["x"], ["logits", "probabilities"], None, "zoo models take exactly one ('input')"),
    (["input", "extra"], ["predictions"], None, "exactly one"),
    (["input"], ["logits"], None, "are not zoo's"),
    (["input"], ["predictions"], True, "are not zoo's ['logits', 'probabilities']"),
])
def test_a_graph_signature_that_is_not_zoos_is_named(inputs, outputs, classifier, words):
    with pytest.raises(UsageError) as e:
        check_signature(inputs, outputs, "m.onnx", classifier)
    assert words in str(e.value) and str(e.value).startswith("m.onnx: ")
    with pytest.raises(ExportError):
        check_signature(inputs, outputs, "m.onnx", classifier, error=ExportError)


def test_a_good_signature_passes_in_any_order():
    check_signature(["input"], ["probabilities", "logits"], is_classifier=True)
    check_signature(["input"], ["predictions"])


def test_the_contract_of_a_real_onnx_file(tmp_path):
    meta = {contract.META_CLASS_NAMES: json.dumps(["a", "b", "c"]), contract.META_SPEC: json.dumps({"name": "demo"})}
    c = Contract.from_onnx(_model(tmp_path / "m.onnx", meta=meta))
    assert (c.name, c.input_shape, c.input_dtype, c.outputs) == ("demo", (4,), "float32", ("logits", "probabilities"))
    assert c.is_classifier and c.labels() == ["a", "b", "c"] and c.example_size == 4
    assert c.triton_dtype(contract.INPUT_NAME) == "TYPE_FP32" and c.oip_dtype("logits") == "FP32"
    page = c.to_json()
    assert page["input"] == {"name": "input", "shape": [4], "dtype": "float32", "js": "Float32Array"}


def test_a_regression_contract_has_no_labels(tmp_path):
    c = Contract.from_onnx(_model(tmp_path / "r.onnx", outputs=("predictions",), width=1))
    assert not c.is_classifier and c.labels() == [] and c.output_widths == (1,)
    assert c.name == tmp_path.name  # no zoo.spec metadata: the folder's name


@pytest.mark.parametrize("change,words", [
    (dict(inputs=(("input", 1, [None, None]),)), "symbolic or unknown size on axis 1"),
    (dict(meta={contract.META_CLASS_NAMES: "not json"}), "is not valid JSON"),
    (dict(meta={contract.META_CLASS_NAMES: json.dumps([1, 2])}), "not a list of strings"),
])
def test_a_file_that_breaks_the_contract_is_named(tmp_path, change, words):
    path = _model(tmp_path / "bad.onnx", **change)
    with pytest.raises(UsageError) as e:
        Contract.from_onnx(path)
    assert words in str(e.value) and str(path) in str(e.value)


def test_a_missing_or_corrupt_file_is_one_clear_error(tmp_path):
    with pytest.raises(UsageError, match="no such ONNX file"):
        Contract.from_onnx(tmp_path / "absent.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a model")
    with pytest.raises(UsageError, match="not a loadable ONNX model"):
        Contract.from_onnx(tmp_path / "junk.onnx")


# ----- class names that would break a line: refused by every reader of a model file ---------------

LINE_BREAKERS = ["shirt\nshoe", "a\tb", "a\rb", "a\u2028b", "a\u2029b", "nul\x00", "next\x85line"]


@pytest.mark.parametrize("bad", LINE_BREAKERS)
def test_a_foreign_models_class_name_with_a_control_character_is_refused(tmp_path, bad):
    """A model from elsewhere (no zoo spec checked its names): the card, the page, predict, Triton's
    labels and the server all read it through Contract.from_onnx / from_session."""
    meta = {contract.META_CLASS_NAMES: json.dumps(["fine", bad, "also fine"])}
    path = _model(tmp_path / "foreign.onnx", meta=meta)
    with pytest.raises(UsageError) as e:
        Contract.from_onnx(path)
    message = str(e.value)
    assert message.startswith(f"{path}: metadata zoo.class_names holds the class name {bad!r}")
    assert len(message.splitlines()) == 1 and "control character" in message
    with pytest.raises(UsageError, match="control character"):  # the same rule for a table's names
        contract.read_class_names({contract.META_CLASS_NAMES: [bad]}, path)


def test_names_in_any_script_with_spaces_and_punctuation_are_fine(tmp_path):
    names = ["T-shirt/top", "café au lait", "数字", "a b", "“quoted”", "emoji 🐧"]
    meta = {contract.META_CLASS_NAMES: json.dumps(names)}
    assert Contract.from_onnx(_model(tmp_path / "m.onnx", meta=meta, width=6)).labels() == names


@pytest.mark.parametrize("bad", ["shirt\nshoe", "a\tb", "a\rb", "a\u2028b"])
def test_predict_refuses_such_a_file_in_one_line(tmp_path, bad):
    from zoo_process import one_error, zoo

    path = _model(tmp_path / "foreign.onnx", meta={contract.META_CLASS_NAMES: json.dumps(["x", bad, "z"])})
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    for extra in ([], ["--json"]):  # before any output: the table and JSON alike
        done = zoo("predict", path, tmp_path / "x.npy", *extra, cwd=tmp_path)
        one_error(done, 2, str(path), repr(bad), "control character")
        assert done.stdout == ""
