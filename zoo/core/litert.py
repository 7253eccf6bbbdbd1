"""LiteRT (.tflite) files: the one place zoo opens one to run it, or reads and writes its metadata.

A .tflite zoo writes has one signature, `serving_default`, with the input `input` and zoo's
outputs (`logits` and `probabilities`, or `predictions`), a dynamic batch axis
(`shape_signature [-1, ...]`), and zoo's ONNX metadata keys (zoo.core.contract.META) as one
JSON document in the flatbuffer's `metadata` list under METADATA_NAME, so predict needs no
sibling file to name the classes. Runs with `ai_edge_litert.interpreter.Interpreter`
(PyPI `ai-edge-litert`); no TensorFlow is imported here.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from zoo.core.contract import DTYPES, META_SPEC, Contract, check_signature, read_class_names
from zoo.core.contract import read_metadata as decode_metadata
from zoo.core.errors import UsageError

METADATA_NAME = "zoo.metadata"  # the flatbuffer metadata entry holding {META key: JSON value}
SIGNATURE = "serving_default"
INSTALL = "pip install ai-edge-litert (or pip install -e '.[variants]')"


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        raise UsageError(f"LiteRT files need the LiteRT interpreter: {INSTALL}") from None
    return schema


def with_metadata(flatbuffer: bytes, meta: dict[str, str]) -> bytes:
    """The .tflite bytes with zoo's metadata ({key: JSON text}) added as one metadata buffer."""
    import flatbuffers

    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME.encode()] + [entry]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_metadata(path) -> dict[str, str]:
    """zoo's metadata of a .tflite ({key: JSON text}); {} for a file that has none."""
    schema = _schema()
    buf = Path(path).read_bytes()
    try:
        model = schema.Model.GetRootAs(buf, 0)
        for i in range(model.MetadataLength()):
            m = model.Metadata(i)
            if m.Name() == METADATA_NAME.encode():
                data = model.Buffers(m.Buffer()).DataAsNumpy()
                return json.loads(bytes(data).decode("utf-8"))
    except Exception as e:  # a flatbuffer that is not a TFLite model
        raise UsageError(f"{path}: not a LiteRT model ({type(e).__name__}); export it with `zoo export`") from None
    return {}


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null for a moment: the interpreter's C++ logs an INFO line there."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class Runner:
    """A LiteRT interpreter on one .tflite file, called like an onnxruntime session's run()."""

    def __init__(self, path, threads=1):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise UsageError(f"{path}: LiteRT files need the LiteRT interpreter: {INSTALL}") from None
        if not Path(path).is_file():
            raise UsageError(f"{path}: no such LiteRT file; run `zoo export RUN --variant litert` first")
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.runner = self.interpreter.get_signature_runner(SIGNATURE)
        except Exception as e:
            first = (str(e).splitlines() or [""])[0]
            raise UsageError(f"{path}: not a loadable LiteRT model ({first[:200]})") from None
        self.path = Path(path)
        self.inputs = self.runner.get_input_details()
        self.outputs = self.runner.get_output_details()

    def input(self) -> tuple[str, tuple, str]:
        """(name, shape without the batch axis, numpy dtype name) of the one input."""
        if len(self.inputs) != 1:
            raise UsageError(f"{self.path}: has inputs {list(self.inputs)}; zoo models take exactly one")
        name, d = next(iter(self.inputs.items()))
        return name, tuple(int(v) for v in d["shape_signature"][1:]), np.dtype(d["dtype"]).name

    def output_shapes(self) -> dict[str, tuple]:
        return {n: tuple(int(v) for v in d["shape_signature"][1:]) for n, d in self.outputs.items()}

    def run(self, names, x: np.ndarray) -> list[np.ndarray]:
        """The outputs `names` for the batch x."""
        if not getattr(self, "_warm", False):  # the first call prints "INFO: Created ... XNNPACK delegate"
            with _quiet_stderr():
                out = self.runner(**{self.input()[0]: x})
            self._warm = True
        else:
            out = self.runner(**{self.input()[0]: x})
        return [np.asarray(out[n]) for n in names]


def contract_of(path, runner: Runner | None = None) -> Contract:
    """The zoo.core.contract.Contract of a .tflite zoo wrote (its signature and metadata)."""
    runner = runner or Runner(path)
    name, shape, dtype = runner.input()
    shapes = runner.output_shapes()
    outputs = tuple(shapes)
    check_signature([name], outputs, path, allow_other_input_name=True)
    if dtype not in DTYPES:
        raise UsageError(f"{path}: input {name!r} is {dtype}; zoo models take uint8 or float32")
    meta = decode_metadata(read_metadata(path), path)
    spec = meta.get(META_SPEC) if isinstance(meta.get(META_SPEC), dict) else {}
    return Contract(name=str(spec.get("name") or Path(str(path)).parent.name or "model"), input_shape=shape,
                    input_dtype=dtype, outputs=outputs, output_widths=tuple(math.prod(s) for s in shapes.values()),
                    class_names=read_class_names(meta, path), metadata=meta,
                    output_shapes=tuple(shapes.values()))
