"""A Triton model repository from an exported run.

`write_repository` turns a run's model.onnx into the layout Triton Inference Server loads:

    REPO/<name>/config.pbtxt      generated from the ONNX graph, never written by hand
    REPO/<name>/labels.txt        class names, one a line (classifiers)
    REPO/<name>/1/model.onnx      the exported model, version 1

Several runs can share one REPO (one folder per model name). Every file is written to a
temporary name and renamed into place (zoo.core.files), config.pbtxt last, and nothing is
written through a symlink. The names, dtypes and dims all come from zoo.core.contract.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from zoo.core import files, provenance, runs
from zoo.core.contract import LABELED_OUTPUT, MODEL_ONNX, Contract, breaks_a_line
from zoo.core.errors import UsageError
from zoo.deploy import templates

PLATFORM = "onnxruntime_onnx"  # Triton's onnxruntime backend
CONFIG = "config.pbtxt"
LABELS = "labels.txt"
VERSION = "1"
MODEL_FILE = MODEL_ONNX
PYTHON_MODEL_FILE = "model.py"  # what Triton's Python backend imports from a version folder
MAX_BATCH_SIZE = 64  # the largest batch Triton forms or accepts; a request over it gets a 400
QUEUE_DELAY_US = 200  # how long the dynamic batcher may hold a request to batch it with others
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # what Triton (and PyTriton) accept as a model name


def config_text(contract: Contract, *, max_batch_size=MAX_BATCH_SIZE, queue_delay_us=QUEUE_DELAY_US,
                instances=1, backend=None, execution_env=None) -> str:
    """config.pbtxt for one model: every input and output with its Triton dtype and dims (no batch axis).

    Triton's onnxruntime backend runs it (`platform`), or with `backend="python"` the Python
    backend runs the model.py asset (zoo/deploy/assets/triton_model.py) beside the ONNX file
    (what zoo serve does), in the Python environment at `execution_env` if given
    (zoo.deploy.serve.stub_env).
    """
    if max_batch_size < 1:  # Triton's dynamic batcher needs max_batch_size > 0
        raise UsageError(f"max_batch_size must be at least 1; received {max_batch_size}")

    def tensor(name, dims, label=False):
        lines = [f'    name: "{name}"', f"    data_type: {contract.triton_dtype(name)}",
                 f"    dims: [ {', '.join(map(str, dims))} ]"]
        if label:
            lines.append(f'    label_filename: "{LABELS}"')
        return "  {\n" + "\n".join(lines) + "\n  }"

    outputs = ",\n".join(tensor(o, contract.output_dims(o), label=(o == LABELED_OUTPUT)) for o in contract.outputs)
    inputs = ",\n".join(tensor(name, dims) for name, dims in contract.input_dims())  # a table's: TYPE_STRING or FP32
    return (f'name: "{contract.name}"\n'
            + (f'backend: "{backend}"\n' if backend else f'platform: "{PLATFORM}"\n') +
            f"max_batch_size: {max_batch_size}\n"
            f"input [\n{inputs}\n]\n"
            f"output [\n{outputs}\n]\n"
            f"dynamic_batching {{\n  max_queue_delay_microseconds: {queue_delay_us}\n}}\n"
            f"instance_group [\n  {{\n    count: {instances}\n    kind: KIND_CPU\n  }}\n]\n"
            + (f'parameters: {{\n  key: "EXECUTION_ENV_PATH"\n  value: {{ string_value: "{execution_env}" }}\n}}\n'
               if execution_env else ""))


def _refuse_symlinks(*paths: Path) -> None:
    for p in paths:
        if p.is_symlink():
            raise UsageError(f"{p} is a symbolic link; zoo never writes through one: give a real folder for the repository")


def write_repository(onnx_path, repo, *, max_batch_size=MAX_BATCH_SIZE, queue_delay_us=QUEUE_DELAY_US,
                     instances=1, backend=None, contract=None, execution_env=None) -> Path:
    """Put one exported model into the Triton model repository `repo`; return its model folder.

    By default for Triton's onnxruntime backend. With `backend="python"` (zoo serve) the
    version folder also holds model.py (zoo/deploy/assets/triton_model.py), which runs model.onnx with
    onnxruntime in the Python backend (in the environment `execution_env`). `contract` overrides the one read from the ONNX file
    (zoo serve renames a model to its repository folder's name).

    Raises:
        UsageError: the ONNX file breaks zoo's contract, its name is not a valid Triton
            model name, a folder on the way is a symlink, or the repository is not writable.
    """
    onnx_path = Path(onnx_path)
    contract = contract or Contract.from_onnx(onnx_path)
    if not _NAME.match(contract.name):
        raise UsageError(f"{onnx_path}: model name {contract.name!r} is not a valid Triton model name "
                         f"(letters, digits, '.', '_' and '-')")
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise UsageError(f"{repo}: exists and is not a folder; give a folder for the Triton repository")
    model_dir = repo / contract.name
    version_dir = model_dir / VERSION
    _refuse_symlinks(repo, model_dir, version_dir, version_dir / MODEL_FILE, version_dir / PYTHON_MODEL_FILE,
                     model_dir / LABELS, model_dir / CONFIG)
    config = config_text(contract, max_batch_size=max_batch_size, queue_delay_us=queue_delay_us,
                         instances=instances, backend=backend, execution_env=execution_env)
    labels = contract.labels() if contract.is_classifier else []
    bad = next((label for label in labels if breaks_a_line(label)), None)
    if bad is not None:  # one name a line: a newline or tab would give every later class another's name
        raise UsageError(f"{onnx_path}: class name {bad!r} holds a control character, which labels.txt "
                         f"cannot carry; rename the class in the spec and train again")
    with files.atomic_path(version_dir / MODEL_FILE) as tmp:
        shutil.copyfile(onnx_path, tmp)
    if backend == "python":
        files.write_text(version_dir / PYTHON_MODEL_FILE, templates.text("triton_model.py"))
    if contract.is_classifier:
        files.write_text(model_dir / LABELS, "".join(f"{label}\n" for label in labels))
    files.write_text(model_dir / CONFIG, config)  # last: a polling Triton never sees a config without its model
    run = onnx_path.parent
    if runs.is_run(run) and repo.resolve().is_relative_to(run.resolve()):  # the run's own triton/: provenance too
        provenance.record_folder(run, repo.resolve().relative_to(run.resolve()).as_posix(), "export", inputs=[onnx_path.name])
    return model_dir
