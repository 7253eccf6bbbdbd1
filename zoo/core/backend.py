"""The Keras backend: importing Keras quietly, choosing the device, and the versions in use.

Importing Keras (and TensorFlow) without the wall of C++ log lines they print:

TensorFlow's C++ runtime writes "oneDNN custom operations are on" and CUDA-stub
messages straight to file descriptor 2 while it loads, before TF_CPP_MIN_LOG_LEVEL
is read by absl, so the only way to keep normal output clean is to point fd 2 at
/dev/null for the duration of the import. ZOO_DEBUG=1 shows everything.
"""

import contextlib
import os
import platform
import sys


@contextlib.contextmanager
def silenced_fd2():
    if os.environ.get("ZOO_DEBUG"):
        yield
        return
    from zoo.core import console

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        console.real_stderr_fd = saved  # zoo's own error lines still reach the terminal
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        console.real_stderr_fd = None
        os.close(saved)
        os.close(devnull)


# Keras 3 imports scikit-learn (for its keras.wrappers estimators, ~0.65 s) and matplotlib.pyplot
# (for keras.visualization's image gallery, ~0.25 s) as it loads: a third of its import time, for
# two features zoo never uses. Keras guards both imports with `except ImportError`, so a process
# that is zoo's own (the zoo command, a sweep's worker: see own_process) loads Keras without them;
# scikit-learn and matplotlib still import as usual later (zoo's plots, the digits fallback), only
# Keras's scikit-learn wrappers and image gallery say they are not installed. A program that
# imports zoo as a library gets Keras whole.
KERAS_EXTRAS_SKIPPED = ("sklearn", "matplotlib.pyplot")
_own_process = False


def own_process() -> None:
    """This process is zoo's own (the zoo command, a sweep worker): Keras loads without its extras."""
    global _own_process
    _own_process = True


@contextlib.contextmanager
def _without(names):
    """Imports of `names` fail (ImportError) inside the block; those not already loaded only."""
    blocked = [n for n in names if n not in sys.modules]
    for name in blocked:
        sys.modules[name] = None
    try:
        yield
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


# What to install for each Keras backend zoo can train on; tensorflow is a dependency.
BACKEND_INSTALL = {"tensorflow": "pip install tensorflow", "jax": "pip install jax (with CUDA: pip install 'jax[cuda12]')",
                   "torch": "pip install torch"}


def import_keras(backend=None):
    """Import keras with `backend` (else $KERAS_BACKEND, else tensorflow), quietly.

    Raises UsageError (exit 2) naming the install command for a backend that is not
    installed or not one Keras has, and for a second backend in one process.
    """
    import importlib.util

    from zoo.core.errors import UsageError

    if backend:
        if "keras" in sys.modules and os.environ.get("KERAS_BACKEND", "tensorflow") != backend:
            raise UsageError(f"keras was already loaded with the {os.environ.get('KERAS_BACKEND')} backend in this "
                             f"process; a process has one backend: start a new one for --backend {backend}")
        os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    chosen = os.environ["KERAS_BACKEND"]
    if chosen not in BACKEND_INSTALL:
        raise UsageError(f"KERAS_BACKEND={chosen!r} is not a backend zoo trains on; use one of "
                         f"{', '.join(BACKEND_INSTALL)}")
    if importlib.util.find_spec(chosen) is None:
        raise UsageError(f"the {chosen} backend is not installed: {BACKEND_INSTALL[chosen]}, or choose another "
                         f"with --backend")
    if not os.environ.get("ZOO_DEBUG"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    with silenced_fd2(), _without(KERAS_EXTRAS_SKIPPED if _own_process and "keras" not in sys.modules else ()):
        try:  # other backends still load TensorFlow later (tf.data adapters): load it now, quietly
            import tensorflow  # noqa: F401
        except ImportError:
            if os.environ["KERAS_BACKEND"] == "tensorflow":
                raise
        import keras
    if not os.environ.get("ZOO_DEBUG"):
        import logging

        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    return keras


def configure(device=None, seed=0):
    """Pick the device and make ops deterministic. Call before building models.

    TensorFlow op determinism stays on for the rest of the process (TF offers no
    scoped switch); a process that also trains outside zoo inherits it.

    Returns a short description of the device training runs on.
    """
    import keras

    from zoo.core.errors import TrainingError

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if device == "gpu" and not gpus:
            raise TrainingError("--device gpu: TensorFlow sees no GPU here (check the CUDA driver "
                                "with nvidia-smi); use --device cpu or leave --device out")
        if device == "cpu" and gpus:
            try:
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError:
                pass  # devices already initialized in this process; TF keeps its choice
            gpus = []
        tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(seed)
        if gpus:
            return f"GPU:0 ({tf.config.experimental.get_device_details(gpus[0]).get('device_name', 'GPU')})"
        return f"CPU ({os.cpu_count()} cores)"
    keras.utils.set_random_seed(seed)
    if backend == "jax":
        import jax

        devices = jax.devices()
        if device == "gpu" and devices[0].platform != "gpu":
            raise TrainingError("--device gpu: JAX sees no GPU here; use --device cpu")
        return f"{devices[0].platform.upper()}:0 ({devices[0].device_kind})"
    if backend == "torch":
        import torch

        if device == "gpu" and not torch.cuda.is_available():
            raise TrainingError("--device gpu: PyTorch sees no CUDA GPU here; use --device cpu")
        if torch.cuda.is_available() and device != "cpu":
            return f"GPU:0 ({torch.cuda.get_device_name(0)})"
        return f"CPU ({os.cpu_count()} cores)"
    return "CPU"


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("zoo", "keras", "tensorflow", "numpy", "jax", "torch", "tf2onnx", "onnx", "onnxruntime", "onnxruntime-gpu"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
