"""The Triton Python-backend model `zoo serve` runs: onnxruntime inside Triton's backend stub.

`zoo serve` copies this file to `<repo>/<name>/1/model.py` beside the run's `model.onnx`
and a config.pbtxt with `backend: "python"`; Triton's Python backend imports it in its
stub process (one per model instance), never zoo. It reads the tensor names from the
model's configuration (which zoo.deploy.triton generated from zoo.core.contract), so nothing here
spells them. Triton has already checked every request against that configuration
(name, datatype, shape, batch size) before `execute` sees it.

Why not PyTriton's `bind()`: a bound callable runs in the parent process, so each request
crosses the stub, ZeroMQ and PyTriton's shared-memory tensor store (a process of its own)
twice. Here the batch is run where Triton hands it over (benchmarks/RESULTS.md).
"""

import json
import os
import sys

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

MODEL_FILE = "model.onnx"  # = zoo.deploy.triton.MODEL_FILE; this file imports nothing of zoo's
# The stub bundled with nvidia-pytriton 0.7 predates NumPy 2: its NumPy conversions (as_numpy,
# Tensor(name, array)) see 0-byte dtypes under NumPy 2. DLPack needs no NumPy ABI.
NUMPY_2 = int(np.__version__.split(".")[0]) >= 2


def _quiet_capsule_warning():
    """The stub renames a consumed DLPack capsule 'used_dlpack', where NumPy's deleter expects
    'used_dltensor'; the resulting 'unraisable' ValueError is noise, not a fault."""
    previous = sys.unraisablehook

    def hook(unraisable):
        if not (isinstance(unraisable.exc_value, ValueError) and "PyCapsule" in str(unraisable.exc_value)):
            previous(unraisable)

    sys.unraisablehook = hook


def to_numpy(tensor):
    return np.from_dlpack(tensor) if NUMPY_2 else tensor.as_numpy()


def to_tensor(name, array):
    array = np.ascontiguousarray(array)
    return pb_utils.Tensor.from_dlpack(name, array.__dlpack__()) if NUMPY_2 else pb_utils.Tensor(name, array)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.inputs = [i["name"] for i in config["input"]]
        self.strings = {i["name"] for i in config["input"] if i["data_type"] == "TYPE_STRING"}
        self.outputs = [o["name"] for o in config["output"]]
        options = ort.SessionOptions()
        # One thread per instance, and no spinning: Triton runs several instances (processes)
        # at once, and onnxruntime's default pool spins a thread per core between runs.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = os.path.join(args["model_repository"], args["model_version"], MODEL_FILE)
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        if NUMPY_2:
            _quiet_capsule_warning()

    def read(self, request, name):
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if name in self.strings:  # BYTES: an object array of bytes; onnxruntime takes str
            return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(tensor.as_numpy())
        return to_numpy(tensor)

    def execute(self, requests):
        """One run of the session over the dynamic batcher's requests, split back per request."""
        feeds = [{name: self.read(r, name) for name in self.inputs} for r in requests]
        sizes = [len(feed[self.inputs[0]]) for feed in feeds]
        try:
            batch = feeds[0] if len(feeds) == 1 else {n: np.concatenate([f[n] for f in feeds]) for n in self.inputs}
            results = self.session.run(self.outputs, batch)
        except Exception as e:  # onnxruntime refused the batch: each request gets the reason
            error = pb_utils.TritonError(f"onnxruntime could not run the batch: {str(e)[:500]}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses, start = [], 0
        for size in sizes:
            end = start + size
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[to_tensor(name, result[start:end]) for name, result in zip(self.outputs, results)]))
            start = end
        return responses
