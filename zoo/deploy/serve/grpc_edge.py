"""zoo serve's gRPC edge: Triton's gRPC service, passed through, except requests that must never reach it.

Triton 2.51 sizes its buffers from an input's `shape` and multiplies the dims in 64 bits
unchecked: dims [2**32 + 1, 8, 8] with one example's bytes were answered OK with outputs
(the product overflowed to the size of the data), [2**32, 8, 8] reached the model. The REST
edge (nginx + serve_edge.js) refuses such requests; this does the same for gRPC, as a
generic proxy on `--grpc-port` in front of Triton's own gRPC port on the loopback.

Every call is forwarded as bytes, unchanged, with its metadata and deadline, and Triton's
answer (or its status and message) comes back unchanged. A ModelInfer request (and each
message of a ModelStreamInfer stream) is parsed first; it is refused with INVALID_ARGUMENT
and a message, before Triton sees it, when an input has more than 16 dims, a dim outside
[0, 2**31 - 1], more than 2**31 - 1 values in all, or a shape that does not fit the data
the request carries (raw bytes: the shape's values times the datatype's size; BYTES: at
least 4 bytes a value; typed contents: the shape's values exactly).
"""

from __future__ import annotations

import math
from concurrent import futures

from zoo.core.errors import ServerError, UsageError

SERVICE = "/inference.GRPCInferenceService/"
INFER, STREAM = SERVICE + "ModelInfer", SERVICE + "ModelStreamInfer"
SERVER_STREAMING = {"/grpc.health.v1.Health/Watch"}
MAX_DIMS = 16
MAX_DIM = 2**31 - 1
MAX_VALUES = 2**31 - 1
MAX_MESSAGE = 64 * 1024 * 1024  # a larger request is RESOURCE_EXHAUSTED (Triton's own limit is 2 GiB)
WORKERS = 64  # calls in flight at once; each holds a thread while Triton answers
SIZES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2,
         "UINT32": 4, "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8}
CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
            "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
            "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
            "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def _carried(tensor, raw: list, i: int) -> tuple[int, str] | None:
    """(how many values the data holds at most, what it is) for input `i`; None where it carries none here."""
    dtype = tensor.datatype
    if raw:
        if i >= len(raw):
            return None  # Triton names the missing raw input
        size = len(raw[i])
        return (size // 4 if dtype == "BYTES" else size // SIZES.get(dtype, 1)), f"{size} bytes of {dtype}"
    field = CONTENTS.get(dtype)
    if field and tensor.HasField("contents"):
        return len(getattr(tensor.contents, field)), f"{len(getattr(tensor.contents, field))} values"
    return None  # shared memory, or a datatype Triton will refuse


def request_problem(request) -> str | None:
    """Why a ModelInferRequest must not reach Triton, or None."""
    raw = list(request.raw_input_contents)
    for i, tensor in enumerate(request.inputs):
        shape, name = list(tensor.shape), repr(tensor.name)
        if len(shape) > MAX_DIMS:
            return f"unable to parse 'shape' of input {name}: expected at most {MAX_DIMS} dims, received {len(shape)}"
        if any(d < 0 or d > MAX_DIM for d in shape):
            return f"unable to parse 'shape' of input {name}: {shape} has a dim that is not an integer in [0, {MAX_DIM}]"
        values = math.prod(shape)
        if values > MAX_VALUES:
            return f"input {name}: shape {shape} holds {values} values, more than {MAX_VALUES}"
        carried = _carried(tensor, raw, i)
        if carried is None:
            continue
        count, what = carried
        if raw and tensor.datatype in SIZES:
            bad = values * SIZES[tensor.datatype] != len(raw[i])
        else:  # BYTES: at least 4 bytes a value; typed contents: exactly the shape's values
            bad = values > count if raw else values != count
        if bad:
            return f"input {name}: shape {shape} holds {values} values, but the request carries {what}"
    return None


def _timeout(context) -> float | None:
    """The caller's deadline, as seconds left; None for none (grpc reports that as infinity, which it refuses)."""
    left = context.time_remaining()
    return left if left is not None and math.isfinite(left) and left < 1e9 else None


class _Edge:
    """The generic handler: every method forwarded to Triton's channel as bytes."""

    def __init__(self, channel):
        import grpc

        self.grpc, self.channel = grpc, channel

    def service(self, details):
        method, grpc = details.method, self.grpc
        if method == STREAM:
            return grpc.stream_stream_rpc_method_handler(self._stream)
        if method in SERVER_STREAMING:
            return grpc.unary_stream_rpc_method_handler(lambda request, context: self._watch(method, request, context))
        return grpc.unary_unary_rpc_method_handler(lambda request, context: self._unary(method, request, context))

    @staticmethod
    def _problem(raw: bytes) -> str | None:
        from google.protobuf.message import DecodeError
        from tritonclient.grpc import service_pb2

        try:
            return request_problem(service_pb2.ModelInferRequest.FromString(raw))
        except DecodeError:  # not a ModelInferRequest: Triton says so in its own words
            return None

    @staticmethod
    def _metadata(context):
        return [(m.key, m.value) for m in context.invocation_metadata()
                if not m.key.startswith((":", "grpc-")) and m.key != "user-agent"]

    def _unary(self, method, request: bytes, context):
        if method == INFER:
            problem = self._problem(request)
            if problem:
                context.abort(self.grpc.StatusCode.INVALID_ARGUMENT, problem)
        try:
            return self.channel.unary_unary(method)(request, metadata=self._metadata(context),
                                                    timeout=_timeout(context))
        except self.grpc.RpcError as e:
            context.abort(e.code(), e.details() or "")

    def _watch(self, method, request: bytes, context):
        try:
            yield from self.channel.unary_stream(method)(request, metadata=self._metadata(context),
                                                         timeout=_timeout(context))
        except self.grpc.RpcError as e:
            context.abort(e.code(), e.details() or "")

    def _stream(self, requests, context):
        refused = []

        def checked():  # a bad message ends the stream upstream; then the call is refused
            for raw in requests:
                problem = self._problem(raw)
                if problem:
                    refused.append(problem)
                    return
                yield raw

        try:
            yield from self.channel.stream_stream(STREAM)(checked(), metadata=self._metadata(context),
                                                          timeout=_timeout(context))
        except self.grpc.RpcError as e:
            context.abort(*((self.grpc.StatusCode.INVALID_ARGUMENT, refused[0]) if refused else (e.code(), e.details() or "")))
        if refused:
            context.abort(self.grpc.StatusCode.INVALID_ARGUMENT, refused[0])


def start(host: str, port: int, triton_port: int):
    """The edge listening on host:port, forwarding to Triton's gRPC on the loopback; a grpc.Server.

    Raises:
        UsageError: grpcio is not installed (it comes with the serve extra's tritonclient[grpc]).
        ServerError: the port could not be bound.
    """
    try:
        import grpc
    except ImportError:
        raise UsageError("zoo serve's gRPC edge needs grpcio: pip install -e '.[serve]'") from None
    limits = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
    channel = grpc.insecure_channel(f"127.0.0.1:{triton_port}", options=limits)
    edge = _Edge(channel)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="zoo-grpc-edge"),
                         handlers=[_Handler(edge)], options=limits, maximum_concurrent_rpcs=WORKERS * 4)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise ServerError(f"the gRPC edge could not listen on {address}; choose another --grpc-port")
    server.start()
    return server


class _Handler:
    """grpc.GenericRpcHandler without importing grpc at module level."""

    def __init__(self, edge: _Edge):
        self.edge = edge

    def service(self, details):
        return self.edge.service(details)


def stop(server) -> None:
    server.stop(grace=1).wait(5)
