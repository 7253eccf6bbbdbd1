"""The models zoo serve serves, found and checked before anything starts.

A target is a run folder with model.onnx, a Triton model repository written by
`zoo export --triton` (each model's newest version, under its folder's name, with the
batching its config.pbtxt sets) or an .onnx file. Every one must keep zoo's contract, and
no two may share a name.

What lies in a run is served only if `zoo verify` would pass its provenance: the run's
model.onnx (or an .onnx file named inside it) through zoo.stages.verify.check_provenance,
a repository inside a run (RUN/triton) through the records `zoo export --triton` made of
it. An edited or copied-in file is a ProvenanceError (exit 8) before anything starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from zoo.core import provenance, runs
from zoo.core.contract import MODEL_ONNX, SPEC_FILE, Contract
from zoo.core.errors import ProvenanceError, UsageError
from zoo.deploy import triton as repo_format
from zoo.deploy.serve import stub_env

INSTALL_HINT = ("install the serve extra: pip install -e '.[serve]' && pip install --no-deps 'nvidia-pytriton==0.7.0' "
                "(nvidia-pytriton declares numpy<2; see .ci/setup-serve.sh)")


@dataclass(frozen=True)
class Served:
    """One model to serve: its ONNX file, its contract and its batching settings."""

    onnx: Path
    contract: Contract
    max_batch_size: int = repo_format.MAX_BATCH_SIZE
    queue_delay_us: int = repo_format.QUEUE_DELAY_US

    @property
    def name(self) -> str:
        return self.contract.name


def _read_config(path: Path):
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise UsageError(f"reading {path} needs tritonclient: {INSTALL_HINT}") from None
    try:
        return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())
    except (OSError, UnicodeDecodeError, text_format.ParseError) as e:
        raise UsageError(f"{path}: not a readable Triton model configuration ({str(e)[:200]}); "
                         f"rewrite it with `zoo export RUN --triton`") from None


def _from_repository(repo: Path) -> list[Served]:
    served = []
    for config_path in sorted(repo.glob(f"*/{repo_format.CONFIG}")):
        model_dir = config_path.parent
        config = _read_config(config_path)
        if config.name and config.name != model_dir.name:
            raise UsageError(f"{config_path}: name {config.name!r} differs from its folder {model_dir.name!r}; "
                             f"Triton needs them equal")
        versions = sorted((int(p.name), p) for p in model_dir.iterdir() if p.name.isdigit() and
                          (p / repo_format.MODEL_FILE).is_file())
        if not versions:
            raise UsageError(f"{model_dir}: no version folder with {repo_format.MODEL_FILE} "
                             f"(expected {model_dir}/{repo_format.VERSION}/{repo_format.MODEL_FILE})")
        onnx = versions[-1][1] / repo_format.MODEL_FILE
        contract = Contract.from_onnx(onnx)
        if contract.name != model_dir.name:  # serve it under the repository's name, as Triton would
            contract = dataclasses.replace(contract, name=model_dir.name)
        delay = config.dynamic_batching.max_queue_delay_microseconds if config.HasField("dynamic_batching") else 0
        served.append(Served(onnx, contract, config.max_batch_size or repo_format.MAX_BATCH_SIZE, delay))
    return served


def _owning_run(path: Path) -> Path | None:
    """The run folder `path` lies in (itself or a folder above it), if any."""
    path = Path(path).resolve()
    return next((p for p in (path, *path.parents) if runs.is_run(p)), None)


def check_served_file(onnx: Path) -> None:
    """Raise ProvenanceError (exit 8) unless `onnx`, where it lies in a run, is what zoo wrote there.

    A run's model.onnx must pass verify's own check (the chain from the spec, and the ONNX
    metadata naming this model.keras); any other file in a run (RUN/triton/NAME/1/model.onnx)
    must match its record, and that record the run's model.onnx. A file outside every run has
    no record to check: only its contract is (Contract.from_onnx).
    """
    from zoo.stages.verify import check_provenance

    run = _owning_run(onnx.parent)
    if run is None:
        return
    name = onnx.resolve().relative_to(run).as_posix()
    if name == MODEL_ONNX:
        check_provenance(run, run / MODEL_ONNX)
        return
    entries = provenance.manifest(run)
    if name not in entries:
        raise ProvenanceError(f"{onnx}: has no provenance record in {run}: zoo did not write it (copied in by hand?); "
                              f"write the repository again with `zoo export {run} --triton`")
    provenance.check_chain(run, name)
    check_provenance(run, onnx)


def find_models(targets, variant=None) -> list[Served]:
    """The models named by run folders, Triton repositories or .onnx files (`variant`: each run
    folder's verified ONNX variant of that name instead of its model.onnx).

    Raises:
        UsageError: a target is missing, not exported, or two models share a name.
    """
    if not targets:
        raise UsageError("name at least one run folder or Triton repository to serve, e.g. `zoo serve exports/digits-softmax`")
    served: list[Served] = []
    for target in targets:
        p = Path(target)
        if p.is_file() and p.suffix == ".onnx":
            served.append(Served(p, Contract.from_onnx(p)))
        elif p.is_dir() and (p / repo_format.MODEL_FILE).is_file():
            onnx = p / repo_format.MODEL_FILE
            if variant is not None:
                from zoo.deploy.variants_card import onnx_variant

                onnx = onnx_variant(p, variant)
            served.append(Served(onnx, Contract.from_onnx(onnx)))
        elif p.is_dir() and any(p.glob(f"*/{repo_format.CONFIG}")):
            served += _from_repository(p)
        elif p.is_dir() and (p / SPEC_FILE).is_file():
            raise UsageError(f"{target}: this run has no {repo_format.MODEL_FILE}; run `zoo export {target}` first")
        elif p.is_dir():
            raise UsageError(f"{target}: neither a run folder with {repo_format.MODEL_FILE} nor a Triton model "
                             f"repository (*/{repo_format.CONFIG}); give one made by `zoo export --triton`")
        else:
            raise UsageError(f"{target}: no such run folder, Triton repository or .onnx file")
    stub_env.require_numpy1([s.name for s in served if s.contract.is_table])
    names = [s.name for s in served]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"two models are named {', '.join(duplicates)}; serve them from separate commands")
    for s in served:
        check_served_file(s.onnx)
    return served


def write_repository(served: list[Served], repo: Path, instances: int, execution_env: Path) -> None:
    """The repository Triton loads: each model for the Python backend, which runs it with onnxruntime
    in the stub environment `execution_env` (zoo.deploy.serve.stub_env)."""
    for s in served:
        repo_format.write_repository(s.onnx, repo, max_batch_size=s.max_batch_size, queue_delay_us=s.queue_delay_us,
                                     instances=instances, backend="python", contract=s.contract,
                                     execution_env=execution_env)
