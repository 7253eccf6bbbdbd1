"""zoo serve on table models: one named [batch, 1] input per column, text as BYTES, against a real Triton.

Triton's Python-backend stub (nvidia-pytriton 0.7) was built for NumPy 1 and corrupts string
inputs under NumPy 2, so zoo serve runs it in an environment of its own with NumPy 1
(zoo/deploy/serve/stub_env.py; .ci/setup-serve.sh installs it). These tests send raw rows
(missing values, categories never seen, edge rows) over HTTP binary, gRPC and JSON, and the
answers must equal onnxruntime's on the same rows. The card's curl and tritonclient snippets
run as printed. Without NumPy 1 a table is refused with exit 2 and the install line, and an
image model is still served (its tensors then travel by DLPack).
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from test_serve import ENV, HAVE_PYTRITON, http, needs_pytriton, running_server

from zoo.deploy.serve import stub_env

pytestmark = needs_pytriton
NEEDS_NUMPY1 = pytest.mark.skipif(not stub_env.numpy1(stub_env.stub_packages()), reason=(
    f"needs NumPy 1 for the Triton stub: {stub_env.INSTALL} (.ci/setup-serve.sh does it)"))

HOUSES = ("city,rooms,garden,price\n" + "".join(
    f"{city},{rooms},{garden},{price}\n" for city, rooms, garden, price in [
        ("Ames", 3, "yes", 210), ("Ames", 2, "no", 150), ("Boone", 4, "yes", 260), ("Boone", "", "no", 180),
        ("Nevada", 5, "", 300), ("Ames", 3, "no", 190), ("Boone", 2, "yes", 170), ("Nevada", 4, "no", 250),
        ("Ames", 6, "yes", 340), ("Nevada", 3, "yes", 230), ("Boone", 5, "no", 270), ("Ames", 1, "no", 110)] * 4))


def _run(folder: Path, spec: dict, env=None) -> Path:
    path = folder / f"{spec['name']}.json"
    path.write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, "-m", "zoo", "run", str(path), "--out", str(folder / "exports"), "--quiet"],
                          capture_output=True, text=True, cwd=folder, timeout=600, env={**ENV, **(env or {})},
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return folder / "exports" / spec["name"]


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """A penguins classifier and a small house-price regression, trained and exported."""
    if not HAVE_PYTRITON:
        pytest.skip("needs nvidia-pytriton")
    folder = tmp_path_factory.mktemp("serve-table")
    spec = json.loads((ROOT / "specs" / "penguins-softmax.json").read_text())
    spec["train"].update(epochs=5)
    del spec["train"]["folds"]
    penguins = _run(folder, spec)
    (folder / "houses.csv").write_text(HOUSES)
    houses = _run(folder, {"version": 1, "name": "houses", "model": {"kind": "linear"},
                           "data": {"dataset": "table", "path": str(folder / "houses.csv"), "label_column": "price",
                                    "test_fraction": 0.25},
                           "train": {"optimizer": "adam", "learning_rate": 0.1, "batch_size": 8, "epochs": 5}})
    return folder, penguins, houses


@pytest.fixture(scope="module")
def server(tables):
    if not stub_env.numpy1(stub_env.stub_packages()):
        pytest.skip(NEEDS_NUMPY1.kwargs["reason"])
    folder, penguins, houses = tables
    with running_server(penguins, folder, str(houses)) as s:
        yield s


ROWS = {  # raw rows as a user holds them: missing cells, a category never seen, extreme numbers
    "island": ["Biscoe", "Atlantis", "", "Dream", "Torgersen"],
    "bill_length_mm": [45.2, np.nan, 39.0, 1e6, 36.7],
    "bill_depth_mm": [14.8, 18.0, np.nan, -5.0, 19.3],
    "flipper_length_mm": [212.0, 190.0, np.nan, 0.0, 193.0],
    "body_mass_g": [5200.0, 3700.0, 3500.0, np.nan, 3450.0],
    "sex": ["female", "unknown-sex", "", "NA", "male"],
    "year": [2009.0, 2008.0, np.nan, 2007.0, 2007.0],
}


def feeds(rows):
    return {k: (np.array([[v] for v in vs], dtype=object) if isinstance(vs[0], str)
                else np.array([[v] for v in vs], dtype=np.float32)) for k, vs in rows.items()}


def onnxruntime(run, rows):
    import onnxruntime as ort

    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds(rows))))


def client_inputs(module, rows, binary=True):
    inputs = []
    for name, x in feeds(rows).items():
        tensor = module.InferInput(name, list(x.shape), "BYTES" if x.dtype == object else "FP32")
        if module.__name__.endswith("http"):
            tensor.set_data_from_numpy(x, binary_data=binary)
        else:
            tensor.set_data_from_numpy(x)
        inputs.append(tensor)
    return inputs


@NEEDS_NUMPY1
def test_raw_rows_over_http_and_grpc_equal_onnxruntime(server, tables):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    _, penguins, _ = tables
    want = onnxruntime(penguins, ROWS)
    for module, address in ((httpclient, f"127.0.0.1:{server.port}"), (grpcclient, f"127.0.0.1:{server.grpc_port}")):
        client = module.InferenceServerClient(address)
        try:
            result = client.infer("penguins-softmax", client_inputs(module, ROWS))
        finally:
            client.close()
        for name, expected in want.items():
            np.testing.assert_allclose(result.as_numpy(name), expected, rtol=1e-6, atol=1e-6, err_msg=module.__name__)
    assert want["probabilities"][0].argmax() == 2  # the heavy Biscoe penguin: Gentoo


@NEEDS_NUMPY1
def test_json_rows_and_the_classification_extension(server, tables):
    _, penguins, _ = tables
    rows = {k: [v for v, keep in zip(vs, [1, 1, 0, 0, 1]) if keep] for k, vs in ROWS.items()}
    rows["bill_length_mm"][1] = 40.0  # JSON has no NaN: missing strings only
    body = {"inputs": [{"name": k, "shape": [3, 1], "datatype": "BYTES" if isinstance(vs[0], str) else "FP32",
                        "data": vs} for k, vs in rows.items()],
            "outputs": [{"name": "probabilities", "parameters": {"classification": 1}}]}
    status, answer = http(f"{server.url}/v2/models/penguins-softmax/infer", body)
    assert status == 200, answer
    probabilities = onnxruntime(penguins, rows)["probabilities"]
    labels = ["Adelie", "Chinstrap", "Gentoo"]
    for got, p in zip(answer["outputs"][0]["data"], probabilities):
        score, index, label = got.split(":")
        assert int(index) == p.argmax() and label == labels[p.argmax()] and abs(float(score) - p.max()) < 1e-5


@NEEDS_NUMPY1
def test_a_regression_table_answers_in_its_units_over_every_protocol(server, tables):
    import tritonclient.grpc as grpcclient

    _, _, houses = tables
    rows = {"city": ["Ames", "Atlantis", ""], "rooms": [3.0, np.nan, 9.0], "garden": ["yes", "", "maybe"]}
    want = onnxruntime(houses, rows)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        result = client.infer("houses", client_inputs(grpcclient, rows))
    finally:
        client.close()
    for name, expected in want.items():
        np.testing.assert_allclose(result.as_numpy(name), expected, rtol=1e-6, atol=1e-5)


BAD = [  # (what, how the request differs from a good one, words the 400 must hold)
    ("a number in a text column", {"island": {"datatype": "FP32", "data": [1.0]}}, "island"),
    ("text in a number column", {"body_mass_g": {"datatype": "BYTES", "data": ["heavy"]}}, "body_mass_g"),
    ("a column left out", {"sex": None}, "sex"),
    ("a shape that is not [n, 1]", {"year": {"shape": [1, 2], "data": [2007.0, 2008.0]}}, "year"),
    ("rows that disagree", {"island": {"shape": [2, 1], "data": ["Biscoe", "Dream"]}}, "batch"),
]


def good_inputs():
    return {k: {"name": k, "shape": [1, 1], "datatype": "BYTES" if isinstance(vs[0], str) else "FP32",
                "data": [vs[0]]} for k, vs in ROWS.items()}


@NEEDS_NUMPY1
@pytest.mark.parametrize("what,change,words", BAD, ids=[b[0] for b in BAD])
def test_a_bad_table_request_is_a_400_and_the_server_goes_on(server, what, change, words):
    inputs = good_inputs()
    for name, fields in change.items():
        if fields is None:
            del inputs[name]
        else:
            inputs[name].update(fields)
    status, answer = http(f"{server.url}/v2/models/penguins-softmax/infer", {"inputs": list(inputs.values())})
    assert status == 400 and words in json.dumps(answer), (status, answer)
    status, _ = http(f"{server.url}/v2/models/penguins-softmax/infer", {"inputs": list(good_inputs().values())})
    assert status == 200


@NEEDS_NUMPY1
def test_the_banner_names_every_column(server):
    out = server.output()
    assert "penguins-softmax: 7 inputs [batch <= 64, 1] (island BYTES, bill_length_mm FP32," in out, out
    assert "houses: 3 inputs" in out and '"datatype": "BYTES", "data": ["' in out


@NEEDS_NUMPY1
def test_the_cards_curl_and_tritonclient_snippets_run_against_the_server(server, tables):
    _, penguins, _ = tables
    section = (penguins / "card.md").read_text().split("## Serve it", 1)[1]
    blocks = dict(re.findall(r"```(\w+)\n(.*?)```", section, re.S)[1:3])
    here = f"localhost:{server.port}"
    from zoo.core.contract import Contract
    from zoo.deploy.serve_card import example_rows

    rows = example_rows(Contract.from_onnx(penguins / "model.onnx").metadata["zoo.columns"])
    want = onnxruntime(penguins, {k: [v[0] if v[0] is not None else np.nan] for k, v in rows.items()})
    if shutil.which("curl"):
        done = subprocess.run(["bash", "-c", blocks["bash"].replace("localhost:8000", here)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        answer = {o["name"]: o["data"] for o in json.loads(done.stdout)["outputs"]}
        np.testing.assert_allclose(answer["probabilities"], want["probabilities"].ravel(), atol=1e-6)
    done = subprocess.run([sys.executable, "-c", blocks["python"].replace("localhost:8000", here)], capture_output=True,
                          text=True, timeout=60, env=ENV)
    assert done.returncode == 0, done.stderr
    printed = np.array([float(v) for v in re.findall(r"[-+0-9.e]+", done.stdout)], np.float32).reshape(2, 3)
    both = onnxruntime(penguins, {k: [v[0], "" if isinstance(v[0], str) else np.nan] for k, v in rows.items()})
    np.testing.assert_allclose(printed, both["probabilities"], atol=1e-6)


def test_without_numpy1_a_table_is_refused_and_an_image_model_is_still_served(tables, tmp_path):
    folder, penguins, _ = tables
    env = {"ZOO_TRITON_STUB_PACKAGES": str(tmp_path / "none")}
    done = subprocess.run([sys.executable, "-m", "zoo", "serve", str(penguins)], capture_output=True, text=True,
                          env={**ENV, **env}, timeout=120, stdin=subprocess.DEVNULL)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "penguins-softmax: a table model" in lines[0], done.stderr
    assert "--target" in lines[0] and "numpy==1.26.4" in lines[0]
    digits = _run(folder, {**json.loads((ROOT / "specs" / "digits-softmax.json").read_text()), "name": "digits-dlpack"})
    digits_train = json.loads((digits / "metrics.json").read_text())
    assert digits_train["test"]["accuracy"] > 0.5
    with running_server(digits, tmp_path, env=env) as s:
        x = np.arange(64, dtype=np.float32).reshape(1, 8, 8) % 17
        status, answer = http(f"{s.url}/v2/models/digits-dlpack/infer", {"inputs": [
            {"name": "input", "shape": [1, 8, 8], "datatype": "FP32", "data": x.ravel().tolist()}]})
    assert status == 200, answer
    import onnxruntime as ort

    want = ort.InferenceSession(str(digits / "model.onnx"), providers=["CPUExecutionProvider"]).run(["logits"], {"input": x})
    got = next(o["data"] for o in answer["outputs"] if o["name"] == "logits")
    np.testing.assert_allclose(got, want[0].ravel(), rtol=1e-6, atol=1e-6)
