"""Import Keras (and TensorFlow) without the wall of C++ log lines they print.

TensorFlow's C++ runtime writes "oneDNN custom operations are on" and CUDA-stub
messages straight to file descriptor 2 while it loads, before TF_CPP_MIN_LOG_LEVEL
is read by absl, so the only way to keep normal output clean is to point fd 2 at
/dev/null for the duration of the import. ZOO_DEBUG=1 shows everything.
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def silenced_fd2():
    if os.environ.get("ZOO_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_keras(backend=None):
    """Import keras with `backend` (else $KERAS_BACKEND, else tensorflow), quietly."""
    if backend:
        if "keras" in sys.modules and os.environ.get("KERAS_BACKEND", "tensorflow") != backend:
            raise RuntimeError("keras was already imported with another backend")
        os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if not os.environ.get("ZOO_DEBUG"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    with silenced_fd2():
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
