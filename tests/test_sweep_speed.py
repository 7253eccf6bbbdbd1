"""A sweep's worker reuses one traced model per architecture (zoo.stages.train.reuse): the
trials' results must be exactly those of training each spec afresh, as `zoo run` does."""

from conftest import SPECS

from zoo.core import files
from zoo.stages.train import reuse
from zoo.sweep.grid import plan
from zoo.sweep.worker import run_trial

# seeds 0 and 1 draw different digits splits; batch sizes differ: one trace serves them all
GRID = ["train.learning_rate=0.05,0.2", "train.batch_size=32,64"]


def trained(points, out, keep):
    """Each point trained as a sweep's trial (keeping traced models or not): test metrics, history, model."""
    reuse.keep_traced(keep)
    try:
        found = {}
        for p in points:
            result = run_trial(p.spec, out, export="none", log=lambda m: None)
            run = out / p.run
            history = [{k: v for k, v in h.items() if k != "seconds"} for h in files.read_json(run / "history.json")]
            found[p.run] = (result["metrics"]["test"], history)
        return found
    finally:
        reuse.keep_traced(False)


def test_trials_on_a_kept_trace_match_fresh_trainings_exactly(tmp_path):
    import keras

    points = plan(SPECS / "digits-mlp.json", GRID, "0,1", {"train.epochs": 2}).points
    fresh = trained(points, tmp_path / "fresh", keep=False)
    kept = trained(points, tmp_path / "kept", keep=True)
    assert kept == fresh  # every loss and accuracy, every epoch, to the last bit

    # the kept model was saved under each trial's own name and compile settings, and loads
    for p in points[-2:]:
        model = keras.saving.load_model(tmp_path / "kept" / p.run / "model.keras")
        assert model.name == p.run.replace("-", "_")
        twin = keras.saving.load_model(tmp_path / "fresh" / p.run / "model.keras")
        assert model.get_compile_config() == twin.get_compile_config()
        for a, b in zip(model.get_weights(), twin.get_weights()):
            assert (a == b).all()


def test_one_architecture_is_traced_once_across_seeds_and_batch_sizes(tmp_path):
    points = plan(SPECS / "digits-mlp.json", GRID + ["model.hidden[0].units=16,32"], "0,1",
                  {"train.epochs": 1}).points
    reuse.keep_traced(True)
    try:
        for p in points:
            run_trial(p.spec, tmp_path, export="none", log=lambda m: None)
        kept = list(reuse._kept.values())
        assert len(kept) == 2  # one per hidden width
        # the epoch function was traced once per architecture, whatever the seed's split or batch size
        assert [k.runner._epoch.experimental_get_tracing_count() for k in kept] == [1, 1]
    finally:
        reuse.keep_traced(False)



def test_a_worker_claims_trials_of_a_model_it_has_traced_else_one_no_other_worker_runs(tmp_path):
    from zoo.sweep.study import claim_next, connect, open_study
    from zoo.sweep.worker import affinity, model_key

    storage = connect(f"sqlite:///{tmp_path / 'study.db'}", heartbeat=10)
    grid = plan(SPECS / "digits-mlp.json", ["model.hidden[0].units=16,32"], "0,1")
    (study, _), _ = open_study(storage, "affinity", grid, 10, log=lambda m: None)
    study_id = storage.get_study_id_from_name("affinity")
    spec_of = {t._trial_id: t.user_attrs["zoo:spec"] for t in study.get_trials(deepcopy=False)}
    width = lambda trial_id: spec_of[trial_id]["model"]["hidden"][0]["units"]  # noqa: E731
    # the grid's order: (16, seed 0), (16, seed 1), (32, seed 0), (32, seed 1)
    a, b = set(), set()
    first = claim_next(storage, study_id, affinity(a, storage, study_id))
    second = claim_next(storage, study_id, affinity(b, storage, study_id))  # 16 runs on a: b takes 32
    assert (width(first), width(second)) == (16, 32)
    b.add(model_key(spec_of[second]))
    assert width(claim_next(storage, study_id, affinity(b, storage, study_id))) == 32  # b's trace is warm
    assert width(claim_next(storage, study_id, affinity(b, storage, study_id))) == 16  # none of 32 is left
    assert claim_next(storage, study_id, affinity(a, storage, study_id)) is None
