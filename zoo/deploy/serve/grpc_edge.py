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

import asyncio
import contextlib
import functools
import math
import threading

from zoo.core.errors import ServerError, UsageError

SERVICE = "/inference.GRPCInferenceService/"
INFER, STREAM = SERVICE + "ModelInfer", SERVICE + "ModelStreamInfer"
SERVER_STREAMING = {"/grpc.health.v1.Health/Watch"}
MAX_DIMS = 16
MAX_DIM = 2**31 - 1
MAX_VALUES = 2**31 - 1
MAX_MESSAGE = 64 * 1024 * 1024  # a larger request is RESOURCE_EXHAUSTED (Triton's own limit is 2 GiB)
SIZES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2,
         "UINT32": 4, "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8}
CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
            "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
            "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
            "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def _data_problem(tensor, raw: list, i: int, values: int) -> str | None:
    """Why the data input `i` carries cannot hold the `values` of its shape, or None (also where it
    carries none here: shared memory, a missing raw input or a datatype Triton will refuse name themselves)."""
    dtype = tensor.datatype
    if raw:
        if i >= len(raw):
            return None
        size = len(raw[i])  # exactly the values' bytes; BYTES: at least 4 a value (its length)
        fits = values * SIZES[dtype] == size if dtype in SIZES else values * (4 if dtype == "BYTES" else 1) <= size
        what = f"{size} bytes of {dtype}"
    else:
        field = CONTENTS.get(dtype)
        if not (field and tensor.HasField("contents")):
            return None
        count = len(getattr(tensor.contents, field))
        fits, what = values == count, f"{count} values"
    return None if fits else f"input {tensor.name!r}: shape {list(tensor.shape)} holds {values} values, but the request carries {what}"


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
        problem = _data_problem(tensor, raw, i, values)
        if problem:
            return problem
    return None


def _timeout(context) -> float | None:
    """The caller's deadline, as seconds left; None for none (grpc reports that as infinity, which it refuses)."""
    left = context.time_remaining()
    return left if left is not None and math.isfinite(left) and left < 1e9 else None


def _problem(raw: bytes) -> str | None:
    from google.protobuf.message import DecodeError
    from tritonclient.grpc import service_pb2

    try:
        return request_problem(service_pb2.ModelInferRequest.FromString(raw))
    except DecodeError:  # not a ModelInferRequest: Triton says so in its own words
        return None


def _metadata(context):
    return [(m.key, m.value) for m in context.invocation_metadata() or ()
            if not m.key.startswith((":", "grpc-")) and m.key != "user-agent"]


class _Handler:
    """The generic handler (asyncio): every method forwarded to Triton's channel as bytes, awaited."""

    def __init__(self, grpc, channel):
        self.grpc, self.channel = grpc, channel

    def service(self, details):
        method, grpc = details.method, self.grpc
        if method == STREAM:
            return grpc.stream_stream_rpc_method_handler(self._stream)
        if method in SERVER_STREAMING:
            return grpc.unary_stream_rpc_method_handler(functools.partial(self._watch, method))
        return grpc.unary_unary_rpc_method_handler(functools.partial(self._unary, method))  # async: grpc awaits it

    async def _unary(self, method, request: bytes, context):
        problem = _problem(request) if method == INFER else None
        if problem:
            await context.abort(self.grpc.StatusCode.INVALID_ARGUMENT, problem)
        try:
            return await self.channel.unary_unary(method)(request, metadata=_metadata(context), timeout=_timeout(context))
        except self.grpc.RpcError as e:
            await context.abort(e.code(), e.details() or "")

    async def _watch(self, method, request: bytes, context):
        try:
            async for answer in self.channel.unary_stream(method)(request, metadata=_metadata(context),
                                                                  timeout=_timeout(context)):
                yield answer
        except self.grpc.RpcError as e:
            await context.abort(e.code(), e.details() or "")

    async def _stream(self, requests, context):
        refused = []

        async def checked():  # a bad message ends the stream upstream; then the call is refused
            async for raw in requests:
                problem = _problem(raw)
                if problem:
                    refused.append(problem)
                    return
                yield raw

        try:
            async for answer in self.channel.stream_stream(STREAM)(checked(), metadata=_metadata(context),
                                                                   timeout=_timeout(context)):
                yield answer
        except self.grpc.RpcError as e:
            if not refused:
                await context.abort(e.code(), e.details() or "")
        if refused:
            await context.abort(self.grpc.StatusCode.INVALID_ARGUMENT, refused[0])


class Edge:
    """The edge's asyncio gRPC server, on an event loop in a thread of its own."""

    def __init__(self, grpc, address: str, triton_port: int):
        self.grpc, self.address, self.triton_port = grpc, address, triton_port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="zoo-grpc-edge", daemon=True)
        self.server = None

    async def _start(self) -> int:
        limits = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
        channel = self.grpc.aio.insecure_channel(f"127.0.0.1:{self.triton_port}", options=limits)
        self.server = self.grpc.aio.server(options=limits)
        self.server.add_generic_rpc_handlers([_Handler(self.grpc, channel)])
        try:
            bound = self.server.add_insecure_port(self.address)
        except RuntimeError:
            return 0
        await self.server.start()
        return bound

    def start(self) -> None:
        self.thread.start()
        if not asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30):
            self.stop()
            raise ServerError(f"the gRPC edge could not listen on {self.address}; choose another --grpc-port")

    def stop(self) -> None:
        if self.server is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self.server.stop(1), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def start(host: str, port: int, triton_port: int) -> Edge:
    """The edge listening on host:port, forwarding to Triton's gRPC on the loopback port `triton_port`.

    Raises:
        UsageError: grpcio is not installed (it comes with the serve extra's tritonclient[grpc]).
        ServerError: the port could not be bound.
    """
    try:
        import grpc
        import grpc.aio  # noqa: F401
    except ImportError:
        raise UsageError("zoo serve's gRPC edge needs grpcio: pip install -e '.[serve]'") from None
    edge = Edge(grpc, f"[{host}]:{port}" if ":" in host else f"{host}:{port}", triton_port)
    edge.start()
    return edge


def stop(edge: Edge) -> None:
    edge.stop()
