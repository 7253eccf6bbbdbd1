"""K-fold cross-validation of the training set, as d2l's `k_fold`, before the final model.

The training set is shuffled once (seeded) and cut into k folds; fold i trains a fresh
model (same spec, same seed) on the other k - 1 folds and evaluates it on fold i. A table
refits its preprocessing on each fold's training rows, so a fold never sees statistics of
the rows it is scored on. No fold writes a file: the figures go to metrics.json's "cv",
per fold and as mean ± std, and on screen; then the final model trains on the whole
training set as usual.

Resume: once every fold has finished, the figures are recorded in the run (cv.json, with
the digests of the data and of the training settings they were made with) before the final
model's first epoch. `--resume` keeps them when both digests still match, so a resumed run
ends with the metrics.json of an uninterrupted one without training the folds again; a run
interrupted during the folds (or resumed with changed settings: more epochs, another
learning rate) cross-validates again, as an uninterrupted run of that spec would.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from zoo.core import files, provenance
from zoo.core.contract import CV_FILE
from zoo.core.errors import DataError, TrainingError
from zoo.spec import Spec, resolve
from zoo.stages.train.loop import epoch_permutation, epoch_runner
from zoo.stages.train.recipe import compile_model, learning_rate_at

FOLD_SEED_OFFSET = 7919  # the folds' shuffle: apart from the epochs' (seed, epoch) permutations


def fold_indices(n: int, k: int, seed: int) -> list[np.ndarray]:
    """k disjoint index arrays covering range(n), sizes differing by at most one."""
    if n < k:
        raise DataError(f"{n} training examples are too few for {k} folds (train.folds)")
    order = np.random.default_rng(seed + FOLD_SEED_OFFSET).permutation(n)
    return [np.sort(part) for part in np.array_split(order, k)]


def with_rmse(spec: Spec, metrics: dict) -> dict:
    """A table regression's metrics with the RMSE added (of log(y) under target_transform 'log')."""
    if spec.is_classifier or not spec.is_table:
        return metrics
    key = "log_rmse" if spec.data.target_transform == "log" else "rmse"
    return {**metrics, key: math.sqrt(max(metrics["loss"], 0.0))}


def _fold_data(spec: Spec, dataset, train_idx, val_idx):
    if dataset.table is None:
        return (dataset.x_train[train_idx], dataset.y_train[train_idx],
                dataset.x_train[val_idx], dataset.y_train[val_idx])
    from zoo.stages import tabular

    t = dataset.table
    rows = t.train
    prep = tabular.fit(rows.take(train_idx), spec)
    return (prep.encode(rows.take(train_idx)), dataset.y_train[train_idx],
            prep.encode(rows.take(val_idx)), dataset.y_train[val_idx])


def train_fold(spec: Spec, x_tr, y_tr, x_va, y_va, compiled=None) -> dict:
    """One fold: a fresh model trained for train.epochs on (x_tr, y_tr), scored on (x_va, y_va)."""
    from zoo.stages import build

    t = spec.train
    model = build.build_model(spec, x_tr.shape[1:] if spec.is_table else None)
    build.adapt(model, x_tr)
    compile_model(model, spec, math.ceil(len(x_tr) / t.batch_size))
    runner = epoch_runner(model, spec, x_tr, y_tr, compiled)
    for epoch in range(t.epochs):
        model.optimizer.learning_rate.assign(learning_rate_at(t, epoch))
        logs = runner.train_epoch(epoch_permutation(len(x_tr), t.seed, epoch), t.batch_size)
        if "nan" in logs or not all(math.isfinite(v) for v in logs.values()):
            raise TrainingError(f"cross-validation: the loss became NaN/inf in epoch {epoch + 1}; "
                                f"lower the learning rate (now {t.learning_rate})")
    return with_rmse(spec, runner.evaluate(x_va, y_va))


def cross_validate(spec: Spec, dataset, compiled=None, log=print, quiet=False) -> dict:
    """metrics.json's "cv": {"folds", "per_fold": [...], "mean": {...}, "std": {...}}."""
    k = spec.train.folds
    parts = fold_indices(len(dataset.x_train), k, spec.train.seed)
    per_fold = []
    for i, val_idx in enumerate(parts):
        train_idx = np.concatenate([p for j, p in enumerate(parts) if j != i])
        figures = train_fold(spec, *_fold_data(spec, dataset, train_idx, val_idx), compiled)
        per_fold.append({"fold": i + 1, "examples": int(len(val_idx)), **figures})
        if not quiet:
            log(f"fold {i + 1}/{k}: " + "  ".join(f"{n} {v:.4f}" for n, v in figures.items()))
    names = [n for n in per_fold[0] if n not in ("fold", "examples")]
    mean = {n: float(np.mean([f[n] for f in per_fold])) for n in names}
    std = {n: float(np.std([f[n] for f in per_fold])) for n in names}
    if not quiet:
        log(f"{k}-fold cross-validation: " + "  ".join(f"{n} {mean[n]:.4f} ± {std[n]:.4f}" for n in names))
    return {"folds": k, "per_fold": per_fold, "mean": mean, "std": std}


# ----- the recorded figures, for --resume ----------------------------------------------------

NOT_TRAINING = ("name", "description", "export")  # keys that change nothing the folds compute


def settings_digest(spec: Spec) -> str:
    """sha256 of what the folds' figures depend on: the resolved model, data and train settings."""
    settings = {k: v for k, v in resolve(spec).items() if k not in NOT_TRAINING}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def record_cv(run: Path, spec: Spec, cv: dict, data_digest: str) -> None:
    """cv.json: the finished folds' figures, recorded with the data and settings they come from."""
    provenance.save_json(run, CV_FILE, cv, "train", extra={"@data": data_digest, "@settings": settings_digest(spec)})


def recorded_cv(run: Path, spec: Spec, data_digest: str) -> dict | None:
    """The figures cv.json holds when they were made from this data with these settings, else None.
    A cv.json edited by hand is a ProvenanceError (exit 8), as any artefact is."""
    if not (Path(run) / CV_FILE).exists():
        return None
    made_from = provenance.check(run, CV_FILE, stage="train")["inputs"]
    if made_from.get("@data") != data_digest or made_from.get("@settings") != settings_digest(spec):
        return None
    return files.read_json(Path(run) / CV_FILE)


def run_folds(spec: Spec, run: Path, dataset, resumed: bool, compiled=None, log=print, quiet=False) -> dict:
    """metrics.json's "cv" for a train_run: the recorded figures on a resume that may keep them
    (recorded_cv), else the folds trained now and recorded."""
    cv = recorded_cv(run, spec, dataset.digest()) if resumed else None
    if cv is not None:
        if not quiet:
            mean, std = cv["mean"], cv["std"]
            log(f"{cv['folds']}-fold cross-validation (kept from before the interruption, {CV_FILE}): "
                + "  ".join(f"{n} {mean[n]:.4f} ± {std[n]:.4f}" for n in mean))
        return cv
    if resumed and not quiet:
        log(f"cross-validating again: {CV_FILE} holds no finished folds of this data with these training settings")
    cv = cross_validate(spec, dataset, compiled, log, quiet)
    record_cv(run, spec, cv, dataset.digest())
    return cv
