"""A sweep's best run, exported and verified once (`--export best`), and what a reused run must hold.

The worker that finds the study finished (no trial waiting or running) exports the best
run itself: it has Keras loaded and its traces warm, and the sweep's own process writes
the results meanwhile. It records that on the study (`EXPORTED`), so the sweep's process
says what was made. Where no worker did (every run was reused, a worker's export failed,
or the workers are on other machines), the sweep's process exports it; a run already
exported and verified is left as it is, so the export happens once.
"""

from __future__ import annotations

import time
from pathlib import Path

from zoo.core import files, provenance, runs
from zoo.core.contract import METRICS_FILE, MODEL_KERAS, MODEL_ONNX, SPEC_FILE, VERIFY_FILE
from zoo.core.errors import RunLockedError, ZooError

TRAINED_FILES = (SPEC_FILE, METRICS_FILE, MODEL_KERAS)  # what a reused run must hold, as recorded ...
REUSED_FILES = (*TRAINED_FILES, MODEL_ONNX, VERIFY_FILE)  # ... and with --export all
EXPORTED = "zoo:exported"  # the study's system attribute: {"run", "status", "seconds", "worker"} of the best run's export


def finished_run(run: Path, spec: dict, export="all") -> dict | None:
    """metrics.json of a run trained from this very spec (with `export` "all": also exported
    and verified); else None.

    Every file it relies on must be the one its provenance record names, and made from what
    the record says (check_chain): a run edited by hand, or left half-made, is trained again.
    """
    exported = export == "all"
    try:
        for name in REUSED_FILES if exported else TRAINED_FILES:
            provenance.check_chain(run, name)
        if files.read_json(run / SPEC_FILE) != spec:
            return None
        if exported and files.read_json(run / VERIFY_FILE).get("status") != "passed":
            return None
        return files.read_json(run / METRICS_FILE)
    except (ZooError, OSError):
        return None


def export_run(run: Path, data_dir) -> dict | None:
    """Draw the plots of a run trained without them, export it and verify it. Returns
    {"status", "seconds"}, or None where another process holds the run (it exports it)."""
    from zoo import api
    from zoo.core.backend import import_keras

    started = time.perf_counter()
    try:
        with runs.locked(run, create=False):  # its trial was trained without plots: draw them now
            import_keras()
            from zoo.stages.train.trainer import draw_plots

            draw_plots(api.load_spec(run / SPEC_FILE), run, data_dir)
        report = api.export(run, data_dir=data_dir)
    except RunLockedError:  # another worker, machine or process got there first
        return None
    return {"status": report["status"], "seconds": round(time.perf_counter() - started, 3)}


def export_best(run_dir: str, data_dir, echo, by_worker: dict | None = None) -> None:
    """Export and verify the sweep's best run, once; say what was made. `by_worker` is the
    study's EXPORTED record, where a worker exported a run."""
    run = Path(run_dir)
    made = " (and drew its plots): model.onnx, card.md; verify.json"
    if finished_run(run, files.read_json(run / SPEC_FILE), "all") is not None:
        if by_worker and by_worker.get("run") == str(run):
            echo(f"exported the best run {run}{made} {by_worker['status']} ({by_worker['seconds']:.1f}s, "
                 f"by worker {by_worker['worker']})")
        else:
            echo(f"the best run {run} is exported and verified (model.onnx, card.md, verify.json)")
        return
    done = export_run(run, data_dir)
    if done is None:
        echo(f"the best run {run} is being exported by another process")
        return
    echo(f"exported the best run {run}{made} {done['status']} ({done['seconds']:.1f}s)")
