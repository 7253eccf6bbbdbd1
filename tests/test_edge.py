"""Requests refused at the edge of a real `zoo serve` before Triton allocates anything: absurd
shapes, NaN/Infinity literals, and bodies too large however they are sent (chunked too).
Traffic goes to 127.0.0.1 only, a few dozen requests in all."""

from __future__ import annotations

import http.client
import json
import os
import shutil

import pytest
from test_serve import HAVE_PYTRITON, MODELS, SPECS, running_server, zoo

pytestmark = pytest.mark.skipif(not HAVE_PYTRITON or shutil.which("nginx") is None and
                                not os.path.exists("/usr/sbin/nginx"),
                                reason="needs nvidia-pytriton and nginx (.ci/setup-serve.sh)")

MODEL = MODELS[0]
PATH = f"/v2/models/{MODEL}/infer"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("edge")
    done = zoo("run", SPECS / f"{MODEL}.json", "--epochs", 1, "--quiet", "--out", root / "exports")
    assert done.returncode == 0, done.stderr
    with running_server(root / "exports" / MODEL, root) as s:
        yield s


def post(server, body: bytes, headers=None, chunked=False):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        if chunked:
            conn.putrequest("POST", PATH)
            for k, v in {"Content-Type": "application/json", "Transfer-Encoding": "chunked", **(headers or {})}.items():
                conn.putheader(k, v)
            conn.endheaders()
            try:
                for i in range(0, len(body), 1 << 16):
                    piece = body[i:i + (1 << 16)]
                    conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                conn.send(b"0\r\n\r\n")
            except OSError:
                pass  # nginx answered and closed before the whole body was sent
        else:
            conn.request("POST", PATH, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        reply = conn.getresponse()
        return reply.status, reply.read().decode(errors="replace")
    finally:
        conn.close()


def request(shape, data, name="input", datatype="FP32") -> bytes:
    return json.dumps({"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}).encode()


def assert_alive(server):
    status, text = post(server, request([1, 8, 8], [0.0] * 64))
    assert status == 200, text
    assert server.proc.poll() is None


@pytest.mark.parametrize("shape,values", [
    ([1, 2147483647], 64),
    ([2147483647, 8, 8], 64),
    ([2**40, 8, 8], 64),
    ([2**32 + 1, 8, 8], 64),
    ([1, 8, 8, -1], 64),
    ([1.5, 8, 8], 64),
    ([0, 8, 8], 64),
    ([2, 8, 8], 64),
])
def test_a_shape_that_does_not_fit_its_data_is_a_400_and_the_server_goes_on(server, shape, values):
    status, text = post(server, request(shape, [0.0] * values))
    assert status == 400, text
    assert json.loads(text)["error"].startswith("unable to parse") and "shape" in json.loads(text)["error"]
    assert_alive(server)


def test_a_binary_request_claiming_more_values_than_its_bytes_is_a_400(server):
    header = json.dumps({"inputs": [{"name": "input", "shape": [2**40, 8, 8], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 256}}]}).encode()
    status, text = post(server, header + bytes(256), headers={"Inference-Header-Content-Length": str(len(header)),
                                                               "Content-Type": "application/octet-stream"})
    assert status == 400, text
    assert_alive(server)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "nan"])
def test_nan_and_infinity_literals_are_not_json_400(server, literal):
    body = request([1, 8, 8], [0.0] * 64).replace(b"0.0", literal.encode(), 1)
    status, text = post(server, body)
    assert status == 400, text
    assert json.loads(text)["error"].startswith("failed to parse") and "not valid JSON" in json.loads(text)["error"]
    assert_alive(server)


@pytest.mark.parametrize("size,chunked", [(100 * 1024**2, True), (4 * 1024**2, True), (100 * 1024**2, False)])
def test_a_body_over_the_limit_is_413_chunked_or_not(server, size, chunked):
    status, text = post(server, b"[" + b"0," * (size // 2) + b"0]", chunked=chunked)
    assert status == 413, text
    assert "request body over" in json.loads(text)["error"]
    assert_alive(server)


def test_a_chunked_body_under_the_limit_is_served(server):
    status, text = post(server, request([2, 8, 8], [0.5] * 128), chunked=True)
    assert status == 200, text
    assert json.loads(text)["outputs"][0]["shape"][0] == 2


# ----- gRPC: zoo's gRPC edge checks the same before Triton sees the request -----------------------

def grpc_infer(server, shape, raw: bytes | None = None, contents=None, datatype="FP32", stream=False):
    """(status name, details or output shapes) of one raw ModelInfer request over gRPC."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="input", datatype=datatype, shape=shape)
    if contents is not None:
        tensor.contents.fp32_contents.extend(contents)
    else:
        request.raw_input_contents.append(raw)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            if stream:
                answers = list(stub.ModelStreamInfer(iter([request]), timeout=60))
                return "OK", [a.error_message or list(a.infer_response.outputs[0].shape) for a in answers]
            return "OK", [list(o.shape) for o in stub.ModelInfer(request, timeout=60).outputs]
        except grpc.RpcError as e:
            return e.code().name, e.details()


ONE = bytes(256)  # one example's 64 float32 values


@pytest.mark.parametrize("shape,raw", [
    ([2**32 + 1, 8, 8], ONE),  # Triton 2.51 alone: OK with outputs (the product overflows to 64 values)
    ([2**32, 8, 8], ONE),  # Triton alone: INTERNAL
    ([2**40, 8, 8], ONE),
    ([2147483647, 8, 8], ONE),
    ([1, 2147483647], ONE),
    ([2, 8, 8], ONE),
    ([1, 8, 8], bytes(40)),
    ([1] * 17, ONE),
])
def test_grpc_absurd_shapes_are_invalid_argument_before_triton_and_the_server_goes_on(server, shape, raw):
    status, details = grpc_infer(server, shape, raw)
    assert status == "INVALID_ARGUMENT", (status, details)
    assert "shape" in details and str(shape[0]) in details, details
    assert grpc_infer(server, [1, 8, 8], ONE) == ("OK", [[1, 10], [1, 10]])
    assert_alive(server)


def test_grpc_typed_contents_and_streams_are_checked_too(server):
    status, details = grpc_infer(server, [2**32 + 1, 8, 8], contents=[0.0] * 64)
    assert status == "INVALID_ARGUMENT" and "carries 64 values" in details or "not an integer" in details, details
    assert grpc_infer(server, [1, 8, 8], contents=[0.5] * 64) == ("OK", [[1, 10], [1, 10]])
    status, details = grpc_infer(server, [2**32 + 1, 8, 8], ONE, stream=True)
    assert status == "INVALID_ARGUMENT" and "not an integer" in details, details
    assert grpc_infer(server, [1, 8, 8], ONE, stream=True) == ("OK", [[1, 10]])


def test_grpc_passes_triton_s_own_answers_through(server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        assert client.is_server_ready() and client.is_model_ready(MODEL)
        assert client.get_model_metadata(MODEL).inputs[0].name == "input"
        with pytest.raises(InferenceServerException) as e:  # Triton's own INVALID_ARGUMENT, word for word
            client.infer("no-such-model", [grpcclient.InferInput("input", [1, 8, 8], "FP32")])
        assert "no-such-model" in e.value.message()
    finally:
        client.close()


# ----- a dead stub: zoo serve stops the whole server (exit 10), never ready-while-half-dead -------

def _descendants(root: int) -> list[int]:
    from zoo.deploy.serve.process import _children

    children, found, todo = _children(), [], [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            found.append(pid)
            todo.append(pid)
    return found


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("victim", [0, -1])  # the first model instance's stub, or the last one's
def test_a_killed_stub_stops_the_server_with_exit_10_and_leaves_no_process(tmp_path_factory, victim):
    import signal
    import time

    from zoo.deploy.serve.process import stubs

    root = tmp_path_factory.mktemp("stub")
    done = zoo("run", SPECS / f"{MODEL}.json", "--epochs", 1, "--quiet", "--out", root / "exports")
    assert done.returncode == 0, done.stderr
    with running_server(root / "exports" / MODEL, root) as server:
        found = stubs(server.proc.pid)
        assert len(found) >= 2, found  # --instances 2 by default
        everything = _descendants(server.proc.pid)
        pid = sorted(found)[victim]
        os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would
        server.proc.wait(timeout=60)
        assert server.proc.returncode == 10, server.output()
        assert "stub process" in server.output() and str(pid) in server.output()
        deadline = time.monotonic() + 30
        while any(_running(p) for p in everything) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert not [p for p in everything if _running(p)], "no process of the server is left behind"
