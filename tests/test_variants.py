"""Export variants (zoo.stages.variants, zoo.stages.variants_verify): int8, fp16, ort, litert,
litert-int8, each made by the real tool, verified on the whole test set against its gate,
recorded in provenance, described in the card, and used by predict, the page and Triton.

Two small real runs (scikit-learn's digits, an MLP trained in about a second) through the real CLI."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import spec_dict, write_spec

VARIANTS = ["int8", "fp16", "ort", "litert", "litert-int8"]
FILES = {"int8": "model.int8.onnx", "fp16": "model.fp16.onnx", "ort": "model.ort", "litert": "model.tflite",
         "litert-int8": "model.int8.tflite"}


def _zoo(*args, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _run(folder, data, *extra):
    path = write_spec(folder, data, f"{data['name']}.json")
    return _zoo("run", path, "--quiet", "--out", folder / "exports", *extra, cwd=folder), folder / "exports" / data["name"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """digits-mlp with every variant in its spec (default gates), through `zoo run`."""
    folder = tmp_path_factory.mktemp("variants")
    data = spec_dict("digits-mlp")
    data["export"] = {"variants": [{"name": v} for v in VARIANTS]}
    done, run = _run(folder, data)
    assert done.returncode == 0, done.stderr
    return run


def _dataset(run):
    from zoo.spec import load_spec
    from zoo.stages.data import load_dataset

    spec = load_spec(run / "spec.json")
    return spec, load_dataset(spec)


def _read(path):
    import onnx
    from onnx import numpy_helper

    return numpy_helper.to_array(onnx.load_tensor(str(path)))


def _litert(path, x):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    return runner(input=x)


def _onnxruntime(path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {"input": x})))


def test_every_variant_is_verified_on_the_whole_test_set(digits):
    from zoo.stages.build import load_model

    spec, ds = _dataset(digits)
    report = json.loads((digits / "verify.json").read_text())
    assert report["status"] == "passed" and report["variants_examples"] == len(ds.x_test) == 359
    table = report["variants"]
    assert list(table) == ["float32", *VARIANTS]
    keras_logits = load_model(digits / "model.keras")(ds.x_test).numpy()
    reference = (_onnxruntime(digits / "model.onnx", ds.x_test)["logits"].argmax(1) == ds.y_test).mean()
    assert table["float32"]["value"] == pytest.approx(reference)
    for name in VARIANTS:
        f = table[name]
        path = digits / FILES[name]
        assert f["status"] == "passed" and f["file"] == FILES[name] and f["size_bytes"] == path.stat().st_size
        # recompute every figure here, in the variant's own runtime
        out = _litert(path, ds.x_test) if name.startswith("litert") else _onnxruntime(path, ds.x_test)
        assert f["value"] == pytest.approx((out["logits"].argmax(1) == ds.y_test).mean())
        assert f["drop"] == pytest.approx(reference - f["value"]) and f["drop"] <= 0.01
        assert f["argmax_agreement"] == pytest.approx((out["logits"].argmax(1) == keras_logits.argmax(1)).mean())
        assert f["outputs"]["logits"]["max_abs_diff"] == pytest.approx(np.abs(out["logits"] - keras_logits).max(),
                                                                        rel=1e-4, abs=1e-6)
        assert f["gate"] == {"max_accuracy_drop": 0.01}
        assert f["latency_ms"]["batch_1"] > 0 and f["latency_ms"]["batch_256"] > 0
        assert f["tolerance_checked"] == (name in ("ort", "litert"))
    assert table["ort"]["outputs"]["logits"]["max_abs_diff"] < 1e-4  # float32 runtimes match Keras closely
    assert table["litert"]["outputs"]["logits"]["max_abs_diff"] < 1e-4
    assert table["int8"]["made"]["calibration"] == {"examples": 512, "from": "training set", "seed": 0,
                                                     "method": "MinMax"}
    assert table["int8"]["made"]["method"].startswith("static QDQ")
    assert table["fp16"]["size_bytes"] < 0.7 * table["float32"]["size_bytes"]
    assert table["int8"]["size_bytes"] < 0.7 * table["float32"]["size_bytes"]


def test_the_variants_are_what_they_say(digits):
    import onnx

    int8 = onnx.load(str(digits / FILES["int8"]))
    ops = {n.op_type for n in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    fp16 = onnx.load(str(digits / FILES["fp16"]))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 in and out
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in fp16.graph.output)
    assert (digits / FILES["ort"]).read_bytes()[4:8] == b"ORTM"  # ORT format's flatbuffer identifier
    assert (digits / FILES["litert"]).read_bytes()[4:8] == b"TFL3"


def test_each_variant_has_its_own_test_data(digits):
    for name in VARIANTS:
        folder = digits / f"test_data_set_0.{name}"
        x = _read(folder / "input_0.pb")
        assert x.shape == (16, 8, 8)
        path = digits / FILES[name]
        out = _litert(path, x) if name.startswith("litert") else _onnxruntime(path, x)
        for i, output in enumerate(["logits", "probabilities"]):
            np.testing.assert_allclose(out[output], _read(folder / f"output_{i}.pb"), atol=1e-5, rtol=1e-5)


def test_provenance_records_what_each_variant_was_made_from(digits):
    entries = json.loads((digits / "provenance.json").read_text())
    for name in ("int8", "fp16", "ort"):
        assert list(entries[FILES[name]]["inputs"]) == ["model.onnx"]
    for name in ("litert", "litert-int8"):
        assert "model.keras" in entries[FILES[name]]["inputs"]
    assert set(FILES.values()) <= set(entries["verify.json"]["inputs"])


def test_the_card_has_the_variants_table(digits):
    card = (digits / "card.md").read_text()
    section = card.split("## Variants")[1].split("\n## ")[0]
    assert "whole test set (359 examples)" in section and "logical cores" in section
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`model" in line]
    assert [r.split("|")[1].strip() for r in rows] == ["float32", *VARIANTS]
    assert all(r.rstrip().endswith(("| passed |", "| reference |")) for r in rows)
    assert "fp16:" in section and "of float32's size" in section


def test_predict_runs_every_variant_file(digits, tmp_path):
    x = digits / "test_data_set_0" / "input_0.pb"
    want = _onnxruntime(digits / "model.onnx", _read(x))["probabilities"].argmax(1)
    for name in VARIANTS:
        done = _zoo("predict", digits / FILES[name], x, "--json", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        got = [r["top"][0]["class"] for r in json.loads(done.stdout)]
        assert np.mean(np.array(got) == want) >= 0.9  # quantized ones may flip one near a boundary
        if name in ("ort", "litert"):
            assert got == want.tolist()


def test_export_triton_and_web_use_a_verified_variant(digits, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits, run)
    done = _zoo("export", run, "--triton", "--variant", "int8", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (run / "triton/digits-mlp/1/model.onnx").read_bytes() == (run / FILES["int8"]).read_bytes()
    done = _zoo("export", run, "--no-onnx", "--web", "--ort-web", "cdn", "--variant", "int8", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    config = json.loads((run / "web/model.json").read_text())
    assert config["model"] == FILES["int8"] and config["variant"] == "int8"
    assert (run / "web" / FILES["int8"]).read_bytes() == (run / FILES["int8"]).read_bytes()
    assert not (run / "web/model.onnx").exists()  # the smaller download only
    examples = json.loads((run / "web/examples.json").read_text())
    np.testing.assert_allclose(examples["expected"]["logits"],
                               _read(run / "test_data_set_0.int8/output_0.pb").reshape(16, -1), atol=1e-6)
    for variant, message in (("ort", "load ONNX files"), ("litert", "load ONNX files"), ("int9", "unknown variant")):
        done = _zoo("export", run, "--no-onnx", "--web", "--ort-web", "cdn", "--variant", variant, cwd=tmp_path)
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr


# ----- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("variants, message", [
    ([{"name": "int9"}], "export.variants[0].name: Input should be 'int8', 'fp16', 'ort', 'litert' or 'litert-int8'"),
    ([{"name": "int8", "max_accuracy_drop": 1.5}], "export.variants[0].max_accuracy_drop: Input should be less than or equal to 1"),
    ([{"name": "fp16", "max_accuracy_drop": -0.1}], "export.variants[0].max_accuracy_drop: Input should be greater than or equal to 0"),
    ([{"name": "fp16"}, {"name": "fp16"}], "'fp16' is listed twice"),
    ([{"name": "fp16", "max_mse_increase": 0.1}], "a classifier model's gate is max_accuracy_drop"),
])
def test_bad_variants_in_a_spec_are_exit_2(tmp_path, variants, message):
    data = spec_dict("digits-mlp")
    data["export"] = {"variants": variants}
    done = _zoo("check", write_spec(tmp_path, data), cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_int8_on_the_linear_regression_is_refused_and_says_why(tmp_path):
    data = spec_dict("linear-synthetic")
    data["export"] = {"variants": [{"name": "int8"}]}
    done = _zoo("check", write_spec(tmp_path, data), cwd=tmp_path)
    assert done.returncode == 2
    assert "int8 cannot apply to a linear (regression) model: int8 quantizes its predictions to 256 levels" in done.stderr
    data["export"] = {"variants": [{"name": "fp16", "max_mse_increase": 0.5}]}
    done, run = _run(tmp_path, data, "--epochs", "1")
    assert done.returncode == 0, done.stderr
    fp16 = json.loads((run / "verify.json").read_text())["variants"]["fp16"]
    assert fp16["metric"] == "mse" and fp16["gate"] == {"max_mse_increase": 0.5} and fp16["status"] == "passed"
    done = _zoo("export", run, "--variant", "litert-int8", cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert "cannot apply to linear-synthetic, a linear (regression) model" in done.stderr


def test_a_variant_failing_its_gate_is_exit_6_kept_and_never_used(digits, tmp_path):
    drop = json.loads((digits / "verify.json").read_text())["variants"]["int8"]["drop"]
    assert drop > 0  # this model's int8 loses a little accuracy: a gate of 0 must refuse it
    data = spec_dict("digits-mlp")
    data["export"] = {"variants": [{"name": "int8", "max_accuracy_drop": 0.0}, {"name": "fp16"}]}
    done, run = _run(tmp_path, data)
    assert done.returncode == 6
    assert len(done.stderr.splitlines()) == 1 and "int8 (accuracy" in done.stderr
    assert f"accuracy_drop {drop:.4g} > max_accuracy_drop 0" in done.stderr
    report = json.loads((run / "verify.json").read_text())
    assert report["variants"]["int8"]["status"] == "failed" and report["variants"]["fp16"]["status"] == "passed"
    assert (run / FILES["int8"]).is_file()  # kept for inspection
    assert "Failed their gate" in (run / "card.md").read_text()
    for args in (["--triton"], ["--web", "--ort-web", "cdn"]):
        done = _zoo("export", run, "--no-onnx", *args, "--variant", "int8", cwd=tmp_path)
        assert done.returncode == 2 and "not verified (it failed its gate" in done.stderr, done.stderr
    assert not (run / "triton").exists() and not (run / "web").exists()


def test_a_hand_edited_variant_is_exit_8(digits, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits, run)
    with open(run / FILES["fp16"], "ab") as f:
        f.write(b"\0")
    done = _zoo("verify", run, cwd=tmp_path)
    assert done.returncode == 8 and "model.fp16.onnx: changed since `zoo export` wrote it" in done.stderr
    done = _zoo("export", run, "--no-onnx", "--triton", "--variant", "fp16", cwd=tmp_path)
    assert done.returncode == 8


def test_a_retrain_removes_the_variants(digits, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits, run)
    done = _zoo("train", run, "--epochs", "1", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in run.iterdir() if p.name in FILES.values()] == []
    assert list(run.glob("test_data_set_0.*/*")) == []  # each variant's own test data went with it
    entries = json.loads((run / "provenance.json").read_text())
    assert not [n for n in entries if n in FILES.values() or n.startswith("test_data_set_0.")]


def test_an_interrupted_quantization_leaves_no_half_written_file(digits, tmp_path):
    import hashlib

    run = tmp_path / "run"
    shutil.copytree(digits, run)
    before = (run / FILES["int8"]).read_bytes()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "export", str(run), "--variant", "int8"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(run.glob(".model.int8.onnx.*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    assert list(run.glob(".model.int8.onnx.*")), "the quantization never started writing"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert not list(run.glob(".model.int8.onnx.*")), (out, err)  # no temporary twin left
    after = (run / FILES["int8"]).read_bytes()  # the previous file, whole (or the same bytes made again)
    assert after == before, (out, err)
    record = json.loads((run / "provenance.json").read_text())[FILES["int8"]]
    assert record["sha256"] == hashlib.sha256(after).hexdigest()


def test_variants_are_refused_for_table_models_until_they_are_made_for_them():
    import json

    from conftest import SPECS

    from zoo.core.errors import SpecError
    from zoo.spec import validate

    data = json.loads((SPECS / "penguins-softmax.json").read_text())
    data.setdefault("export", {})["variants"] = [{"name": "fp16"}]
    with pytest.raises(SpecError, match="not yet for tables"):
        validate(data)
