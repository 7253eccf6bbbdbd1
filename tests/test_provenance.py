"""zoo.core.provenance: every artefact's record, the cascade that removes what was made from an
old version, and the checks that name a file edited by hand. Plain files, no TensorFlow."""

import json

import pytest

from zoo.core import contract, provenance, runs
from zoo.core.errors import ProvenanceError, UsageError


@pytest.fixture
def run(tmp_path):
    folder = tmp_path / "exports" / "demo"
    with runs.locked(folder):
        provenance.save_text(folder, contract.SPEC_FILE, "{}\n", "build")
        provenance.save_text(folder, contract.MODEL_KERAS, "weights v1", "train", inputs=[contract.SPEC_FILE])
        provenance.save_json(folder, contract.METRICS_FILE, {"test": {"accuracy": 0.5}}, "train",
                             inputs=[contract.MODEL_KERAS])
        provenance.save_text(folder, contract.MODEL_ONNX, "onnx v1", "export",
                             inputs=[contract.MODEL_KERAS, contract.METRICS_FILE])
        provenance.save_text(folder, contract.CARD_FILE, "# card", "export", inputs=[contract.MODEL_ONNX])
    return folder


def test_each_artefact_is_recorded_with_its_stage_digest_and_inputs(run):
    entries = provenance.manifest(run)
    assert set(entries) == {contract.SPEC_FILE, contract.MODEL_KERAS, contract.METRICS_FILE, contract.MODEL_ONNX,
                            contract.CARD_FILE}
    onnx = entries[contract.MODEL_ONNX]
    assert onnx["stage"] == "export" and onnx["sha256"] == provenance.digest(run / contract.MODEL_ONNX)
    assert onnx["inputs"] == {contract.MODEL_KERAS: entries[contract.MODEL_KERAS]["sha256"],
                              contract.METRICS_FILE: entries[contract.METRICS_FILE]["sha256"]}


def test_a_new_version_removes_everything_made_from_the_old_one_transitively(run):
    with runs.locked(run):
        provenance.save_text(run, contract.MODEL_KERAS, "weights v2", "train", inputs=[contract.SPEC_FILE])
    assert not (run / contract.METRICS_FILE).exists() and not (run / contract.MODEL_ONNX).exists()
    assert not (run / contract.CARD_FILE).exists()
    assert set(provenance.manifest(run)) == {contract.SPEC_FILE, contract.MODEL_KERAS}


def test_rewriting_identical_content_keeps_what_was_made_from_it(run):
    with runs.locked(run):
        provenance.save_text(run, contract.MODEL_KERAS, "weights v1", "train", inputs=[contract.SPEC_FILE])
    assert (run / contract.CARD_FILE).exists()
    provenance.check_chain(run, contract.CARD_FILE)


@pytest.mark.parametrize("name", [contract.MODEL_ONNX, contract.METRICS_FILE, contract.SPEC_FILE])
def test_a_file_edited_by_hand_is_named_with_the_command_that_remakes_it(run, name):
    (run / name).write_text("edited by hand")
    with pytest.raises(ProvenanceError) as e:
        provenance.check(run, name)
    assert str(run / name) in str(e.value) and "edited or replaced by hand" in str(e.value)


def test_check_chain_names_a_parent_changed_under_its_child(run):
    (run / contract.MODEL_KERAS).write_text("weights changed behind zoo's back")
    with pytest.raises(ProvenanceError, match="model.keras"):
        provenance.check_chain(run, contract.CARD_FILE)
    assert not provenance.onnx_is_current(run)


def test_a_file_copied_in_has_no_record_and_a_missing_one_is_a_usage_error(run):
    (run / "extra.txt").write_text("copied in")
    with pytest.raises(ProvenanceError, match="has no provenance record"):
        provenance.check(run, "extra.txt")
    with pytest.raises(UsageError, match="no such file in the run"):
        provenance.check(run, "absent.txt")


def test_the_stage_is_checked_when_asked(run):
    assert provenance.check(run, contract.MODEL_ONNX, stage="export")["stage"] == "export"
    with pytest.raises(ProvenanceError, match="not by `zoo train`"):
        provenance.check(run, contract.MODEL_ONNX, stage="train")


def test_a_manifest_edited_into_garbage_is_refused(run):
    (run / contract.MANIFEST).write_text(json.dumps({"model.onnx": "no digest"}))
    with pytest.raises(ProvenanceError, match="not a provenance record zoo wrote"):
        provenance.manifest(run)


def test_invalidate_removes_an_artefact_and_its_descendants(run):
    with runs.locked(run):
        gone = provenance.invalidate(run, contract.MODEL_ONNX)
    assert contract.CARD_FILE in gone and not (run / contract.CARD_FILE).exists()
    assert (run / contract.MODEL_KERAS).exists()


def test_onnx_is_current_and_made_from(run):
    assert provenance.onnx_is_current(run)
    made = provenance.made_from(run)
    assert set(made) == {contract.SPEC_FILE, contract.MODEL_KERAS, contract.METRICS_FILE}


def test_record_folder_records_every_file_under_it(run):
    (run / contract.WEB_DIR).mkdir()
    (run / contract.WEB_DIR / "index.html").write_text("<p>")
    with runs.locked(run):
        provenance.record_folder(run, contract.WEB_DIR, "export", inputs=[contract.MODEL_ONNX])
    provenance.check_chain(run, f"{contract.WEB_DIR}/index.html")
    with runs.locked(run):
        provenance.invalidate(run, contract.MODEL_ONNX)
    assert not (run / contract.WEB_DIR / "index.html").exists()


def test_removing_the_last_artefact_of_a_folder_removes_the_folder(run):
    folder = "test_data_set_0.fp16"
    with runs.locked(run):
        provenance.save_text(run, f"{folder}/output_0.pb", "x", "verify", inputs=[contract.MODEL_ONNX])
        provenance.invalidate(run, contract.MODEL_ONNX)
    assert not (run / folder).exists()
