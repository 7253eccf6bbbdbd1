"""What a sweep found: every trial's outcome, mean ± std over seeds per combination, the
best; as markdown (results.md, the terminal), CSV (results.csv, summary.csv), a plot
(sweep.png), a progress line per trial, and `status` for a sweep that runs or ran.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path

from zoo.core import files, runs
from zoo.core.errors import UsageError
from zoo.sweep.grid import SEED_KEY, combo_label, plan
from zoo.sweep.study import (
    ATTR,
    MAX_RETRIES,
    STUDY_DB,
    connect,
    default_storage,
    final_runs,
    join_study,
    masked,
    normalize_url,
    retried,
    retrying,
    stale,
    storage_errors,
    sweep_dir,
    unparam,
    will_retry,
)

RESULTS_MD, RESULTS_CSV, SUMMARY_CSV, SWEEP_PNG = "results.md", "results.csv", "summary.csv", "sweep.png"


def progress_line(t, definition, done, total) -> str:
    """`[done/total] <run>  <values>  <metric or error>  <seconds>`: one finished trial."""
    where = t.user_attrs.get("zoo:run", "?")
    params = combo_label({k: t.params.get(k) for k in [*definition["keys"], SEED_KEY] if k in t.params})
    if t.state.name == "COMPLETE":
        what = f"{definition['metric']} {t.value:.4f}" + (" (reused)" if t.user_attrs.get("zoo:reused") else "")
    else:
        what = t.user_attrs.get("zoo:error") or t.state.name.lower()
    seconds = t.user_attrs.get("zoo:seconds")
    return f"[{done}/{total}] {where}  {params}  {what}" + (f"  {seconds:.1f}s" if seconds is not None else "")


# ----- results ----------------------------------------------------------------------------

def results(study, definition) -> dict:
    """Every trial's outcome, mean ± std over seeds per combination, the best, as tables."""
    trials = retrying(study.get_trials, deepcopy=False)
    by_run = {}
    for t in sorted(trials, key=lambda t: t.number):
        run = t.user_attrs.get("zoo:run")
        if run is None or will_retry(t):
            continue
        if t.state.name == "COMPLETE" or run not in by_run or by_run[run]["state"] != "complete":
            by_run[run] = _row(t, definition)
    rows = [by_run.get(run) or {"run": run, "state": "missing"} for run in definition["runs"]]
    summary = _summary(rows)
    found = {"definition": definition, "rows": rows, "summary": summary, "best": _best(rows, summary, definition),
             "retried": len(retried(trials)), "study": study.study_name}
    found["markdown"] = markdown(found)
    return found


def _row(t, definition) -> dict:
    fixed = t.system_attrs.get("fixed_params", {})
    values = {}
    for k in definition["keys"]:
        values[k] = unparam(t.params.get(k, fixed.get(k)), definition["choices"][k])
    return {"trial": t.number, "run": t.user_attrs.get("zoo:run"), "values": values,
            "seed": t.params.get(SEED_KEY, fixed.get(SEED_KEY)), "state": t.state.name.lower(),
            "test": t.user_attrs.get("zoo:test", {}), "train_seconds": t.user_attrs.get("zoo:train_seconds"),
            "seconds": t.user_attrs.get("zoo:seconds"), "reused": t.user_attrs.get("zoo:reused", False),
            "other_seconds": _other_seconds(t),
            "run_dir": t.user_attrs.get("zoo:run_dir"),
            "error": t.user_attrs.get("zoo:error") or (f"its worker died {MAX_RETRIES + 1} times" if stale(t) else ""),
            "worker": t.user_attrs.get("zoo:worker", "")}


def _other_seconds(t) -> float | None:
    """A trial's seconds not spent in the epochs: build, data, checkpoints, plots, writes (and export)."""
    seconds, train = t.user_attrs.get("zoo:seconds"), t.user_attrs.get("zoo:train_seconds")
    if seconds is None or t.state.name != "COMPLETE":
        return None
    return round(seconds if t.user_attrs.get("zoo:reused") or train is None else seconds - train, 3)


def _summary(rows) -> list[dict]:
    """Per combination: completed seeds of all, (mean, std) of each test metric, the runs."""
    combos = {}
    for row in rows:
        if "values" in row:
            combos.setdefault(json.dumps(row["values"]), []).append(row)
    summary = []
    for key, group in combos.items():
        done = [r for r in group if r["state"] == "complete"]
        stats = {}
        for m in (done[0]["test"] if done else {}):
            xs = [r["test"][m] for r in done]
            stats[m] = (statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)
        summary.append({"values": json.loads(key), "n": len(done), "of": len(group), "stats": stats,
                        "runs": [r["run_dir"] for r in done]})
    return summary


def _best(rows, summary, definition) -> dict | None:
    """The combination with the best mean, and its best run; None when no trial completed."""
    metric, sign = definition["metric"], 1 if definition["direction"] == "maximize" else -1
    ranked = [s for s in summary if metric in s["stats"]]
    if not ranked:
        return None
    best = max(ranked, key=lambda s: sign * s["stats"][metric][0])
    best_rows = [r for r in rows if r["state"] == "complete" and r["values"] == best["values"]]
    return {**best, "best_run": max(best_rows, key=lambda r: sign * r["test"][metric])}


def _fmt(x, digits=4):
    return "" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def markdown(found) -> str:
    d, rows = found["definition"], found["rows"]
    metrics = sorted({m for r in rows for m in r.get("test", {})}, key=lambda m: (m != d["metric"], m))
    title = f"## Sweep {found['study']}: {d['spec']}, {d['trials']} trials, ranked by test {d['metric']} ({d['direction']})"
    lines = [title, "", *_trials_table(d, ranked(rows, d), metrics), "",
             *_summary_table(d, ranked(found["summary"], d), metrics), ""]
    best = found["best"]
    if best:
        mean, std = best["stats"][d["metric"]]
        b = best["best_run"]
        lines.append(f"Best: {combo_label(best['values'])}: test {d['metric']} {mean:.4f} ± {std:.4f} over "
                     f"{best['n']} seed(s); its best run: {b['run_dir']} (seed {b['seed']}, {d['metric']} "
                     f"{b['test'][d['metric']]:.4f})")
    else:
        lines.append("Best: none (no trial completed)")
    failed = [r for r in rows if r["state"] == "fail"]
    if failed or found["retried"]:
        lines.append(f"{len(failed)} trial(s) failed; {found['retried']} retried after their worker died")
    return "\n".join(lines) + "\n"


def ranked(rows, d) -> list[dict]:
    """Trials (or combinations) best first by the sweep's metric; those without it last, in grid order."""
    sign = -1 if d["direction"] == "maximize" else 1

    def key(r):
        value = r["stats"][d["metric"]][0] if "stats" in r and d["metric"] in r["stats"] else \
            r.get("test", {}).get(d["metric"]) if r.get("state") == "complete" else None
        return (value is None, 0.0 if value is None else sign * value)

    return sorted(rows, key=key)  # stable: ties keep grid order


def _trials_table(d, rows, metrics) -> list[str]:
    head = [*d["keys"], "seed", "state", *metrics, "train s", "other s", "trial s", "run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "values" not in r:
            lines.append(f"| {r['run']} | {r['state']} |")
            continue
        state = r["state"] + (" (reused)" if r["reused"] else "") + (f": {r['error']}" if r["error"] else "")
        cells = [json.dumps(r["values"][k]) for k in d["keys"]] + [str(r["seed"]), state]
        cells += [_fmt(r["test"].get(m)) for m in metrics] + [_fmt(r["train_seconds"], 2), _fmt(r["other_seconds"], 2),
                                                            _fmt(r["seconds"], 2),
                                                            Path(r["run_dir"]).name if r["run_dir"] else r["run"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def _summary_table(d, summary, metrics) -> list[str]:
    lines = ["### Mean ± std over seeds", "",
             "| " + " | ".join([*d["keys"], "seeds", *metrics]) + " |", "|" + "---|" * (len(d["keys"]) + 1 + len(metrics))]
    for s in summary:
        cells = [json.dumps(s["values"][k]) for k in d["keys"]] + [f"{s['n']}/{s['of']}"]
        cells += [f"{s['stats'][m][0]:.4f} ± {s['stats'][m][1]:.4f}" if m in s["stats"] else "" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


# ----- files ------------------------------------------------------------------------------

def write_results(found, folder: Path) -> None:
    """results.csv, summary.csv, results.md and sweep.png into the sweep's folder."""
    metrics = sorted({m for r in found["rows"] for m in r.get("test", {})})
    files.write_text(folder / RESULTS_CSV, _results_csv(found, metrics))
    files.write_text(folder / SUMMARY_CSV, _summary_csv(found, metrics))
    files.write_text(folder / RESULTS_MD, found["markdown"])
    plot(found, folder / SWEEP_PNG)


def _csv(value):
    return value if isinstance(value, (int, float, str)) else json.dumps(value)


def _results_csv(found, metrics) -> str:
    d = found["definition"]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["trial", "run", *d["keys"], "seed", "state", *(f"test_{m}" for m in metrics),
                "train_seconds", "other_seconds", "trial_seconds", "reused", "run_dir", "worker", "error"])
    for r in found["rows"]:
        if "values" not in r:
            w.writerow(["", r["run"], *[""] * (len(d["keys"]) + 1), r["state"]])
            continue
        w.writerow([r["trial"], r["run"], *(_csv(r["values"][k]) for k in d["keys"]), r["seed"], r["state"],
                    *(r["test"].get(m, "") for m in metrics), r["train_seconds"] or "",
                    "" if r["other_seconds"] is None else r["other_seconds"], r["seconds"] or "",
                    r["reused"], r["run_dir"] or "", r["worker"], r["error"]])
    return out.getvalue()


def _summary_csv(found, metrics) -> str:
    keys = found["definition"]["keys"]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow([*keys, "seeds_completed", "seeds", *(f"{m}_{s}" for m in metrics for s in ("mean", "std")), "runs"])
    for s in found["summary"]:
        w.writerow([*(_csv(s["values"][k]) for k in keys), s["n"], s["of"],
                    *(v for m in metrics for v in (s["stats"].get(m, ("", ""))[0], s["stats"].get(m, ("", ""))[1])),
                    " ".join(s["runs"])])
    return out.getvalue()


def plot(found, path: Path) -> None:
    """The metric against each swept parameter: every trial a dot, the mean per value a line."""
    from zoo.stages.plots import _pyplot

    plt = _pyplot()
    d = found["definition"]
    metric = d["metric"]
    done = [r for r in found["rows"] if r["state"] == "complete"]
    keys = d["keys"] or [SEED_KEY]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4), dpi=100, squeeze=False)
    for ax, key in zip(axes[0], keys):
        choices = d["choices"].get(key, d["seeds"])  # one evenly spaced slot per value, as the grid has them
        value_of = (lambda r: r["seed"]) if key == SEED_KEY else (lambda r, k=key: r["values"][k])
        means = []
        for i, c in enumerate(choices):
            ys = [r["test"][metric] for r in done if json.dumps(value_of(r)) == json.dumps(c)]
            ax.scatter([i] * len(ys), ys, s=14, alpha=0.6, color="tab:blue", label="a trial" if i == 0 else None)
            means.append(statistics.fmean(ys) if ys else math.nan)
        ax.plot(range(len(choices)), means, marker="o", color="tab:orange", label="mean")
        ax.set_xticks(range(len(choices)), [json.dumps(c) if not isinstance(c, str) else c for c in choices])
        ax.set_xlim(-0.5, len(choices) - 0.5)
        ax.set_xlabel(key)
        ax.set_ylabel(f"test {metric}")
        ax.grid(True, alpha=0.3)
    axes[0][0].legend()
    fig.suptitle(f"{d['spec']}: {len(done)} trials", fontsize=10)
    fig.tight_layout()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


# ----- status -----------------------------------------------------------------------------

def status(storage_url=None, study_name=None, out=None, *, spec=None, sets=(), seeds=None, fixed=None, metric=None,
           echo=print) -> None:
    """Print the progress of one sweep, or of every sweep in a storage (or under <out>/sweeps).

    With `spec` (and the grid as `zoo sweep` takes it) and no `study_name`: the sweep that grid names.
    """
    if study_name is None and spec is not None:
        study_name = plan(spec, sets, seeds, fixed, metric).default_study
    root = runs.runs_root(out).resolve() / "sweeps"
    if storage_url is None and study_name is None:
        found = sorted(root.glob(f"*/{STUDY_DB}"))
        if not found:
            raise UsageError(f"no sweep under {root}; give --storage URL and --study NAME")
        for db in found:
            with storage_errors(f"sqlite:///{db}"):  # a corrupt study.db: exit 2, never 'internal error'
                _status_of(connect(f"sqlite:///{db}"), db.parent.name, echo, table=False)
        return
    url = storage_url or default_storage(out, study_name)
    if storage_url is None and not (sweep_dir(out, study_name) / STUDY_DB).is_file():
        raise UsageError(f"no sweep {study_name} under {root}; give --storage URL")
    with storage_errors(url):
        storage = connect(url)
        if study_name is None:
            studies = [s.study_name for s in storage.get_all_studies() if ATTR in s.system_attrs]
            if not studies:
                raise UsageError(f"--storage {masked(normalize_url(url))}: no zoo sweep in it yet")
            for name in studies:
                _status_of(storage, name, echo, table=False)
            return
        _status_of(storage, study_name, echo, table=True)


def _status_of(storage, name, echo, table):
    study, definition = join_study(storage, name, wait=0)
    trials = retrying(study.get_trials, deepcopy=False)
    count = {}
    for t in trials:
        if not will_retry(t):
            count[t.state.name.lower()] = count.get(t.state.name.lower(), 0) + 1
    parts = [f"{count.get(s, 0)} {s}" for s in ("complete", "running", "waiting", "fail") if count.get(s)]
    echo(f"{name}: {len(final_runs(trials))}/{definition['trials']} trials finished ({', '.join(parts) or 'none yet'})")
    for t in trials:
        if t.state.name == "RUNNING":
            echo(f"  running: {t.user_attrs.get('zoo:run')} on {t.user_attrs.get('zoo:worker', '?')}")
    if table:
        echo(results(study, definition)["markdown"])
