"""zoo.sweep.report and the monitor's progress lines, on real Optuna trials (no training)."""

import pytest

optuna = pytest.importorskip("optuna", reason="zoo sweep needs the sweep extra: pip install -e '.[sweep]'")

from zoo.sweep.monitor import _Progress  # noqa: E402
from zoo.sweep.report import markdown, ranked  # noqa: E402

DEFINITION = {"spec": "digits-mlp", "keys": ["train.learning_rate"], "metric": "accuracy", "direction": "maximize",
              "trials": 4, "runs": ["r0", "r1", "r2", "r3"], "seeds": [0], "choices": {}}


def trial(number, run, accuracy=None):
    state = optuna.trial.TrialState.COMPLETE if accuracy is not None else optuna.trial.TrialState.FAIL
    attrs = {"zoo:run": run, "zoo:seconds": 1.0, **({} if accuracy is not None else {"zoo:error": "TrainingError"})}
    t = optuna.trial.create_trial(state=state, value=accuracy, user_attrs=attrs)
    t.number = number
    return t


def test_two_trials_finishing_between_two_looks_get_their_own_count():
    said = []
    progress = _Progress(DEFINITION, quiet=False, echo=said.append)
    progress.update([trial(0, "r0", 0.9), trial(1, "r1", 0.8)])
    progress.update([trial(0, "r0", 0.9), trial(1, "r1", 0.8), trial(2, "r2", 0.7), trial(3, "r3")])
    assert [line.split()[0] for line in said] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]


def row(run, accuracy, state="complete"):
    return {"trial": 0, "run": run, "values": {"train.learning_rate": run}, "seed": 0, "state": state,
            "test": {} if accuracy is None else {"accuracy": accuracy}, "train_seconds": 1.0, "seconds": 2.0, "other_seconds": 1.0,
            "reused": False, "run_dir": f"/x/{run}", "error": "", "worker": ""}


def test_the_table_headed_ranked_is_ranked_best_first_and_failures_last():
    rows = [row("a", 0.5), row("b", None, "fail"), row("c", 0.9), row("d", 0.7)]
    assert [r["run"] for r in ranked(rows, DEFINITION)] == ["c", "d", "a", "b"]
    assert [r["run"] for r in ranked(rows, {**DEFINITION, "direction": "minimize"})] == ["a", "d", "c", "b"]
    summary = [{"values": {"train.learning_rate": k}, "n": 1, "of": 1, "stats": {"accuracy": (v, 0.0)}, "runs": []}
               for k, v in (("a", 0.5), ("c", 0.9))]
    found = {"definition": DEFINITION, "rows": rows, "summary": summary, "best": None, "retried": 0, "study": "s"}
    table = markdown(found)
    assert "ranked by test accuracy" in table
    order = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith('| "')]
    assert order == ['"c"', '"d"', '"a"', '"b"', '"c"', '"a"'], table  # the trials, then the combinations


def test_the_missing_extra_is_named_as_the_readme_installs_it():
    from conftest import ROOT

    from zoo.sweep.study import INSTALL

    assert INSTALL == "pip install -e '.[sweep]'" and INSTALL in (ROOT / "README.md").read_text()
