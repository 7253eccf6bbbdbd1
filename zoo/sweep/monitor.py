"""The sweep's own process: validate the grid, create or join the study, start N worker
processes (`python -m zoo.sweep.worker`), watch them and the study until no trial is
left, stop them, and write results.md, results.csv, summary.csv and sweep.png into
`<out>/sweeps/<study>/`.

A trial's run folder is `<out>/<spec name>-<hash>`, the hash taken over the resolved spec
its overrides make, so a repeat, or another sweep with the same point, reuses a finished
run instead of training it again.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from zoo.core import runs, signals
from zoo.core.errors import Interrupted, SweepError, TrainingError, UsageError, ZooError, io_error
from zoo.spec.schema import NAME_PATTERN
from zoo.sweep.best import EXPORTED, export_best
from zoo.sweep.grid import plan
from zoo.sweep.report import progress_line, results, write_results
from zoo.sweep.study import (
    EXPORTS,
    GRACE_FACTOR,
    HEARTBEAT_SECONDS,
    connect,
    default_storage,
    final_runs,
    masked,
    normalize_url,
    open_study,
    retrying,
    storage_errors,
    sweep_dir,
    unfinished,
    will_retry,
)

POLL_SECONDS = 0.2  # how often the sweep looks at the study while its trials run
STOP_SECONDS = 10  # a worker gets this long to leave after SIGTERM, then it is killed
EXPORT_SECONDS = 300  # with --export best, the workers get this long to export the best run and leave


class SweepInterrupted(ZooError):
    """Ctrl-C (exit 130) or SIGTERM (143): the workers are stopped; their trials are retried by the next run."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def sweep(spec_file, sets=(), seeds=None, *, fixed=None, metric=None, workers=1, storage_url=None,
          study_name=None, out=None, data_dir=None, device=None, backend=None, heartbeat=HEARTBEAT_SECONDS,
          quiet=False, echo=print, export="best") -> dict:
    """Run a sweep: validate the grid, create or join the study, run N workers, write the results.

    `export`: "best" (the trials are trained only; the best run is then exported and
    verified), "all" (every trial as `zoo run` makes it) or "none".

    Returns the results (see `report.results`). Raises UsageError/SpecError (exit 2) before
    anything runs for a bad grid or an unreachable storage; SweepError (exit 11) when every
    worker stopped with trials unfinished; TrainingError (exit 4) when every trial failed;
    SweepInterrupted (130, 143) on Ctrl-C or SIGTERM.
    """
    if spec_file is None:
        raise UsageError("give a SPEC to sweep (or --status to show the sweeps so far)")
    the_plan = plan(spec_file, sets, seeds, fixed, metric)
    name = study_name or the_plan.default_study
    if not re.match(NAME_PATTERN, name):
        raise UsageError(f"--study {name!r}: use letters, digits, '-' and '_' (it names the folder sweeps/{name[:64]})")
    folder = sweep_dir(out, name)
    if export not in EXPORTS:
        raise UsageError(f"--export {export!r}: choose one of {', '.join(EXPORTS)}")
    early = []
    if storage_url is None:
        _mkdir(folder)
        storage_url = default_storage(out, name)
        # the workers load TensorFlow (seconds) while this process makes the study
        early = _spawn(workers, storage_url, name, out, data_dir, device, backend, heartbeat, folder, early=True)
    try:
        found, exported = _study_and_results(storage_url, name, the_plan, heartbeat, export, folder, out, echo,
                                             early, (workers, data_dir, device, backend, quiet))
    finally:
        _discard(early)  # none when they ran: the sweep stopped them; else they did nothing
    if exported is not None:  # --export best; a worker may have exported it already
        export_best(found["best"]["best_run"]["run_dir"], data_dir, echo, exported)
    return found


def _study_and_results(storage_url, name, the_plan, heartbeat, export, folder, out, echo, early, how) -> tuple:
    """Create or join the study, run its unfinished trials, write the results. Returns (results, the
    study's EXPORTED record or {}, or None without --export best)."""
    workers, data_dir, device, backend, quiet = how
    with storage_errors(storage_url):  # a corrupt study.db or a database gone: exit 2, never 'internal error'
        storage = connect(storage_url)
        (study, definition), created = open_study(storage, name, the_plan, heartbeat, log=lambda m: None,
                                                  export=export)
        _mkdir(folder)
        echo(f"sweep {name}: {definition['trials']} trials ({len(the_plan.points) // len(the_plan.seeds)} "
             f"combinations x {len(the_plan.seeds)} seeds) in {masked(normalize_url(storage_url))}"
             + ("" if created else " (joined)"))
        echo(f"runs go to {runs.runs_root(out).resolve()}/{the_plan.spec_name}-<hash>; results to {folder}")
        report = lambda: _report(study, definition, folder, name, echo)  # noqa: E731
        if unfinished(retrying(study.get_trials, deepcopy=False)):
            procs = list(early) or _spawn(workers, storage_url, name, out, data_dir, device, backend,
                                    definition["heartbeat"], folder)
            early[:] = []  # _run_workers stops them
            found = _run_workers(study, definition, procs, quiet, echo, report)
        else:
            found = report()
        if definition.get("export", "all") != "best":
            return found, None
        return found, retrying(storage.get_study_system_attrs, storage.get_study_id_from_name(name)).get(EXPORTED, {})


def _report(study, definition, folder: Path, name: str, echo) -> dict:
    """Write and show the results; TrainingError (exit 4) when every trial failed."""
    found = results(study, definition)
    write_results(found, folder)
    echo(found["markdown"])
    echo(f"wrote {folder}/results.md, results.csv, summary.csv, sweep.png")
    if not found["best"]:
        raise TrainingError(f"every trial of sweep {name} failed; see {folder}/results.md "
                            f"and the worker logs in {folder}/logs")
    return found


def _run_workers(study, definition, procs, quiet, echo, report) -> dict:
    """Watch the workers until no trial is left, `report()` the results while a worker exports
    the best run, and stop them (also on Ctrl-C or SIGTERM). Returns what `report` found."""
    try:
        with signals.on_signal(_terminate, (signal.SIGTERM,)):  # a scheduler cancelling the job: as Ctrl-C
            _monitor(study, definition, procs, quiet, echo)
            found = report()
            if definition.get("export", "all") == "best":
                _wait(procs, EXPORT_SECONDS)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (errors.Interrupted)
        raise _interrupted(e, definition["heartbeat"]) from None
    finally:
        _stop(procs)
    return found


def _wait(procs, seconds: float) -> None:
    """Wait up to `seconds` for the workers to leave on their own (one exports the best run)."""
    deadline = time.monotonic() + seconds
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return


def _terminate(signum, frame):
    raise Interrupted()


def _interrupted(e: KeyboardInterrupt, heartbeat: int) -> SweepInterrupted:
    """The one line (and exit code) for a sweep stopped by Ctrl-C (130) or SIGTERM (143)."""
    term = isinstance(e, Interrupted)
    return SweepInterrupted(f"{'terminated (SIGTERM)' if term else 'interrupted'}; finished trials are kept: run "
                            f"the same command again to continue (a trial cut short is retried once its "
                            f"heartbeat is {heartbeat * GRACE_FACTOR}s old)", Interrupted.exit_code if term else 130)


def _mkdir(folder: Path):
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        # a read-only file system, permissions or a full disk are the environment's (exit 9); else exit 2
        raise io_error(folder, e, "create the sweep folder") from None


# ----- the workers ------------------------------------------------------------------------------

def _worker_env(n, storage_url, device, backend) -> dict:
    env = dict(os.environ)
    env["ZOO_SWEEP_STORAGE"] = storage_url  # not on the command line: it may hold a password
    if device != "gpu":
        env.setdefault("CUDA_VISIBLE_DEVICES", "-1")  # trials train on CPU; TF then never touches the GPU
    threads = str(max(1, (os.cpu_count() or 1) // n))  # n workers share the cores instead of fighting over them
    for var in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
        env.setdefault(var, threads)
    env.setdefault("TF_NUM_INTEROP_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"  # the log holds every line up to a kill
    if backend:
        env["KERAS_BACKEND"] = backend
    return env


def _spawn(n, storage_url, study_name, out, data_dir, device, backend, heartbeat, folder, early=False) -> list:
    """Start n worker processes (`early`: before the study exists); their output goes to <sweep>/logs/."""
    # imported here, not at the top: `python -m zoo.sweep.worker` must not find itself imported already
    from zoo.sweep.worker import command

    logs = folder / "logs"
    _mkdir(logs)
    env = _worker_env(n, storage_url, device, backend)
    cmd = command(study_name, heartbeat=heartbeat, out=out, data_dir=data_dir, device=device, early=early)
    procs = []
    for i in range(n):
        log_path = logs / f"worker-{socket.gethostname()}-{os.getpid()}-{i}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        proc.log_path = log_path
        procs.append(proc)
    return procs


def _stop(procs):
    """SIGTERM every worker still running; kill those not gone STOP_SECONDS later."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _discard(procs) -> None:
    """Stop workers that were started early and not used, and remove their logs."""
    _stop(procs)
    for p in procs:
        with contextlib.suppress(OSError):
            p.log_path.unlink()


def _say_dead(procs, reported: set, echo) -> None:
    """One line for each local worker that stopped with an error since the last look."""
    for p in procs:
        code = p.poll()
        if code is not None and p.pid not in reported:
            reported.add(p.pid)
            if code:
                how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
                echo(f"worker pid {p.pid} {how}; its trial goes back to the others (log: {p.log_path})")


class _Progress:
    """A progress line per finished trial: above a tqdm bar on a terminal, else echoed (unless quiet)."""

    def __init__(self, definition, quiet, echo):
        self.definition, self.quiet, self.echo, self.seen, self.bar = definition, quiet, echo, set(), None
        self.counted = set()  # the runs a progress line has counted: each line's [n/total] is one more
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=definition["trials"], unit="trial", file=sys.stderr, dynamic_ncols=True)

    def update(self, trials) -> None:
        done = len(final_runs(trials))
        for t in trials:
            if not t.state.is_finished() or t.number in self.seen:
                continue
            self.seen.add(t.number)
            if will_retry(t):
                continue  # its worker died; a copy runs again
            self.counted.add(t.user_attrs.get("zoo:run", t.number))
            line = progress_line(t, self.definition, len(self.counted), self.definition["trials"])
            if self.bar is not None:
                self.bar.write(line)
            elif not self.quiet:
                self.echo(line)
        if self.bar is not None:
            self.bar.n = done
            running = sum(t.state.name == "RUNNING" for t in trials)
            self.bar.set_postfix_str(f"{running} running", refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _monitor(study, definition, procs, quiet, echo):
    """Show progress until no trial is waiting or running; say when a local worker dies.

    Raises SweepError when every local worker stopped, one of them with an error, while
    trials are still unfinished.
    """
    progress, reported = _Progress(definition, quiet, echo), set()
    try:
        while True:
            trials = retrying(study.get_trials, deepcopy=False)
            progress.update(trials)
            _say_dead(procs, reported, echo)
            left = unfinished(trials)
            if not left:
                return
            if all(p.poll() is not None for p in procs):
                if all(p.returncode == 0 for p in procs):  # ours are done; other machines' workers still run
                    time.sleep(1)
                    continue
                raise SweepError(f"every worker stopped with {len(left)} trial(s) unfinished; see "
                                 f"{procs[0].log_path.parent}; run the same command again to continue")
            time.sleep(POLL_SECONDS)
    finally:
        progress.close()

