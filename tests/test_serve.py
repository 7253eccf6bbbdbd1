"""zoo export --triton and zoo serve, against the real thing.

The model repository is parsed with Triton's own model-configuration protobuf and
checked dim by dim against the ONNX file. One real Triton server (PyTriton) is started
per module on 127.0.0.1 and free ports, queried with tritonclient over HTTP and gRPC and
with plain HTTP JSON; its outputs must equal onnxruntime's on test_data_set_0. The
model card's serve snippets are run against it. It is always stopped.
"""

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SPECS

from zoo.deploy.serve.edge import njs_module

pytest.importorskip("tritonclient.grpc.model_config_pb2",
                    reason="needs the serve extra: pip install -e '.[serve]'")
HAVE_PYTRITON = importlib.util.find_spec("pytriton") is not None
needs_pytriton = pytest.mark.skipif(
    not HAVE_PYTRITON, reason="needs nvidia-pytriton: pip install --no-deps 'nvidia-pytriton==0.7.0' "
                              "(it declares numpy<2; .ci/setup-serve.sh installs it)")
MODELS = ("digits-softmax", "digits-mlp")
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}


def zoo(*args, timeout=300, cwd=None):
    return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=timeout, cwd=cwd or ROOT, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Two tiny digits models (one epoch each), exported, in one shared Triton repository."""
    root = tmp_path_factory.mktemp("serve")
    for name in MODELS:
        done = zoo("run", SPECS / f"{name}.json", "--epochs", 1, "--quiet", "--out", root / "exports")
        assert done.returncode == 0, done.stderr
    repo = root / "repo"
    for name in MODELS:  # already exported: --triton only writes the repository
        done = zoo("export", root / "exports" / name, "--triton", repo)
        assert done.returncode == 0, done.stderr
        assert "wrote Triton model" in done.stdout and "model.onnx (" not in done.stdout, done.stdout
    return root


def onnx_dims(value):
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]


def test_config_pbtxt_matches_the_onnx_graph(work):
    import onnx
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc
    from tritonclient.utils import triton_to_np_dtype

    repo = work / "repo"
    assert sorted(p.name for p in repo.iterdir()) == sorted(MODELS)  # two runs share one repository
    for name in MODELS:
        config = text_format.Parse((repo / name / "config.pbtxt").read_text(), mc.ModelConfig())
        onnx_file = repo / name / "1" / "model.onnx"
        assert onnx_file.read_bytes() == (work / "exports" / name / "model.onnx").read_bytes()
        graph = onnx.load(str(onnx_file)).graph
        assert config.name == name and config.platform == "onnxruntime_onnx"
        assert config.max_batch_size > 0 and config.HasField("dynamic_batching")
        assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
        for declared, actual in ((config.input, graph.input), (config.output, graph.output)):
            assert [t.name for t in declared] == [v.name for v in actual]
            for t, v in zip(declared, actual):
                dims = onnx_dims(v)
                assert dims[0] == -1  # the batch axis, left out of Triton's dims
                assert list(t.dims) == dims[1:], (name, t.name)
                triton_type = mc.DataType.Name(t.data_type).removeprefix("TYPE_").replace("STRING", "BYTES")
                np_type = onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
                assert np.dtype(triton_to_np_dtype(triton_type)) == np_type, (name, t.name)
        labelled = {t.name: t.label_filename for t in config.output}
        assert labelled == {"logits": "", "probabilities": "labels.txt"}
        spec = json.loads((work / "exports" / name / "spec.json").read_text())
        assert (repo / name / "labels.txt").read_text().splitlines() == spec["model"]["class_names"]


def test_repository_refuses_a_symlink_and_bad_targets(work, tmp_path):
    from zoo.core.errors import UsageError
    from zoo.deploy.triton import write_repository

    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(UsageError, match="symbolic link"):
        write_repository(work / "exports" / MODELS[0] / "model.onnx", tmp_path / "link")
    assert list(real.iterdir()) == []  # nothing written through it
    with pytest.raises(UsageError, match="no such ONNX file"):
        write_repository(tmp_path / "missing.onnx", tmp_path / "repo")


def test_find_models_reads_runs_repositories_and_onnx_files(work):
    from zoo.core.errors import UsageError
    from zoo.deploy.serve.models import find_models
    from zoo.deploy.triton import MAX_BATCH_SIZE

    run = work / "exports" / MODELS[0]
    assert [(s.name, s.onnx) for s in find_models([run])] == [(MODELS[0], run / "model.onnx")]
    assert [s.name for s in find_models([run / "model.onnx"])] == [MODELS[0]]
    from_repo = find_models([work / "repo"])
    assert sorted(s.name for s in from_repo) == sorted(MODELS)
    assert {s.max_batch_size for s in from_repo} == {MAX_BATCH_SIZE}
    with pytest.raises(UsageError, match="two models are named digits-softmax"):
        find_models([run, work / "repo"])


@pytest.mark.skipif(not (shutil.which("nginx") or os.access("/usr/sbin/nginx", os.X_OK)),
                    reason="needs nginx (apt-get install nginx-light)")
@pytest.mark.parametrize("with_njs", [False, True])
def test_the_edge_config_passes_nginx_t(tmp_path, with_njs):
    """The nginx.conf zoo serve writes from its templates, as nginx itself reads it (`nginx -t`)."""
    from zoo.deploy.serve import edge

    njs = edge.njs_module() if with_njs else None
    if with_njs and njs is None:
        pytest.skip("needs nginx's njs module (apt-get install libnginx-mod-http-js)")
    if njs:
        shutil.copy(ROOT / "zoo" / "deploy" / "assets" / edge.NJS_SCRIPT, tmp_path)
    text = edge.config(tmp_path, "127.0.0.1", 8000, 8123, njs)
    assert "$" not in text.replace("infer$ {", "").replace(")$ $1 ", "")  # every placeholder filled in
    assert ("js_content edge.infer;" in text) == with_njs and f"client_max_body_size {edge.MAX_BODY};" in text
    (tmp_path / edge.CONFIG).write_text(text)
    done = subprocess.run([edge.nginx(), "-t", "-p", str(tmp_path), "-e", str(tmp_path / edge.ERROR_LOG),
                           "-c", str(tmp_path / edge.CONFIG)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_cli_bad_input_is_one_line_and_exit_2(work, tmp_path):
    unexported = tmp_path / "unexported"
    unexported.mkdir()
    shutil.copy(work / "exports" / MODELS[0] / "spec.json", unexported)
    cases = [(("serve", tmp_path / "missing"), "no such run folder"),
             (("serve", unexported), "run `zoo export"),
             (("serve", tmp_path), "neither a run folder"),
             (("serve",), "name at least one run folder"),
             (("export", tmp_path / "missing", "--triton"), "no such run folder")]
    for args, message in cases:
        done = zoo(*args, timeout=60)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], (args, done.stderr)


def test_export_triton_defaults_to_the_runs_folder(work):
    run = work / "exports" / MODELS[0]
    done = zoo("export", run, "--triton", timeout=120)
    assert done.returncode == 0, done.stderr
    assert (run / "triton" / MODELS[0] / "config.pbtxt").is_file()
    assert (run / "triton" / MODELS[0] / "1" / "model.onnx").read_bytes() == (run / "model.onnx").read_bytes()
    assert not list(run.glob("triton/**/.*.tmp*"))  # no temporary file left behind


# ----- the real server -----------------------------------------------------------------------

def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    with contextlib.ExitStack() as stack:
        for s in socks:
            stack.enter_context(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def http(url, body=None, timeout=30):
    """(status, JSON or text) of one plain HTTP request."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    with contextlib.suppress(ValueError):
        return status, json.loads(text)
    return status, text


class Server:
    def __init__(self, proc, port, grpc_port, metrics_port, log):
        self.proc, self.port, self.grpc_port, self.metrics_port, self.log = proc, port, grpc_port, metrics_port, log

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def output(self):
        return Path(self.log).read_text()


@contextlib.contextmanager
def running_server(target, tmp, *extra, env=None):
    port, grpc_port, metrics_port = free_ports(3)
    log = tmp / f"serve-{port}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "zoo", "serve", str(target), "--port", str(port),
                                 "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port), *extra],
                                stdout=out, stderr=subprocess.STDOUT, env={**ENV, **(env or {})},
                                stdin=subprocess.DEVNULL, cwd=ROOT)
    server = Server(proc, port, grpc_port, metrics_port, log)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"zoo serve exited {proc.returncode}: {server.output()}"
            with contextlib.suppress(OSError):
                if http(server.url + "/v2/health/ready", timeout=2)[0] == 200 and "stops the server" in server.output():
                    break
            assert time.monotonic() < deadline, f"not ready in 90 s: {server.output()}"
            time.sleep(0.3)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def server(work):
    if not HAVE_PYTRITON:
        pytest.skip(needs_pytriton.kwargs["reason"])
    with running_server(work / "repo", work) as s:
        yield s


def load_test_data(work, name):
    import onnx
    from onnx import numpy_helper

    folder = work / "exports" / name / "test_data_set_0"
    tensors = []
    for f in sorted(folder.glob("*.pb")):
        t = onnx.TensorProto()
        t.ParseFromString(f.read_bytes())
        tensors.append((t.name, numpy_helper.to_array(t)))
    return tensors[0][1], dict(tensors[1:])


def onnxruntime_outputs(work, name, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(work / "exports" / name / "model.onnx"), providers=["CPUExecutionProvider"])
    return dict(zip(["logits", "probabilities"], session.run(["logits", "probabilities"], {"input": x})))


def infer_grpc(server, name, x, datatype="FP32"):
    """tritonclient's gRPC answer to one request: {output: array}."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        inp = grpcclient.InferInput("input", list(x.shape), datatype)
        inp.set_data_from_numpy(x)
        result = client.infer(name, [inp])
        assert client.is_model_ready(name)
    finally:
        client.close()
    return {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}


def infer_json(server, name, x, datatype="FP32"):
    """The answer to one request in the protocol's JSON, over plain HTTP: {output: array}."""
    status, body = http(f"{server.url}/v2/models/{name}/infer", {"inputs": [
        {"name": "input", "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist()}]})
    assert status == 200, body
    return {o["name"]: np.array(o["data"], dtype=np.float32).reshape(o["shape"]) for o in body["outputs"]}


def assert_outputs_equal(got, expected):
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-6, atol=1e-7)


@needs_pytriton
@pytest.mark.parametrize("name", MODELS)
def test_outputs_equal_onnxruntime_over_http_grpc_and_json(server, work, name):
    import tritonclient.http as httpclient

    x, stored = load_test_data(work, name)
    expected = onnxruntime_outputs(work, name, x)
    for k in stored:
        np.testing.assert_allclose(expected[k], stored[k], rtol=1e-5, atol=1e-6)

    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer(name, [inp])
        assert_outputs_equal({k: result.as_numpy(k) for k in expected}, expected)
    finally:
        client.close()
    assert_outputs_equal(infer_grpc(server, name, x), expected)
    assert_outputs_equal(infer_json(server, name, x), expected)


@needs_pytriton
def test_batched_requests_each_get_their_own_answer(server, work):
    """Concurrent requests of 1 to 5 examples, batched together by Triton and run as one
    onnxruntime batch: every request's answer is its own rows."""
    from concurrent.futures import ThreadPoolExecutor

    import tritonclient.grpc as grpcclient

    rng = np.random.default_rng(7)
    xs = [rng.random((1 + i % 5, 8, 8), dtype=np.float32) * 16 for i in range(48)]
    expected = [onnxruntime_outputs(work, "digits-softmax", x) for x in xs]
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")

    def ask(x):
        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return client.infer("digits-softmax", [inp])

    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(ask, xs))
    finally:
        client.close()
    for result, want in zip(results, expected):
        assert_outputs_equal({k: result.as_numpy(k) for k in want}, want)


@needs_pytriton
def test_requested_outputs_and_the_classification_extension(server, work):
    import tritonclient.http as httpclient

    x, _ = load_test_data(work, "digits-softmax")
    probabilities = onnxruntime_outputs(work, "digits-softmax", x)["probabilities"]
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        only = client.infer("digits-softmax", [inp], outputs=[httpclient.InferRequestedOutput("probabilities")])
        assert [o["name"] for o in only.get_response()["outputs"]] == ["probabilities"]
        top = client.infer("digits-softmax", [inp],
                           outputs=[httpclient.InferRequestedOutput("probabilities", class_count=2)]).as_numpy("probabilities")
    finally:
        client.close()
    # "score:index:label" from labels.txt, best first
    best = np.argsort(-probabilities, axis=1)[:, :2]
    for row, want in zip(top, best):
        got = [entry.decode().split(":") for entry in row]
        assert [int(g[1]) for g in got] == list(want) and [g[2] for g in got] == [str(i) for i in want]
        assert float(got[0][0]) >= float(got[1][0])


@needs_pytriton
def test_a_uint8_fashion_mnist_model_is_served_exactly(tmp_path, datasets):
    """The catalog's Fashion-MNIST models take raw uint8 pixels: served over gRPC and JSON,
    their test_data_set_0 answers equal onnxruntime's."""
    done = zoo("run", SPECS / "fashion-mnist-softmax.json", "--epochs", 1, "--quiet", "--out", tmp_path / "exports",
               "--data-dir", datasets)
    assert done.returncode == 0, done.stderr
    x, _ = load_test_data(tmp_path, "fashion-mnist-softmax")
    assert x.dtype == np.uint8
    expected = onnxruntime_outputs(tmp_path, "fashion-mnist-softmax", x)
    with running_server(tmp_path / "exports" / "fashion-mnist-softmax", tmp_path) as server:
        assert_outputs_equal(infer_grpc(server, "fashion-mnist-softmax", x, "UINT8"), expected)
        assert_outputs_equal(infer_json(server, "fashion-mnist-softmax", x, "UINT8"), expected)


@needs_pytriton
def test_health_metadata_and_metrics(server):
    assert http(server.url + "/v2/health/live")[0] == 200
    assert http(server.url + "/v2/health/ready")[0] == 200
    status, meta = http(server.url + "/v2/models/digits-softmax")
    assert status == 200
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 8, 8]}]
    assert [(o["name"], o["shape"]) for o in meta["outputs"]] == [("logits", [-1, 10]), ("probabilities", [-1, 10])]
    assert http(server.url + "/v2/models/digits-softmax/ready")[0] == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert re.search(r'nv_inference_request_success\{model="digits-softmax"', metrics)
    out = server.output()
    assert f"localhost:{server.port}" in out and f"localhost:{server.grpc_port}" in out and "curl -s" in out


def good_request(server):
    status, body = http(f"{server.url}/v2/models/digits-softmax/infer", {"inputs": [
        {"name": "input", "shape": [1, 8, 8], "datatype": "FP32", "data": [1.0] * 64}]})
    assert status == 200, body
    assert len(body["outputs"]) == 2


def request(name="input", shape=(1, 8, 8), datatype="FP32", data=None):
    n = int(np.prod(shape))
    return {"inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": data or [0] * n}]}


BAD_REQUESTS = {
    "wrong input name": (request(name="pixels"), "unexpected inference input 'pixels'"),
    "wrong dtype": (request(datatype="UINT8"), "data-type is 'UINT8', but model 'digits-softmax' expects 'FP32'"),
    "wrong shape": (request(shape=(1, 64)), "unexpected shape for input 'input'"),
    "batch over the limit": (request(shape=(65, 8, 8)), "batch-size must be <= 64"),
}


@needs_pytriton
@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_request_is_a_400_and_the_server_goes_on(server, case):
    body, message = BAD_REQUESTS[case]
    status, answer = http(f"{server.url}/v2/models/digits-softmax/infer", body)
    assert status == 400, answer
    assert message in answer["error"], answer
    good_request(server)


@needs_pytriton
def test_bad_grpc_requests_are_invalid_argument_and_the_server_goes_on(server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        for x, datatype, message in ((np.zeros((1, 8, 8), np.uint8), "UINT8", "expects 'FP32'"),
                                     (np.zeros((65, 8, 8), np.float32), "FP32", "batch-size must be <= 64"),
                                     (np.zeros((100_000, 8, 8), np.float32), "FP32", "batch-size must be <= 64")):
            inp = grpcclient.InferInput("input", list(x.shape), datatype)
            inp.set_data_from_numpy(x)
            with pytest.raises(InferenceServerException) as e:
                client.infer("digits-softmax", [inp])
            assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and message in e.value.message()
    finally:
        client.close()
    good_request(server)


MALFORMED = {
    "malformed JSON": b'{"inputs": [{"name": "input", "shape": [1, 8, 8], "datatype": "FP32", "data": [1, 2',
    "data not matching its shape": json.dumps(request(data=[1, 2])).encode(),
}


@needs_pytriton
@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_request_is_a_400_and_the_server_goes_on(server, case):
    if not ("REST through nginx" in server.output() and njs_module()):
        pytest.skip("Triton 2.51 answers requests it cannot parse with a 500; zoo serve's nginx edge makes them "
                    "400 with nginx's njs module: apt-get install nginx-light libnginx-mod-http-js "
                    "(.ci/setup-serve.sh does)")
    status, answer = http(f"{server.url}/v2/models/digits-softmax/infer", MALFORMED[case])
    assert status == 400, answer
    assert answer["error"].lower().startswith(("failed to parse", "unable to parse")), answer  # Triton's own words
    good_request(server)


@needs_pytriton
def test_the_edge_changes_no_other_answer(server):
    """The njs correction touches parse errors only: a good request's answer, binary outputs and
    headers included, and Triton's other errors come back as Triton gave them."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        x = np.arange(2 * 64, dtype=np.float32).reshape(2, 8, 8) / 128
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        result = client.infer("digits-softmax", [inp], outputs=[httpclient.InferRequestedOutput(o, binary_data=True)
                                                                 for o in ("logits", "probabilities")])
        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (2, 10) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    finally:
        client.close()
    status, answer = http(f"{server.url}/v2/models/no-such-model/infer", request())
    assert 400 <= status < 500 and "no-such-model" in answer["error"], answer
    status, answer = http(f"{server.url}/v2/models/digits-softmax/versions/7/infer", request())
    assert 400 <= status < 500 and "version" in answer["error"].lower(), answer


@needs_pytriton
@pytest.mark.skipif(not (shutil.which("nginx") or os.access("/usr/sbin/nginx", os.X_OK)),
                    reason="needs nginx in front of Triton 2.51, which dies on a body of ~4 MiB: "
                           "apt-get install nginx-light (.ci/setup-serve.sh does)")
def test_huge_body_is_a_413_and_the_server_goes_on(server):
    body = request()
    huge = json.dumps(body).encode()[:-3] + b" " * (8 * 1024 * 1024) + b"]}"  # valid JSON, 8 MiB
    status, answer = http(f"{server.url}/v2/models/digits-softmax/infer", huge)
    assert status == 413 and "request body over" in answer["error"], answer
    good_request(server)
    assert "REST through nginx" in server.output()


@needs_pytriton
def test_card_snippets_run_against_the_server(server, work):
    card = (work / "exports" / "digits-softmax" / "card.md").read_text()
    section = card[card.index("## Serve it"):]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    here = f"localhost:{server.port}"
    curl = next(code for lang, code in blocks if lang == "bash" and code.startswith("curl "))
    python = next(code for lang, code in blocks if lang == "python" and "tritonclient" in code)
    assert "zoo serve exports/digits-softmax" in section and "--model-repository" in section
    if shutil.which("curl"):
        done = subprocess.run(["bash", "-c", curl.replace("localhost:8000", here)], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert [o["name"] for o in answer["outputs"]] == ["logits", "probabilities"], answer
        zeros = onnxruntime_outputs(work, "digits-softmax", np.zeros((1, 8, 8), np.float32))
        for o in answer["outputs"]:
            np.testing.assert_allclose(np.array(o["data"], np.float32), zeros[o["name"]].ravel(), rtol=1e-6, atol=1e-7)
    done = subprocess.run([sys.executable, "-c", python.replace("localhost:8000", here)], capture_output=True,
                          text=True, timeout=60, env=ENV)
    assert done.returncode == 0, done.stderr
    printed = np.array([float(v) for v in re.findall(r"[-+0-9.e]+", done.stdout)], dtype=np.float32)
    expected = onnxruntime_outputs(work, "digits-softmax", np.zeros((1, 8, 8), np.float32))["probabilities"]
    np.testing.assert_allclose(printed, expected.ravel(), atol=1e-6)


@needs_pytriton
def test_port_in_use_is_one_line(server, work):
    grpc_port, metrics_port = free_ports(2)
    done = zoo("serve", work / "exports" / "digits-softmax", "--port", server.port, "--grpc-port", grpc_port,
               "--metrics-port", metrics_port, timeout=60)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"Error: 127.0.0.1:{server.port} is in use; choose another --port"], done.stderr


def descendants(pid):
    """(pid, command name) of every process under `pid`, from /proc."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{parent}/task").iterdir():
                for child in (task / "children").read_text().split():
                    name = Path(f"/proc/{child}/comm").read_text().strip()
                    found.append((int(child), name))
                    todo.append(int(child))
    return found


@needs_pytriton
@pytest.mark.skipif(not (shutil.which("nginx") or os.access("/usr/sbin/nginx", os.X_OK)) or not Path("/proc").is_dir(),
                    reason="needs nginx (apt-get install nginx-light) and /proc")
def test_a_dead_part_stops_the_whole_server_with_an_error(work, tmp_path):
    with running_server(work / "repo", tmp_path) as s:
        parts = descendants(s.proc.pid)
        names = {name for _, name in parts}
        assert "nginx" in names and "tritonserver" in names, parts
        master = next(pid for pid, name in parts if name == "nginx" and
                      Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(s.proc.pid))
        os.kill(master, signal.SIGKILL)
        assert s.proc.wait(40) == 10, s.output()  # ServerError
        assert "Error: nginx stopped unexpectedly" in s.output(), s.output()
        deadline = time.monotonic() + 30  # the stubs notice their server is gone by polling
        while (alive := [p for p in parts if Path(f"/proc/{p[0]}").exists()
                         and "Z" not in Path(f"/proc/{p[0]}/stat").read_text().split()[2]]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert alive == [], alive  # Triton, its stubs and nginx all went with it


@needs_pytriton
def test_sigterm_stops_the_server_cleanly(server):
    """Runs last in this module: it stops the module's server."""
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0, server.output()
    assert server.output().rstrip().endswith("stopped")
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url + "/v2/health/live", timeout=2)


@needs_pytriton
def test_zoo_serve_variant_serves_the_verified_int8_file(work, tmp_path):
    """zoo serve RUN --variant int8 answers with the int8 file's outputs; a variant it cannot load is exit 2."""
    import onnxruntime as ort

    name = MODELS[0]
    run = tmp_path / "run"
    shutil.copytree(work / "exports" / name, run)
    done = zoo("export", run, "--variant", "int8")
    assert done.returncode == 0, done.stderr
    x, _ = load_test_data(work, name)
    session = ort.InferenceSession(str(run / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    expected = dict(zip(["logits", "probabilities"], session.run(["logits", "probabilities"], {"input": x})))
    assert not np.allclose(expected["logits"], onnxruntime_outputs(work, name, x)["logits"], atol=1e-6)  # int8's own
    with running_server(run, tmp_path, "--variant", "int8") as server:
        assert_outputs_equal(infer_grpc(server, name, x), expected)
    for variant, words in (("litert", "load ONNX files"), ("fp16", "no such variant")):
        done = zoo("serve", run, "--variant", variant)
        assert done.returncode == 2 and words in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
