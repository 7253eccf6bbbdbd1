"""Export to ONNX, verification against Keras, test data for other runtimes, predict, run."""

import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import DATASETS, MNIST10K, ROOT, SPECS, catalog_specs, need_data, spec_dict, write_spec


@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory):
    """A Fashion-MNIST softmax trained on a slice and exported, through the real CLI."""
    need_data()
    folder = tmp_path_factory.mktemp("fashion")
    data = spec_dict("fashion-mnist-softmax")
    data["name"] = "fashion-small"
    data["data"]["limit"] = 20000
    data["train"]["epochs"] = 6
    spec = write_spec(folder, data)
    done = subprocess.run([sys.executable, "-m", "zoo", "run", str(spec), "--out", str(folder / "exports"),
                           "--data-dir", str(DATASETS)], capture_output=True, text=True, cwd=folder)
    assert done.returncode == 0, done.stderr
    assert "argmax agreement: 100.00%" in done.stdout
    return folder / "exports" / "fashion-small"


def test_export_writes_a_checked_model_with_named_io(fashion_run):
    import onnx

    proto = onnx.load(str(fashion_run / "model.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    (inp,) = proto.graph.input
    assert inp.name == "input"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 28, 28]
    assert sorted(o.name for o in proto.graph.output) == ["logits", "probabilities"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["zoo.class_names"])[0] == "T-shirt/top"
    assert json.loads(meta["zoo.spec"])["name"] == "fashion-small"
    assert json.loads(meta["zoo.metrics"])["accuracy"] > 0.7
    assert json.loads(meta["zoo.input"])["dtype"] == "uint8"
    report = json.loads((fashion_run / "verify.json").read_text())
    assert report["status"] == "passed" and report["argmax_agreement"] == 1.0
    assert report["examples"] == 2000 and report["providers"][-1] == "CPUExecutionProvider"
    card = (fashion_run / "card.md").read_text()
    assert "onnxruntime-node" in card and "Ort::Session" in card and "InferenceSession" in card


def test_test_data_set_reproduces_the_outputs(fashion_run):
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    folder = fashion_run / "test_data_set_0"
    session = ort.InferenceSession(str(fashion_run / "model.onnx"), providers=["CPUExecutionProvider"])

    def read(name):
        tensor = onnx.TensorProto()
        tensor.ParseFromString((folder / name).read_bytes())
        return tensor.name, numpy_helper.to_array(tensor)

    name, x = read("input_0.pb")
    assert name == "input" and x.dtype == np.uint8 and x.shape == (16, 28, 28)
    outputs = [o.name for o in session.get_outputs()]
    got = dict(zip(outputs, session.run(outputs, {"input": x})))
    for i, expected_name in enumerate(["logits", "probabilities"]):
        name, expected = read(f"output_{i}.pb")
        assert name == expected_name
        np.testing.assert_allclose(got[name], expected, atol=1e-4, rtol=1e-3)


def test_tampered_weights_fail_verification(fashion_run, tmp_path, datasets):
    import onnx
    from onnx import numpy_helper

    run = tmp_path / "tampered"
    shutil.copytree(fashion_run, run)
    proto = onnx.load(str(run / "model.onnx"))
    weights = max(proto.graph.initializer, key=lambda t: np.prod(t.dims))  # the 784x10 kernel
    array = numpy_helper.to_array(weights).copy()
    array[:, 3] += 0.05
    weights.CopyFrom(numpy_helper.from_array(array, weights.name))
    # A copy beside the run's own file keeps the metadata saying which model.keras it came
    # from, so the chain holds and the numbers must catch it.
    onnx.save(proto, str(run / "tampered.onnx"))
    done = subprocess.run([sys.executable, "-m", "zoo", "verify", str(run / "tampered.onnx"), "--data-dir",
                           str(datasets)], capture_output=True, text=True)
    assert done.returncode == 6, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"Error: {run}/tampered.onnx does not match the Keras model")
    report = json.loads((run / "verify.json").read_text())
    assert report["status"] == "failed" and report["outputs"]["logits"]["violations"] > 0
    assert (run / "tampered.onnx").exists()  # kept for inspection

    # The run's own model.onnx edited in place breaks its provenance record: named, exit 8.
    onnx.save(proto, str(run / "model.onnx"))
    done = subprocess.run([sys.executable, "-m", "zoo", "verify", str(run), "--data-dir", str(datasets)],
                          capture_output=True, text=True)
    assert done.returncode == 8, done.stderr
    assert done.stderr.startswith(f"Error: {run}/model.onnx: changed since `zoo export` wrote it")


def _trouser_png(tmp_path):
    from PIL import Image

    from zoo.stages.data import read_idx

    images = read_idx(DATASETS / "fashion-mnist" / "t10k-images-idx3-ubyte.gz", 2051)
    labels = read_idx(DATASETS / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz", 2049)
    index = int(np.flatnonzero(labels == 1)[0])  # the first trouser of the test set
    path = tmp_path / "trouser.png"
    Image.fromarray(images[index]).save(path)
    return path, images[index]


def test_predict_names_the_right_class_and_loads_no_tensorflow(fashion_run, tmp_path):
    png, pixels = _trouser_png(tmp_path)
    cmd = [sys.executable, "-m", "zoo", "predict", str(fashion_run / "model.onnx"), str(png)]
    # Start-up speed is a benchmark's business; what a test can pin down is why predict is
    # fast: it runs on onnxruntime alone, never importing TensorFlow, Keras or onnx.
    done = subprocess.run([sys.executable, "-X", "importtime", *cmd[1:]], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("[0] Trouser ")
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert "onnxruntime" in imported and not imported & {"tensorflow", "keras", "onnx"}, sorted(imported)
    np.save(tmp_path / "x.npy", np.stack([pixels, pixels]))
    done = subprocess.run([*cmd[:-1], str(tmp_path / "x.npy"), "--json", "-k", "2"], capture_output=True, text=True)
    results = json.loads(done.stdout)
    assert len(results) == 2 and len(results[0]["top"]) == 2 and results[0]["top"][0]["name"] == "Trouser"


@pytest.mark.parametrize("make,message", [
    (lambda p: np.save(p / "bad.npy", np.zeros((3, 27, 28), np.uint8)), "does not fit the model's input"),
    (lambda p: np.save(p / "bad.npy", np.full((1, 28, 28), 300.0)), "takes uint8 pixel values 0..255"),
    (lambda p: np.save(p / "bad.npy", np.array([{"a": 1}], dtype=object)), "holds Python objects"),
])
def test_predict_bad_inputs_are_one_line(fashion_run, tmp_path, make, message):
    make(tmp_path)
    bad = next(tmp_path.glob("bad.*"))
    done = subprocess.run([sys.executable, "-m", "zoo", "predict", str(fashion_run / "model.onnx"), str(bad)],
                          capture_output=True, text=True)
    assert done.returncode == 3  # the file's content: a data error
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_verify_a_corrupt_onnx_is_one_line(fashion_run, tmp_path):
    run = tmp_path / "corrupt"
    shutil.copytree(fashion_run, run)
    cut = (run / "model.onnx").read_bytes()[:500]
    (run / "cut.onnx").write_bytes(cut)  # a truncated copy beside the run: the loader's error
    done = subprocess.run([sys.executable, "-m", "zoo", "verify", str(run / "cut.onnx")], capture_output=True, text=True)
    assert done.returncode == 2
    assert "not a loadable ONNX model" in done.stderr and "Traceback" not in done.stderr
    (run / "model.onnx").write_bytes(cut)  # the run's own, truncated in place: its record names it first
    done = subprocess.run([sys.executable, "-m", "zoo", "verify", str(run / "model.onnx")], capture_output=True, text=True)
    assert done.returncode == 8
    assert "changed since `zoo export` wrote it" in done.stderr and "Traceback" not in done.stderr


def test_export_of_an_untrained_run_is_refused(zoo, tmp_path):
    assert zoo("build", SPECS / "digits-softmax.json").returncode == 0
    done = zoo("export", tmp_path / "exports" / "digits-softmax")
    assert done.returncode == 2
    assert "was never trained; run `zoo train" in done.stderr
    assert not (tmp_path / "exports" / "digits-softmax" / "model.onnx").exists()


def test_quick_start_runs_offline_in_under_a_minute(zoo, tmp_path):
    start = time.perf_counter()
    done = zoo("run", SPECS / "digits-softmax.json", env={"ZOO_DATA_DIR": str(tmp_path / "empty")})
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    assert elapsed < 60
    metrics = json.loads((tmp_path / "exports" / "digits-softmax" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.9
    assert json.loads((tmp_path / "exports" / "digits-softmax" / "verify.json").read_text())["status"] == "passed"


@pytest.mark.parametrize("path", catalog_specs(), ids=lambda p: p.stem)
def test_every_catalog_spec_exports_and_verifies(path, tmp_path):
    """One epoch on at most 4,000 examples each: the full runs are in benchmarks/."""
    from zoo.core.backend import import_keras

    import_keras()
    from zoo import api
    from zoo.spec import validate

    data = json.loads(path.read_text())
    data["train"]["epochs"] = 1
    data["data"]["limit"] = 4000
    spec = validate(data)
    needs = {"fashion_mnist": ("fashion-mnist/t10k-labels-idx1-ubyte.gz", "Fashion-MNIST"),
             "mnist": ("mnist.npz", "the full MNIST (mnist.npz)")}.get(spec.data.dataset)
    if spec.data.path == MNIST10K:
        needs = (MNIST10K, "the MNIST 10k subset (mnist-10k.npz)")
    elif spec.data.path and not (ROOT / spec.data.path).exists():  # a file of the data folder: ames/ames.csv
        needs = (spec.data.path, spec.data.path)
    data_dir = need_data(*needs) if needs else DATASETS
    api.train(spec, out=tmp_path, data_dir=data_dir)
    report = api.export(spec, out=tmp_path, data_dir=data_dir)
    assert report["status"] == "passed"


def test_a_child_process_exports_on_tensorflow_under_the_lock_its_parent_hands_it(tmp_path):
    """What a run trained on jax or torch does: the export (and verification) runs in a child process
    on TensorFlow, working under the run's lock, which the parent holds and hands over, explicitly."""
    from zoo import api
    from zoo.core import contract, provenance, runs
    from zoo.core.errors import ExportError
    from zoo.stages.export import export_in_tensorflow

    api.train(SPECS / "digits-softmax.json", out=tmp_path, epochs=2)
    run = tmp_path / "digits-softmax"
    with runs.locked(run, create=False) as lock:
        export_in_tensorflow(lock, verify=True)
    provenance.check_chain(run, contract.MODEL_ONNX)
    assert json.loads((run / contract.VERIFY_FILE).read_text())["status"] == "passed"
    # without the hand-off the child refuses to touch the run: exit 7, and the parent says so
    done = subprocess.run([sys.executable, "-m", "zoo.stages.export", str(run), "--lock-fd", "0"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert done.returncode == 7 and "is not the lock" in done.stderr, done.stderr
    with runs.locked(run, create=False):  # held, but the child is handed another file
        with pytest.raises(ExportError, match="failed \\(exit 7\\)"):
            export_in_tensorflow(runs.Lock(run, 0))
