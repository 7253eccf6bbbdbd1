"""Training: spec + data -> a trained model, its history, metrics, checkpoints and plots.

`train_run` is a short list of named steps: the state to resume from, the validation
split, the model (restored from a checkpoint or built afresh), the epoch loop, and the
finish (early stopping's best weights, the test metrics, model.keras, metrics.json and
the plots). The pieces live beside it: recipe (optimizer, schedule, loss), loop (the
epoch runners), checkpoint (the run's files, committed per epoch) and resume.

Reproducibility: the seed fixes the initial weights, and the permutation of epoch e
is a pure function of (seed, e), so a resumed run sees the same batches as an
uninterrupted one; TensorFlow op determinism is on. A NaN/inf loss stops training at
once and keeps the last good checkpoint. Progress goes to the `log` callback only.
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.core import aside, provenance, runs
from zoo.core import backend as backend_mod
from zoo.core.contract import (
    CURVES_PNG,
    HISTORY_FILE,
    MODEL_KERAS,
    PREDICTIONS,
    PREDICTIONS_PNG,
    SPEC_FILE,
    checkpoint_name,
)
from zoo.core.errors import DataError, TrainingError
from zoo.spec import Spec, dumps
from zoo.stages import plots
from zoo.stages.data import load_dataset
from zoo.stages.train import reuse
from zoo.stages.train.checkpoint import (
    EpochWriter,
    LastCheckpoint,
    checkpoint_path,
    commit_epoch,
    write_history,
    write_metrics,
    write_model,
    write_preprocessing,
)
from zoo.stages.train.folds import run_folds, with_rmse
from zoo.stages.train.loop import CompiledEpochs, epoch_permutation, epoch_runner
from zoo.stages.train.messages import announcement, epoch_display, removal_line
from zoo.stages.train.recipe import compile_model, learning_rate_at, optimizer_record, rebuild_optimizer
from zoo.stages.train.resume import early_stopping_state, resume_state, short, stopped_early


@dataclass
class Session:
    """One train_run's working state, handed from step to step."""

    spec: Spec
    run: Path
    model: object  # the keras.Model being trained
    runner: object  # CompiledEpochs or FitEpochs
    made_from: dict  # the digests of the spec and data the run's files come from
    history: list  # one record per completed epoch, the resumed run's first
    x_train: np.ndarray  # the training set, validation split off
    steps: int  # steps per epoch
    checkpoints: bool = True  # every epoch's checkpoint, else the last epoch's alone (a sweep's trials)
    best_weights: tuple | None = None  # (epoch, weights): early stopping's best, where kept in memory


def train_run(spec: Spec, run: Path, *, data_dir=None, resume=False, device=None, quiet=False, log=print,
              compiled=None, with_plots=True, checkpoints=True) -> dict:
    """Train the model a spec describes into the run folder. Returns metrics.json's content.

    Raises DataError for bad data, TrainingError for a NaN/inf loss or a missing device,
    UsageError when --resume meets a spec that changed what the checkpoints are.
    `compiled` picks the epoch runner (default: CompiledEpochs on TensorFlow). `log` gets
    every progress line, one per epoch included (unless quiet; on a terminal a progress
    bar shows the epochs instead). `with_plots=False` leaves out curves.png and
    predictions.png (a sweep's trials; `draw_plots` makes them later); `checkpoints=False`
    writes the last epoch's checkpoint alone (a sweep's trials: checkpoint.LastCheckpoint).
    """
    history, first_epoch, changes = resume_state(spec, run, resume)  # before any data or model work
    device_name = backend_mod.configure(device, spec.train.seed)
    dataset = load_dataset(spec, data_dir, run=run)
    x_train, y_train, validation = split_validation(spec, dataset)
    steps = math.ceil(len(x_train) / spec.train.batch_size)
    model = restore_model(spec, run, history, changes, steps, log) if first_epoch else None
    if not first_epoch:  # a fresh start replaces the run; before the spec is saved, which would remove
        said = removal_line(run, runs.start_over(run))  # what the old spec made, with no way back
        if said:
            log(said)
    # first: the folder is a run from here on
    made_from = {"@spec": provenance.save_text(run, SPEC_FILE, dumps(spec), "train"), "@data": dataset.digest()}
    if not first_epoch:
        model = fresh_model(spec, run, x_train, steps, made_from)
    cv = run_folds(spec, run, dataset, bool(first_epoch), compiled, log, quiet) if spec.train.folds else None
    if first_epoch:
        runner = epoch_runner(model, spec, x_train, y_train, compiled, validation)
    else:  # a fresh model: a kept one of its architecture may train instead (reuse.keep_traced)
        model, runner = reuse.runner_for(model, spec, x_train, y_train, validation, steps, compiled)
    session = Session(spec, run, model, runner, made_from, history, x_train, steps, checkpoints)
    if not quiet:
        log(announcement(spec, len(x_train), first_epoch, device_name))
    show = epoch_display(spec.train.epochs, first_epoch, quiet, log)
    started = time.perf_counter()
    nan, epochs_run = train_epochs(session, changes, show)
    wall = time.perf_counter() - started
    if nan:
        raise divergence_error(session, nan, first_epoch)
    best_epoch = restore_best(session, quiet, log)
    test = with_rmse(spec, test_metrics(session, best_epoch, dataset))
    metrics = metrics_record(session, test, best_epoch, dataset, device_name, wall, epochs_run)
    if cv is not None:
        metrics["cv"] = cv
    if dataset.table is not None:
        metrics["columns"] = dataset.table.prep.inferred
    write_outputs(session, metrics, dataset, with_plots)
    return metrics


# ----- before the first epoch ------------------------------------------------------------------

def split_validation(spec: Spec, dataset):
    """(x_train, y_train, validation): validation is the test set, a fraction of the training
    set held out (the same for every epoch and every resume: a function of the seed), or None."""
    x_train, y_train = dataset.x_train, dataset.y_train
    validation = None
    if spec.train.validation == "test":
        validation = (dataset.x_test, dataset.y_test)
    elif isinstance(spec.train.validation, float):
        order = epoch_permutation(len(x_train), spec.train.seed, -1 % 2**31)
        n_val = max(1, int(len(x_train) * spec.train.validation))
        if n_val >= len(x_train):  # (data.limit's case is a spec check; a file can hold as few)
            raise DataError(f"holding out train.validation {spec.train.validation} of {len(x_train)} training "
                            f"example(s) leaves none to train on; use more data or validation 'test'")
        val, keep = order[:n_val], order[n_val:]
        validation = (x_train[val], y_train[val])
        x_train, y_train = x_train[keep], y_train[keep]
    return x_train, y_train, validation


def restore_model(spec: Spec, run: Path, history: list, changes: dict, steps: int, log):
    """The model of the last committed epoch's checkpoint, its optimizer rebuilt from the spec
    (state carried over); says what --resume will do."""
    from zoo.stages import build

    first_epoch, epochs, es = len(history), spec.train.epochs, spec.train.early_stopping
    provenance.check(run, checkpoint_name(first_epoch))
    model = build.load_model(checkpoint_path(run, first_epoch))
    compile_model(model, spec, steps, optimizer=rebuild_optimizer(model, spec))
    if first_epoch >= epochs or stopped_early(history, es):
        log(f"{run}: already trained for {first_epoch} epochs (requested {epochs}"
            f"{', stopped early' if stopped_early(history, es) else ''}); nothing to resume")
    else:
        said = "; ".join(f"{k} {short(a)} -> {short(b)}" for k, (a, b) in changes.items())
        log(f"resuming {run.name} after epoch {first_epoch}" + (f", applying {said}" if said else ""))
    return model


def fresh_model(spec: Spec, run: Path, x_train, steps: int, made_from: dict):
    """A new model, adapted to the training set and compiled; the run (cleared by runs.start_over:
    nothing of an earlier training may be taken for this one's) starts over with it."""
    from zoo.stages import build

    model = build.build_model(spec, x_train.shape[1:] if spec.is_table else None)
    build.adapt(model, x_train)
    compile_model(model, spec, steps)
    write_history(run, [], made_from)
    return model


# ----- the epochs --------------------------------------------------------------------------------

def train_epochs(s: Session, changes: dict, show) -> tuple:
    """Train from the epoch after the history's last to train.epochs (or until early stopping),
    committing each. Returns (nan, epochs run): nan is (epoch, step, loss) where the loss
    became NaN/inf, else None."""
    t, es = s.spec.train, s.spec.train.early_stopping
    first_epoch = len(s.history)
    writer = epoch_writer(s)
    nan, epochs_run = None, 0
    try:
        for epoch in range(first_epoch, t.epochs):
            if stopped_early(s.history, es):
                break
            epoch_started = time.perf_counter()
            s.model.optimizer.learning_rate.assign(learning_rate_at(t, epoch))
            logs = s.runner.train_epoch(epoch_permutation(len(s.x_train), t.seed, epoch), t.batch_size)
            nan = divergence(epoch, logs)
            if nan:
                break
            s.history.append(epoch_record(s.model, epoch, logs, epoch_started,
                                          changes if epoch == first_epoch else {}))
            keep = [early_stopping_state(s.history, es)[0]] if es else ()
            if writer is not None:
                writer.commit(epoch + 1, s.history, keep)
            else:
                commit_epoch(s.run, s.model, epoch + 1, s.history, s.made_from, keep)
            epochs_run += 1
            show(epochs_run, logs, s.history[-1])
    finally:
        if writer is not None:
            writer.close()  # the last epoch committed (also when interrupted or diverged)
    s.best_weights = getattr(writer, "best", None)
    return nan, epochs_run


def epoch_writer(s: Session):
    """What commits the epochs: on TensorFlow, an EpochWriter (each epoch's checkpoint and
    history.json written while the next epoch trains); for a sweep's trial, LastCheckpoint;
    else None (commit_epoch, synchronously)."""
    if not s.checkpoints:
        es, epochs = s.spec.train.early_stopping, s.spec.train.epochs
        return LastCheckpoint(s.model, s.run, s.made_from, lambda epoch, history: epoch >= epochs
                              or stopped_early(history, es))
    if isinstance(s.runner, CompiledEpochs):
        return EpochWriter.make(s.model, s.spec, s.steps, s.run, s.made_from, kept=reuse.mirror_for)
    return None


def divergence(epoch: int, logs: dict):
    """(epoch, step, loss) where the loss of `epoch` (0-based) became NaN/inf; None if it did not."""
    if "nan" in logs:
        return (epoch + 1, *logs["nan"])
    if not all(math.isfinite(v) for v in logs.values()):
        return (epoch + 1, "end", next(v for v in logs.values() if not math.isfinite(v)))
    return None


def epoch_record(model, epoch: int, logs: dict, epoch_started: float, changes: dict) -> dict:
    """history.json's record of `epoch` (0-based); `changes` are those --resume applied before it."""
    record = {"epoch": epoch + 1, **logs, "learning_rate": optimizer_record(model.optimizer)["learning_rate"],
              "seconds": round(time.perf_counter() - epoch_started, 4)}
    recorded = {k: [a, b] for k, (a, b) in changes.items() if k != "train.epochs"}  # more epochs: resume's purpose
    if recorded:
        record["changed_on_resume"] = recorded
    return record


def divergence_error(s: Session, nan: tuple, first_epoch: int) -> Exception:
    """The error for a loss that became NaN/inf: DataError when the data overflows, else TrainingError."""
    epoch, step, loss = nan
    t = s.spec.train
    if (epoch, step) == (1, 1) and not first_epoch and isinstance(s.runner, CompiledEpochs):
        # the very first loss is computed before any update: no learning rate is to blame
        return DataError(f"the untrained model's loss on the first batch is already {loss}, before any update: "
                         f"the data's values overflow float32 arithmetic (largest |x| in the training set: "
                         f"{float(np.max(np.abs(s.x_train))):.3g}); rescale them (data.preprocessing.rescale "
                         f"or standardize) or clean the data; the learning rate is not the cause")
    kept = f"the checkpoint of epoch {len(s.history)} is kept" if s.history else "no epoch completed"
    if s.history and not s.checkpoints:
        kept = f"the history of its {len(s.history)} epoch(s) is kept"
    if aside.pending(s.run):  # a fresh start: the earlier run comes back instead (zoo.core.aside)
        kept = "this training's checkpoints are dropped"
    return TrainingError(f"loss became {loss} in epoch {epoch} (by step {step}): training diverged; "
                         f"lower the learning rate (now {t.learning_rate}, try --learning-rate "
                         f"{t.learning_rate / 10:g}); {kept}")


# ----- the finish ---------------------------------------------------------------------------------

def restore_best(s: Session, quiet: bool, log) -> int:
    """The epoch whose weights the model ends with: early stopping's best (its checkpoint's
    weights restored) or the last."""
    es, history = s.spec.train.early_stopping, s.history
    best_epoch = early_stopping_state(history, es)[0] if es else (history[-1]["epoch"] if history else 0)
    if es and history and best_epoch != history[-1]["epoch"]:
        from zoo.stages import build

        kept = s.best_weights if s.best_weights and s.best_weights[0] == best_epoch else None
        s.model.set_weights(kept[1] if kept else build.load_model(checkpoint_path(s.run, best_epoch)).get_weights())
        if not quiet:
            log(f"early stopping: {es.monitor} best in epoch {best_epoch}; restored its weights")
    return best_epoch


def test_metrics(s: Session, best_epoch: int, dataset) -> dict:
    """The test set's loss and accuracy (or MAE) of the model's final weights."""
    history = s.history
    if s.spec.train.validation == "test" and history and best_epoch == history[-1]["epoch"]:
        # the last epoch already evaluated the test set with these weights
        return {k[len("val_"):]: v for k, v in history[-1].items() if k.startswith("val_")}
    return s.runner.evaluate(dataset.x_test, dataset.y_test)


def metrics_record(s: Session, test: dict, best_epoch: int, dataset, device_name: str, wall: float,
                   epochs_run: int) -> dict:
    """metrics.json's content: the test metrics, and how and where they were made."""
    import keras

    history, es, n_train = s.history, s.spec.train.early_stopping, len(s.x_train)
    resumes = [{"after_epoch": h["epoch"] - 1, "changed": h["changed_on_resume"]}
               for h in history if "changed_on_resume" in h]
    metrics = {
        "name": s.spec.name,
        "test": {k: float(v) for k, v in test.items()},
        "epochs": len(history),
        "best_epoch": best_epoch,
        "stopped_early": stopped_early(history, es),
        "optimizer": optimizer_record(s.model.optimizer),
        "changes_on_resume": resumes,
        "train_examples": int(n_train),
        "test_examples": int(len(dataset.x_test)),
        "wall_seconds": round(wall, 3),
        "samples_per_second": round(n_train * epochs_run / wall, 1) if wall > 0 and epochs_run else None,
        "device": device_name,
        "backend": keras.backend.backend(),
        "trainer": type(s.runner).__name__,
        "data": dataset.source,
        "data_dir": dataset.directory,  # export and verify read the test set from here again
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "versions": backend_mod.versions(),
    }
    if s.spec.model.kind == "linear":  # the learned line (an mlp regression's last layer is no line)
        weights = s.model.get_layer(PREDICTIONS).weights[:2]
        kernel, bias = (np.asarray(keras.ops.convert_to_numpy(w)) for w in weights)
        metrics["w"] = kernel.reshape(-1).tolist()
        metrics["b"] = bias.reshape(-1).tolist()
    return metrics


def write_outputs(s: Session, metrics: dict, dataset, with_plots=True) -> None:
    """model.keras, metrics.json, and (`with_plots`) curves.png and, for image classifiers, predictions.png."""
    write_model(s.run, s.model, s.made_from)
    write_metrics(s.run, metrics)
    if dataset.table is not None:  # the fitted preprocessing: part of the model, not a plot
        write_preprocessing(s.run, dataset.table.prep, s.made_from)
    if with_plots:
        write_plots(s.spec, s.run, s.history, s.model, dataset, metrics["best_epoch"])


def write_plots(spec: Spec, run: Path, history: list, model, dataset, best_epoch: int) -> None:
    """curves.png and (for image classifiers) predictions.png of a trained model."""
    import keras

    with provenance.artefact(run, CURVES_PNG, "train", inputs=[HISTORY_FILE]) as tmp:
        plots.curves(history, spec, tmp, best_epoch if spec.train.early_stopping else None)
    if dataset.table is None and spec.is_classifier and len(spec.model.input_shape) == 2:
        logits = keras.ops.convert_to_numpy(model(dataset.x_test[:18], training=False))
        with provenance.artefact(run, PREDICTIONS_PNG, "train", inputs=[MODEL_KERAS]) as tmp:
            plots.predictions(dataset.x_test[:18], dataset.y_test[:18], np.argmax(logits, axis=-1),
                              dataset.class_names, tmp)


def draw_plots(spec: Spec, run: Path, data_dir=None) -> None:
    """The plots of a run trained without them (a sweep's trial), from its files. Call with the run locked."""
    from zoo.core import files
    from zoo.core.contract import METRICS_FILE
    from zoo.stages import build

    provenance.check_chain(run, MODEL_KERAS)
    history = files.read_json(run / HISTORY_FILE)
    model = build.load_model(run / MODEL_KERAS)
    write_plots(spec, run, history, model, load_dataset(spec, data_dir, run=run),
                files.read_json(run / METRICS_FILE)["best_epoch"])
