"""zoo.stages.verify: onnxruntime against Keras on the same inputs, and the provenance it checks first.

One small real model (digits softmax, 2 epochs) trained and exported once for the module."""

import json

import numpy as np
import pytest
from conftest import SPECS

from zoo.core import contract, provenance, runs
from zoo.core.errors import ProvenanceError, VerificationError


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from zoo import api

    out = tmp_path_factory.mktemp("verify")
    api.train(SPECS / "digits-softmax.json", out=out, epochs=2)
    api.export(SPECS / "digits-softmax.json", out=out)
    return out / "digits-softmax"


@pytest.fixture
def parts(exported):
    from zoo.core.runtime import session
    from zoo.spec import load_spec
    from zoo.stages.build import load_model

    spec = load_spec(exported / contract.SPEC_FILE)
    return spec, load_model(exported / contract.MODEL_KERAS), session(exported / contract.MODEL_ONNX)


def test_the_exported_model_agrees_on_real_and_edge_inputs(exported, parts):
    from zoo.stages.data import load_dataset
    from zoo.stages.verify import compare, edge_inputs

    spec, model, sess = parts
    x = load_dataset(spec).x_test[:100]
    report = compare(sess, model, spec, [x, *edge_inputs(spec, x).values()], atol=1e-4, rtol=1e-3)
    assert report["passed"] and report["argmax_agreement"] == 1.0 and report["shapes_match"]
    assert set(report["outputs"]) == set(contract.output_names(True))


def test_a_changed_weight_is_caught(parts):
    from zoo.stages.data import load_dataset
    from zoo.stages.verify import compare

    spec, model, sess = parts
    kernel, bias = model.get_layer(contract.LOGITS).get_weights()
    model.get_layer(contract.LOGITS).set_weights([kernel + 0.05, bias])
    report = compare(sess, model, spec, [load_dataset(spec).x_test[:200]], atol=1e-4, rtol=1e-3)
    assert not report["passed"] and report["outputs"][contract.LOGITS]["violations"] > 0


def test_verify_run_writes_its_report_and_test_data_and_refuses_a_mismatch(exported, parts, tmp_path):
    import shutil

    from zoo.stages.verify import verify_run

    spec, model, _ = parts
    with runs.locked(exported, create=False):
        report = verify_run(spec, exported, model=model, log=lambda m: None)
    assert json.loads((exported / contract.VERIFY_FILE).read_text()) == report
    for i in range(3):
        name = contract.test_data_name("input" if i == 0 else "output", max(0, i - 1))
        assert provenance.check(exported, name, stage="verify")
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    kernel, bias = model.get_layer(contract.LOGITS).get_weights()
    model.get_layer(contract.LOGITS).set_weights([kernel * 1.5, bias])
    with runs.locked(copy, create=False), pytest.raises(VerificationError, match="does not match the Keras model"):
        verify_run(spec, copy, model=model, log=lambda m: None)
    assert json.loads((copy / contract.VERIFY_FILE).read_text())["status"] == "failed"


def test_an_onnx_file_from_another_model_is_refused_before_any_comparison(exported, tmp_path):
    import shutil

    from zoo.stages.verify import check_provenance

    assert check_provenance(exported, exported / contract.MODEL_ONNX)["inputs"] == [contract.MODEL_ONNX,
                                                                                     contract.MODEL_KERAS]
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    (copy / contract.MODEL_KERAS).write_bytes((copy / contract.MODEL_KERAS).read_bytes() + b"\0")
    with pytest.raises(ProvenanceError, match="model.keras"):
        check_provenance(copy, copy / contract.MODEL_ONNX)


def test_edge_inputs_cover_zeros_the_top_value_and_odd_batches(parts):
    from zoo.stages.verify import edge_inputs

    spec, _, _ = parts
    x = np.full((10, 8, 8), 16.0, np.float32)
    edges = edge_inputs(spec, x)
    assert [len(v) for v in edges.values()] == [1, 2, 1, 3, 7] and edges["max"].max() == 16.0
