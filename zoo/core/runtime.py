"""onnxruntime sessions: the one place zoo opens an ONNX model to run it.

`providers()` decides once per process whether onnxruntime-gpu can really run on CUDA
here; `session(path)` opens a model with them, or raises one clear error.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from zoo.core.errors import UsageError


def providers() -> list[str]:
    """CUDA when onnxruntime-gpu can really run on it here, else CPU; quietly, decided once.

    The GPU build lists CUDAExecutionProvider even where no driver, CUDA or cuDNN is
    installed, and then falls back to the CPU with a warning. So: the driver must load,
    onnxruntime.preload_dlls() loads CUDA and cuDNN from pip's nvidia-* wheels (which
    `pip install -e '.[gpu]'` brings with tensorflow[and-cuda]), and a one-node model
    must then run with CUDA as its provider.
    """
    import contextlib
    import io
    import platform

    def decide() -> tuple:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return ("CPUExecutionProvider",)
        try:  # no driver, no GPU: nothing below can work, and this answers in microseconds
            ctypes.CDLL("nvcuda.dll" if platform.system() == "Windows" else "libcuda.so.1")
        except OSError:
            return ("CPUExecutionProvider",)
        try:
            from onnx import TensorProto, helper

            with contextlib.redirect_stdout(io.StringIO()):  # it prints each library it cannot find
                if hasattr(ort, "preload_dlls"):
                    ort.preload_dlls()
            graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
            options = ort.SessionOptions()
            options.log_severity_level = 3
            probe = ort.InferenceSession(model.SerializeToString(), options,
                                         providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
            probe.run(None, {"x": np.ones(1, np.float32)})
            if probe.get_providers()[0] == "CUDAExecutionProvider":
                return ("CUDAExecutionProvider", "CPUExecutionProvider")
        except Exception:  # a CUDA or cuDNN that does not load: the CPU it is
            pass
        return ("CPUExecutionProvider",)

    if getattr(providers, "decided", None) is None:  # once per process: the probe costs a CUDA start-up
        providers.decided = decide()
    return list(providers.decided)


def session(path: Path):
    """An onnxruntime session, or one clear error for a missing or corrupt file."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # errors only: no provider warnings
    if not Path(path).is_file():
        raise UsageError(f"{path}: no such ONNX file; run `zoo export` first")
    try:
        return ort.InferenceSession(str(path), providers=providers())
    except Exception as e:
        first = (str(e).splitlines() or [""])[0]
        raise UsageError(f"{path}: not a loadable ONNX model ({first[:200]})") from None
