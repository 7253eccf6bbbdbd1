"""zoo's Python API: the CLI's operations as functions.

    import zoo

    spec = zoo.load_spec("specs/digits-softmax.json")        # a path, a dict or a Spec
    metrics = zoo.train(spec, epochs=3, out="exports")        # -> metrics.json's content
    report = zoo.export(spec, out="exports")                  # model.onnx, card.md, verify.json
    zoo.predict("exports/digits-softmax/model.onnx", "exports/digits-softmax/test_data_set_0/input_0.pb")

Every function takes a spec as a path, a dict or a `Spec` (train, export and verify
also take a run folder), raises zoo's errors (`zoo.core.errors.ZooError` subclasses, each
with its `exit_code`) and writes only inside the run folder `<out>/<name>/`. Each loads
and validates its spec once, takes the run's lock while it writes, and hands the spec and
the run folder down the stages (zoo.stages). Keras and TensorFlow load on the first call
that needs them, never on `import zoo`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional, Union

from zoo.core import provenance, runs
from zoo.core.contract import MODEL_ONNX, SPEC_FILE, TRITON_DIR
from zoo.core.errors import UsageError
from zoo.spec import Spec, keys

__all__ = ["load_spec", "build", "train", "export", "verify", "predict", "run", "Built"]

SpecLike = Union[str, Path, dict, Spec]
TRAIN_OVERRIDES = ("epochs", "batch_size", "learning_rate", "seed")


def _quiet(_message):
    pass


def load_spec(spec: SpecLike) -> Spec:
    """A validated Spec from a spec file's path, a dict (the JSON's content) or a Spec.

    Raises SpecError (exit code 2) naming every problem.
    """
    from zoo import spec as spec_mod

    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, dict):
        return spec_mod.validate(spec, "<dict>")
    if isinstance(spec, (str, Path)):
        return spec_mod.load_spec(spec)
    raise UsageError(f"expected a spec path, a dict or a zoo Spec, received {type(spec).__name__}")


def with_overrides(spec: Spec, **train) -> Spec:
    """The spec with train settings replaced (None leaves one as it is), validated like a file."""
    from zoo.spec import resolve, validate

    unknown = set(train) - set(TRAIN_OVERRIDES)
    if unknown:
        raise UsageError(f"unknown train override(s) {', '.join(sorted(unknown))}; valid: {', '.join(TRAIN_OVERRIDES)}")
    data = resolve(spec)
    for key, value in train.items():
        if value is not None:
            data = keys.set_key(data, f"train.{key}", value, "overrides")
    return spec if data == resolve(spec) else validate(data, "overrides")


def _is_spec(target) -> bool:
    return isinstance(target, (dict, Spec)) or (target is not None and Path(target).is_file())


def _spec_and_run(target, out) -> tuple[Spec, Path]:
    """(spec, run folder) from a spec (path, dict, Spec), a run folder, or None (the latest run)."""
    if _is_spec(target):
        spec = load_spec(target)
        return spec, runs.run_dir(spec.name, out)
    run = runs.find_run(None if target is None else str(target), out)
    if not (run / SPEC_FILE).is_file():
        raise UsageError(f"{run}: not a run folder (no spec.json); give a spec file or a folder made by `zoo build`")
    return load_spec(run / SPEC_FILE), run


def run_folder(target, out=None) -> Path:
    """The run folder of a spec (path, dict, Spec), a run folder, or None (the latest run)."""
    if _is_spec(target):
        return runs.run_dir(load_spec(target).name, out)
    return runs.find_run(None if target is None else str(target), out)


def _keras(backend=None):
    from zoo.core.backend import import_keras

    return import_keras(backend)


@dataclasses.dataclass
class Built:
    """What `build` made: the run folder, the untrained Keras model and one row per layer."""

    run: Path
    model: Any
    summary: list


def build(spec: SpecLike, *, out=None) -> Built:
    """Validate a spec, build its Keras model, write `<out>/<name>/{spec.json, model.keras}`."""
    spec = load_spec(spec)
    run = runs.run_dir(spec.name, out)
    _keras()
    from zoo.stages.build import build_run, summarize

    with runs.locked(run):
        model = build_run(spec, run)
        runs.set_latest(run)
    return Built(run, model, summarize(model))


def train(spec: SpecLike = None, *, out=None, resume=False, data_dir=None, device=None, backend=None,
          log: Optional[Callable[[str], None]] = None, quiet=None, epochs=None, batch_size=None,
          learning_rate=None, seed=None, plots=True, checkpoints=True) -> dict:
    """Train a spec's model (or a run folder's; None: the latest run). Returns metrics.json's content.

    `epochs`, `batch_size`, `learning_rate`, `seed` override the spec's train settings;
    `plots=False` leaves out curves.png and predictions.png, `checkpoints=False` writes the last
    epoch's checkpoint alone (both: a sweep's trials).
    `log` receives progress lines (default: none). Raises DataError, TrainingError,
    UsageError (e.g. `resume` with a changed model or dataset), RunLockedError.
    """
    spec, run = _spec_and_run(spec, out)
    spec = with_overrides(spec, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed)
    quiet = log is None if quiet is None else quiet
    _keras(backend)
    from zoo.stages.train import train_run

    with runs.locked(run):
        runs.set_latest(run)
        return train_run(spec, run, data_dir=data_dir, resume=resume, device=device, quiet=quiet,
                         log=log or _quiet, with_plots=plots, checkpoints=checkpoints)


def export(target: SpecLike = None, *, out=None, opset=None, atol=None, rtol=None, data_dir=None, verify=True,
           onnx=True, web=False, ort_web=None, triton=None, variants=(), log: Optional[Callable[[str], None]] = None
           ) -> dict:
    """Export a trained run to ONNX (tf2onnx), write its card, then verify it. Returns verify.json's content.

    `target` is the run's spec (path, dict, Spec), its folder, or None (the latest run).
    `web=True` also writes web/ (a page on onnxruntime-web; `ort_web`: where its files come
    from), `triton` a Triton model repository ("" or True: RUN/triton). With either, a
    model.onnx that is already the export of the run's model.keras is used as it is,
    unless `opset` is given. Returns {} when nothing was verified.

    `variants`: names of export variants (int8, fp16, ort, litert, litert-int8) to make besides
    the spec's `export.variants`, each verified on the whole test set against its gate. With
    `web` or `triton`, a single name picks the verified variant the page or the repository uses.
    """
    if not onnx and not web and triton is None:
        raise UsageError("nothing to export: give --onnx, --web and/or --triton")
    if ort_web and not web:
        raise UsageError("--ort-web only says where the page's onnxruntime-web comes from: add --web")
    variants = tuple(variants or ())
    if (web or triton is not None) and len(variants) > 1:
        raise UsageError("--web and --triton use one model: give one --variant with them")
    if (web or triton is not None) and variants:
        from zoo.deploy.variants_card import check_onnx_variant

        check_onnx_variant(variants[0])  # before any work
    run = run_folder(target, out)
    if variants and (run / SPEC_FILE).is_file():  # unknown or inapplicable names: before TensorFlow loads
        from zoo.stages.variants import resolve

        resolve(load_spec(run / SPEC_FILE), variants)
    return _export(run, opset=opset, atol=atol, rtol=rtol, data_dir=data_dir, verify=verify,
                   onnx=onnx, web=web, ort_web=ort_web, triton=triton, log=log or _quiet, variants=variants)


def _export(run: Path, *, opset, atol, rtol, data_dir, verify, onnx, web, ort_web, triton, log,
            trained=(None, None), variants=()) -> dict:
    report = {}
    with runs.locked(run, create=False) as lock:
        extra = web or triton is not None or bool(variants)
        if onnx and (not extra or opset is not None or not provenance.onnx_is_current(run)):
            report = _export_locked(lock, opset=opset, atol=atol, rtol=rtol, data_dir=data_dir, verify=verify, log=log,
                                    trained=trained, variants=variants)
        elif variants and onnx:
            report = _variants_locked(lock, variants, atol=atol, rtol=rtol, data_dir=data_dir, verify=verify,
                                      log=log) or report
        chosen = variants[0] if variants else None
        if web:
            from zoo.deploy.web import write_web

            write_web(run, ort_web=ort_web, log=log, variant=chosen)
        if triton is not None:
            from zoo.deploy.triton import write_repository

            repo = run / TRITON_DIR if triton in ("", True) else Path(triton)
            log(f"wrote Triton model {write_repository(_model_file(run, chosen), repo)}")
    return report


def _model_file(run: Path, variant=None) -> Path:
    """model.onnx, or the verified ONNX variant file named (what Triton and the page load)."""
    if variant is None:
        return run / MODEL_ONNX
    from zoo.deploy.variants_card import onnx_variant

    return onnx_variant(run, variant)


def _variants_locked(lock, names, *, atol, rtol, data_dir, verify, log, model=None, spec=None, trained=(None, None),
                     remake=True):
    """Make (unless not `remake`) and verify the spec's variants and `names` for the run `lock` holds,
    then rewrite the card with their table (also when one fails its gate: the others are usable)."""
    from zoo.core import files
    from zoo.core.contract import METRICS_FILE
    from zoo.deploy.card import write_card
    from zoo.stages.export import trained_spec
    from zoo.stages.variants_verify import run_variants

    run = lock.run
    spec = spec or trained_spec(run, trained[0])
    try:
        return run_variants(spec, run, names, model=model, data_dir=data_dir, verify=verify, atol=atol, rtol=rtol,
                            log=log, remake=remake)
    finally:
        if provenance.onnx_is_current(run):
            metrics = files.read_json(run / METRICS_FILE) if trained[1] is None else trained[1]
            write_card(run, spec, metrics, spec.export.opset)


def _export_locked(lock, *, opset, atol, rtol, data_dir, verify, log, trained=(None, None), variants=()) -> dict:
    """model.onnx, card.md, then verify.json, for the run `lock` holds. `trained`: the (spec,
    metrics) the same command just trained, so they are not read back from the run."""
    keras = _keras()
    from zoo.core import files
    from zoo.core.contract import METRICS_FILE, VERIFY_FILE
    from zoo.deploy.card import write_card
    from zoo.stages.export import export_in_tensorflow, export_run, trained_spec
    from zoo.stages.verify import verify_run

    run = lock.run
    spec = trained_spec(run, trained[0])
    metrics = files.read_json(run / METRICS_FILE) if trained[1] is None else trained[1]
    if keras.backend.backend() != "tensorflow":  # tf2onnx converts TensorFlow graphs: a child process on it
        try:
            export_in_tensorflow(lock, opset=opset, atol=atol, rtol=rtol, data_dir=data_dir, verify=verify,
                                 variants=variants)
        finally:
            if provenance.onnx_is_current(run):
                write_card(run, spec, metrics, opset or spec.export.opset)
        return files.read_json(run / VERIFY_FILE) if verify else {}
    model = export_run(spec, run, opset=opset, metrics=metrics, log=log)
    write_card(run, spec, metrics, opset or spec.export.opset)
    report = verify_run(spec, run, model=model, atol=atol, rtol=rtol, data_dir=data_dir, log=log) if verify else {}
    if spec.export.variants or variants:
        report = _variants_locked(lock, variants, atol=atol, rtol=rtol, data_dir=data_dir, verify=verify, log=log,
                                  model=model, spec=spec, trained=(spec, metrics)) or report
    return report


def verify(target: SpecLike = None, *, out=None, atol=None, rtol=None, data_dir=None,
           log: Optional[Callable[[str], None]] = None) -> dict:
    """Compare a run's model.onnx (or the .onnx file given) with its Keras model, then the run's variants
    on the whole test set (a variant's file given verifies its run). Returns verify.json's content.

    Raises VerificationError when they differ beyond the tolerances.
    """
    from zoo.core.contract import VARIANT_FILES

    if target is not None and not isinstance(target, (dict, Spec)) and Path(target).name in VARIANT_FILES.values():
        target = Path(target).parent  # a variant is verified with its run: model.onnx first, then every variant
    if target is not None and not isinstance(target, (dict, Spec)) and str(target).endswith(".onnx"):
        onnx_path = Path(target)
        if not onnx_path.is_file():
            raise UsageError(f"{target}: no such ONNX file; run `zoo export` first")
        run = onnx_path.parent
    else:
        run = run_folder(target, out)
        onnx_path = run / MODEL_ONNX
    _keras("tensorflow")
    from zoo.stages.verify import verify_run

    with runs.locked(run, create=False) as lock:
        spec = load_spec(run / SPEC_FILE)
        report = verify_run(spec, run, onnx_path=onnx_path, atol=atol, rtol=rtol, data_dir=data_dir,
                            log=log or _quiet)
        if onnx_path.resolve() != (run / MODEL_ONNX).resolve():
            return report
        from zoo.stages.variants_verify import recorded

        names = recorded(run)  # the variants made before: verified again with model.onnx
        if names:
            report = _variants_locked(lock, names, atol=atol, rtol=rtol, data_dir=data_dir, verify=True,
                                      log=log or _quiet, remake=False) or report
        return report


def table_data_missing(spec: SpecLike, *, data_dir=None) -> str | None:
    """For `zoo check`: a line saying a table spec's CSV is not found yet (where zoo looked and
    how to point it there), its columns to be inferred when it is; None when it is found, or
    the spec reads no CSV."""
    spec = load_spec(spec)
    if spec.data.dataset != "table":
        return None
    from zoo.stages.data import data_dir as data_folder
    from zoo.stages.data import find_path

    folder = data_folder(data_dir)
    if find_path(spec.data.path, folder) is not None:
        return None
    return (f"columns of {spec.data.path} (label {spec.data.label_column!r}): inferred from the training split when "
            f"the data is found; it is not in the current directory nor in the data directory {folder}: set "
            f"ZOO_DATA_DIR (or --data-dir) to the folder that holds it")


def table_columns(spec: SpecLike, *, data_dir=None) -> list[dict]:
    """A table spec's feature columns as zoo reads them from the training split: name, ONNX
    input, kind and how it was chosen (inferred or the spec's), fitted figures. [] for other specs.

    Raises DataError for a table zoo cannot read (a ragged row, a stray word, ...).
    """
    spec = load_spec(spec)
    if not spec.is_table:
        return []
    from zoo.stages.data import load_dataset

    prep = load_dataset(spec, data_dir).table.prep
    return [{**c, "how": prep.inferred.get(c["name"], "")} for c in prep.to_json()["columns"]]


def predict(model: SpecLike, inputs, *, out=None, top_k=3, log: Optional[Callable[[str], None]] = None) -> list[dict]:
    """Run an exported model with onnxruntime alone on a .npy, an image, a .csv or a TensorProto .pb.

    `model` is a model.onnx path, a variant's file (.onnx, .ort, or .tflite: run by the LiteRT
    interpreter), or a spec / run folder whose model.onnx to use.
    Returns one record per example: top classes with probabilities, or predictions.
    `log` hears of each resize or rescale of an image (the model card says what an image must be).
    """
    from zoo.stages.predict import predict_file

    if not isinstance(model, (dict, Spec)) and str(model).endswith((".onnx", ".ort", ".tflite")):
        onnx_path = Path(model)
    elif not isinstance(model, (dict, Spec)) and Path(model).is_file() and Path(model).suffix != ".json":
        raise UsageError(f"{model}: predict runs the exported ONNX model with onnxruntime; give "
                         f"{Path(model).parent / MODEL_ONNX} (or the run folder), after `zoo export {Path(model).parent}`")
    else:
        onnx_path = run_folder(model, out) / MODEL_ONNX
    return predict_file(onnx_path, inputs, top_k=top_k, log=log)


def run(spec: SpecLike, *, out=None, data_dir=None, device=None, backend=None,
        log: Optional[Callable[[str], None]] = None, quiet=None, **overrides) -> dict:
    """Build, train, export and verify a spec. Returns {"run", "metrics", "verify"}."""
    unknown = set(overrides) - set(TRAIN_OVERRIDES)
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join(sorted(unknown))}; valid: {', '.join(TRAIN_OVERRIDES)}")
    spec = with_overrides(load_spec(spec), **overrides)  # loaded and validated once, handed down
    folder = runs.run_dir(spec.name, out)
    metrics = train(spec, out=out, data_dir=data_dir, device=device, backend=backend, log=log, quiet=quiet)
    for line in training_summary(metrics, folder):  # what training made, before the export's lines
        (log or _quiet)(line)
    report = _export(folder, opset=None, atol=None, rtol=None, data_dir=data_dir, verify=True, onnx=True, web=False,
                     ort_web=None, triton=None, log=log or _quiet, trained=(spec, metrics))
    for line in next_steps(folder, spec):
        (log or _quiet)(line)
    return {"run": folder, "metrics": metrics, "verify": report}


def training_summary(metrics: dict, run: Path) -> list[str]:
    """The lines that close a training: the test metrics, the learned weights of a linear model, the files."""
    from zoo.core.contract import CURVES_PNG, HISTORY_FILE, METRICS_FILE, MODEL_KERAS, PREDICTIONS_PNG

    test = "  ".join(f"{k} {v:.4f}" for k, v in metrics["test"].items())
    lines = [f"test: {test}  ({metrics['wall_seconds']:.1f}s, {metrics['device']})"]
    if "w" in metrics and len(metrics["w"]) <= 16:  # d2l's few weights; a table's hundreds stay in metrics.json
        lines.append(f"learned w = {[round(v, 4) for v in metrics['w']]}, b = {[round(v, 4) for v in metrics['b']]}")
    made = [MODEL_KERAS, HISTORY_FILE, METRICS_FILE, CURVES_PNG] + [PREDICTIONS_PNG] * (Path(run) / PREDICTIONS_PNG).is_file()
    lines.append(f"wrote {run}/{', '.join(made)}")
    return lines


def next_steps(run: Path, spec: Spec) -> list[str]:
    """What an exported run holds and the commands that use it: predict, the page, a server."""
    from zoo.core.contract import CARD_FILE, TEST_DATA_SET, VERIFY_FILE
    from zoo.stages.predict import example_input

    run = Path(run)
    shown = run.relative_to(Path.cwd()) if run.is_relative_to(Path.cwd()) else run
    example = example_input(run, spec)
    example = example.relative_to(Path.cwd()) if example.is_relative_to(Path.cwd()) else example
    return [f"made {shown}/: {MODEL_ONNX}, {VERIFY_FILE}, {TEST_DATA_SET}/, {CARD_FILE} (how to call the model)",
            "next:",
            f"  zoo predict {shown}/{MODEL_ONNX} {example}",
            f"  zoo export {shown} --web && zoo web {shown}      # the model in a browser page",
            f"  zoo export {shown} --triton && zoo serve {shown}  # a Triton server (README: Serving)"]
