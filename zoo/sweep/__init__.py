"""zoo sweep: a grid of spec overrides x seeds, trained as trials of an Optuna study.

A sweep goes:

1. `grid.plan`: every combination of the `--set` values and seeds is applied to the
   resolved spec and validated exactly like a spec file, before anything is written or run.
2. `study.open_study`: the first process creates the study and enqueues the grid; every
   other one, on this machine or another, joins it. Workers *claim* trials (`claim_next`).
3. `worker.work` (`python -m zoo.sweep.worker`, one per worker process): claim a trial,
   beat its heartbeat, build, train, export and verify it into an ordinary run folder as
   `zoo run` does, and tell the study the result; a dead worker's trial is retried.
4. `monitor.sweep` (the command) starts N workers, shows progress, stops them, and has
   `report` write results.md, results.csv, summary.csv and sweep.png into `<out>/sweeps/<study>/`.

The worker module is not imported here: `python -m zoo.sweep.worker` runs it as __main__.
"""

from zoo.sweep.grid import Plan, Point, choose_seeds, parse_seeds, parse_set, plan
from zoo.sweep.monitor import SweepInterrupted, sweep
from zoo.sweep.report import results, status

__all__ = ["Plan", "Point", "SweepInterrupted", "choose_seeds", "parse_seeds", "parse_set", "plan", "results", "status", "sweep"]
