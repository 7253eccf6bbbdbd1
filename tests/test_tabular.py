"""Tables: reading and encoding CSV columns (zoo.stages.tabular), the bad inputs of issue 17
section 5, and penguins end to end through the real CLI: cross-validation, preprocessing.json,
an ONNX graph with one input per column checked against Keras on raw rows, and the card's programs.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, spec_dict, write_spec

from zoo.core.errors import DataError
from zoo.spec import validate
from zoo.stages import tabular
from zoo.stages.data import load_dataset

GOOD = ("name,colour,size,kind\n"
        "a,red,1.5,x\nb,blue,2.5,y\nc,,NA,x\nd,green,4,y\ne,red,,x\nf,blue,6,y\ng,red,7,x\nh,green,8,y\n")


def table_spec(path, **data):
    return validate({"version": 1, "name": "t", "model": {"kind": "softmax", "num_classes": 2},
                     "data": {"dataset": "table", "path": str(path), "label_column": "kind", "test_fraction": 0.25,
                              "columns": {"name": "drop"}, **data}})


def write(tmp_path, text, encoding="utf-8"):
    path = tmp_path / "t.csv"
    path.write_text(text, encoding=encoding)
    return path


def test_kinds_are_inferred_and_encoding_follows_the_documented_rules(tmp_path):
    d = load_dataset(table_spec(write(tmp_path, GOOD)))
    prep = d.table.prep
    assert [(c.name, c.kind) for c in prep.columns] == [("colour", "categorical"), ("size", "numeric")]
    assert prep.inferred["name"] == "dropped (spec)" and prep.inferred["size"] == "numeric (inferred)"
    assert d.class_names == ["x", "y"]
    colour = prep.columns[0]
    assert list(colour.categories) == sorted(colour.categories)  # sorted; then the missing slot
    rows = tabular.Table("rows", {"colour": np.array(["red", "", "NA", "purple"], dtype=object),
                                  "size": np.array(["", "NA", "3", "1e9"], dtype=object)}, np.arange(4))
    x = prep.encode(rows)
    k = len(colour.categories)
    assert x.shape == (4, k + 2)
    assert x[0, colour.categories.index("red")] == 1 and x[0, :k + 1].sum() == 1
    assert x[1, k] == 1 and x[2, k] == 1  # "" and NA: the missing slot
    assert x[3, :k + 1].sum() == 0  # an unknown category: all zeros, never another category
    assert x[0, -1] == 0 and x[1, -1] == 0  # a missing number: standardized, then 0
    assert x[2, -1] == pytest.approx((3 - prep.columns[1].mean) / prep.columns[1].std, rel=1e-6)


def test_the_spec_overrides_a_kind(tmp_path):
    d = load_dataset(table_spec(write(tmp_path, GOOD), columns={"name": "drop", "size": "categorical"}))
    size = d.table.prep.columns[1]
    assert size.kind == "categorical" and "4" in size.categories
    assert d.table.prep.inferred["size"] == "categorical (spec)"


def test_numeric_class_labels_sort_as_numbers(tmp_path):
    text = "f,kind\n" + "".join(f"{i},{c}\n" for i, c in enumerate(["10", "2", "10", "2", "1", "1", "2", "10"]))
    spec = validate({"version": 1, "name": "t", "model": {"kind": "softmax", "num_classes": 3},
                     "data": {"dataset": "table", "path": str(write(tmp_path, text)), "label_column": "kind"}})
    assert load_dataset(spec).class_names == ["1", "2", "10"]


def test_safe_input_names():
    assert tabular.safe_names(["MS.Zoning", "1st Flr", "a-b", "a_b", "logits", ""]) == [
        "MS_Zoning", "_1st_Flr", "a_b", "a_b_2", "logits_2", "_"]


BAD = {
    "ragged row": ("name,colour,size,kind\na,red,1,x\nb,blue,2\n", ["line 3 has 3 fields, the header has 4"]),
    "stray word": (GOOD.replace("f,blue,6,y", "f,blue,six,y"), ["column 'size' is 'six', not a number",
                                                                  '"size": "categorical"']),
    "empty column": ("name,colour,size,kind\n" + "".join(f"{i},red,,{'xy'[i % 2]}\n" for i in range(8)),
                     ["column 'size' is empty in every training row", '"size": "drop"']),
    "single class": (GOOD.replace(",y\n", ",x\n"), ["label column 'kind' has a single class ('x')"]),
    "semicolon": (GOOD.replace(",", ";"), ["semicolon-delimited"]),
    "duplicate columns": (GOOD.replace("size", "colour", 1), ["names column 'colour' twice"]),
    "missing label": (GOOD.replace("h,green,8,y", "h,green,8,"), ["line 9, the label column 'kind' is empty"]),
    "thousands of categories": ("name,code,kind\n" + "".join(f"{i},c{i},{'xy'[i % 2]}\n" for i in range(1400)),
                                ["column 'code' has 1,050 distinct values", "at most 1,000", '"code": "drop"']),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_tables_are_one_clear_data_error(tmp_path, case):
    text, words = BAD[case]
    with pytest.raises(DataError) as e:
        load_dataset(table_spec(write(tmp_path, text)))
    message = str(e.value)
    assert "\n" not in message
    for w in words:
        assert w in message, message


def test_a_bom_is_read_as_nothing(tmp_path):
    d = load_dataset(table_spec(write(tmp_path, GOOD, encoding="utf-8-sig")))
    assert [c.name for c in d.table.prep.columns] == ["colour", "size"]


def test_cli_check_prints_the_inferred_columns_and_bad_data_exits_3(zoo, tmp_path):
    data = {"version": 1, "name": "t", "model": {"kind": "softmax", "num_classes": 2},
            "data": {"dataset": "table", "path": str(write(tmp_path, GOOD)), "label_column": "kind"}}
    done = zoo("check", write_spec(tmp_path, data))
    assert done.returncode == 0, done.stderr
    assert "colour" in done.stdout and "categorical (inferred)" in done.stdout and "numeric (inferred)" in done.stdout
    write(tmp_path, GOOD.replace(",", ";"))
    done = zoo("run", write_spec(tmp_path, data))
    assert done.returncode == 3 and done.stderr.count("\n") == 1 and "semicolon-delimited" in done.stderr
    assert not (tmp_path / "exports" / "t" / "model.keras").exists()


def test_table_spec_checks():
    base = {"version": 1, "name": "t", "model": {"kind": "linear"}, "data": {"dataset": "table", "path": "x.csv"}}
    from zoo.core.errors import SpecError

    for change, words in [({"model": {"kind": "linear", "input_shape": [3]}}, "remove input_shape"),
                          ({"model": {"kind": "softmax", "num_classes": 2}, "data": {**base["data"],
                            "target_transform": "log"}}, "target transform"),
                          ({"data": {"dataset": "digits", "columns": {"a": "drop"}},
                            "model": {"kind": "softmax", "input_shape": [8, 8], "num_classes": 10}}, "only tables")]:
        with pytest.raises(SpecError) as e:
            validate({**base, **change})
        assert words in str(e.value)
    assert validate({**base, "model": {"kind": "mlp", "outputs": 1, "hidden": [{"units": 4}]}}).is_classifier is False


# ----- penguins end to end -------------------------------------------------------------------

@pytest.fixture(scope="module")
def penguins(tmp_path_factory):
    import importlib.util

    if importlib.util.find_spec("palmerpenguins") is None:
        pytest.skip("needs palmerpenguins (a dependency in pyproject.toml): pip install -e .")
    folder = tmp_path_factory.mktemp("penguins")
    spec = spec_dict("penguins-softmax")
    spec["train"].update(epochs=5, folds=3)
    path = write_spec(folder, spec)
    done = subprocess.run([sys.executable, "-m", "zoo", "run", str(path), "--out", str(folder / "exports")],
                          capture_output=True, text=True, cwd=folder, timeout=600,
                          env={**__import__("os").environ, "ZOO_DATA_DIR": str(folder / "no-data")})
    assert done.returncode == 0, done.stderr
    return folder / "exports" / "penguins-softmax", done.stdout


def test_penguins_runs_with_no_data_dir_and_cross_validates(penguins):
    run, stdout = penguins
    metrics = json.loads((run / "metrics.json").read_text())
    cv = metrics["cv"]
    assert cv["folds"] == 3 and [f["fold"] for f in cv["per_fold"]] == [1, 2, 3]
    assert sum(f["examples"] for f in cv["per_fold"]) == metrics["train_examples"]
    assert cv["mean"]["accuracy"] == pytest.approx(np.mean([f["accuracy"] for f in cv["per_fold"]]))
    assert "3-fold cross-validation: loss" in stdout and "±" in stdout
    assert metrics["test"]["accuracy"] > 0.9
    prep = json.loads((run / "preprocessing.json").read_text())
    assert {c["name"] for c in prep["columns"]} >= {"island", "sex", "bill_length_mm"}
    assert prep["class_names"] == ["Adelie", "Chinstrap", "Gentoo"]
    from zoo.core import provenance

    assert provenance.check(run, "preprocessing.json")["stage"] == "train"  # recorded, digest matches


def test_penguins_onnx_takes_raw_named_columns_and_matches_keras(penguins):
    import onnxruntime as ort

    from zoo.core.contract import Contract
    from zoo.stages.build import load_model

    run, _ = penguins
    verify = json.loads((run / "verify.json").read_text())
    assert verify["status"] == "passed" and set(verify["edge_inputs"]) >= {"missing", "unknown", "extreme"}
    sess = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = {i.name: i.type for i in sess.get_inputs()}
    assert inputs["island"] == "tensor(string)" and inputs["bill_length_mm"] == "tensor(float)"
    assert len(list((run / "test_data_set_0").glob("input_*.pb"))) == len(inputs)
    c = Contract.from_onnx(run / "model.onnx")
    assert c.is_table and ("sex", "string", "sex") in c.columns and c.labels() == ["Adelie", "Chinstrap", "Gentoo"]
    prep = tabular.Preprocessing.from_json(json.loads((run / "preprocessing.json").read_text()))
    rows = tabular.Table("rows", {
        "island": np.array(["Biscoe", "Atlantis", "", "NA"], dtype=object),
        "bill_length_mm": np.array(["45.2", "NA", "", "39"], dtype=object),
        "bill_depth_mm": np.array(["14.8", "18", "NA", "19"], dtype=object),
        "flipper_length_mm": np.array(["212", "190", "", "185"], dtype=object),
        "body_mass_g": np.array(["5200", "3700", "NA", "3500"], dtype=object),
        "sex": np.array(["female", "unknown-sex", "", "male"], dtype=object),
        "year": np.array(["2009", "2008", "2007", "NA"], dtype=object)}, np.arange(4))
    logits, = sess.run(["logits"], prep.feeds(rows))
    want = np.asarray(load_model(run / "model.keras")(prep.encode(rows)))
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)
    assert logits[0].argmax() == 2  # a heavy Biscoe penguin with a long, shallow bill: Gentoo


def _card_block(run: Path, lang: str, heading: str) -> str:
    import re

    section = (run / "card.md").read_text().split(heading, 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(rf"```{lang}\n(.*?)```", section, re.S)
    return block


def test_penguins_card_programs_send_string_tensors(penguins, tmp_path):
    run, _ = penguins
    here = tmp_path / "run"
    shutil.copytree(run, here)
    (here / "predict.py").write_text(_card_block(run, "python", "## Python"))
    done = subprocess.run([sys.executable, "predict.py"], cwd=here, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines()]
    assert len(lines) == 2 and all(line[2] in ("Adelie", "Chinstrap", "Gentoo") for line in lines)
    node, modules = shutil.which("node"), ROOT / "node_modules"
    if node is None or not (modules / "onnxruntime-node" / "package.json").is_file():
        pytest.skip(f"needs node and onnxruntime-node in {modules}: run `bash .ci/setup-web.sh` (as root)")
    (here / "node_modules").symlink_to(modules)
    (here / "predict.mjs").write_text(_card_block(run, "js", "## JavaScript"))
    js = subprocess.run([node, "predict.mjs"], cwd=here, capture_output=True, text=True, timeout=120)
    assert js.returncode == 0, js.stderr
    assert [line.split()[:3] for line in js.stdout.splitlines()] == [line[:3] for line in lines]
    for a, b in zip(js.stdout.splitlines(), done.stdout.splitlines()):
        assert float(a.split()[3]) == pytest.approx(float(b.split()[3]), abs=1e-5)


def test_zoo_predict_reads_a_csv_by_column_name(penguins, zoo, tmp_path):
    run, _ = penguins
    rows = tmp_path / "rows.csv"
    rows.write_text("note,sex,year,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g\n"
                    "heavy,female,2009,Biscoe,45.2,14.8,212,5200\n"
                    "gaps,,NA,Mars,,NA,190,\n")
    done = zoo("predict", run / "model.onnx", rows, "--json")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert len(results) == 2 and results[0]["top"][0]["name"] == "Gentoo"
    rows.write_text("sex,island,bill_length_mm\nfemale,Biscoe,45\n")
    done = zoo("predict", run / "model.onnx", rows)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "no column 'bill_depth_mm', 'flipper_length_mm', 'body_mass_g', 'year'" in done.stderr
    rows.write_text("sex,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,year\n"
                    "female,Biscoe,long,14.8,212,5200,2009\n")
    done = zoo("predict", run / "model.onnx", rows)
    assert done.returncode == 3 and "line 2, numeric column 'bill_length_mm' is 'long', not a number" in done.stderr


def test_a_tampered_preprocessing_record_stops_export(penguins, zoo, tmp_path):
    run, _ = penguins
    copy = tmp_path / "exports" / run.name
    shutil.copytree(run, copy)
    prep = json.loads((copy / "preprocessing.json").read_text())
    prep["columns"][1]["mean"] += 1.0
    (copy / "preprocessing.json").write_text(json.dumps(prep))
    done = zoo("export", copy)
    assert done.returncode == 8 and "preprocessing.json" in done.stderr, done.stderr


# ----- Ames: a regression on log(price), answering in dollars ------------------------------

def test_ames_exported_model_answers_in_dollars(zoo, tmp_path):
    from conftest import need_data

    folder = need_data("ames/ames.csv", "the Ames house sales (ames/ames.csv)")
    import onnxruntime as ort

    spec = spec_dict("ames-linear")
    spec["train"].update(epochs=20, folds=None)
    done = zoo("run", write_spec(tmp_path, spec), "--quiet", env={"ZOO_DATA_DIR": str(folder)})
    assert done.returncode == 0, done.stderr
    run = tmp_path / "exports" / "ames-linear"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["log_rmse"] == pytest.approx(metrics["test"]["loss"] ** 0.5)
    assert json.loads((run / "verify.json").read_text())["status"] == "passed"
    d = load_dataset(validate(spec), folder)
    prep = tabular.Preprocessing.from_json(json.loads((run / "preprocessing.json").read_text()))
    assert [c.input for c in prep.columns][:3] == ["area", "MS_SubClass", "MS_Zoning"]
    sess = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    (price,) = sess.run(["predictions"], prep.feeds(d.table.test))
    truth = np.exp(d.y_test)
    assert 50_000 < np.median(price) < 500_000  # dollars, not log-dollars
    log_rmse = float(np.sqrt(np.mean((np.log(price) - np.log(truth)) ** 2)))
    assert log_rmse == pytest.approx(metrics["test"]["log_rmse"], rel=1e-3)


def test_penguins_card_cpp_program_sends_string_tensors(penguins, tmp_path):
    import onnxruntime

    run, _ = penguins
    include = next((d for d in (ROOT / ".deps" / "onnxruntime" / "include", Path("/usr/include/onnxruntime"))
                    if (d / "onnxruntime_cxx_api.h").is_file()), None)
    compiler = shutil.which("g++")
    if compiler is None or include is None:
        pytest.skip("needs g++ and onnxruntime's C++ headers: run `bash .ci/setup-web.sh` (as root)")
    found = sorted((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so.1*"))
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "libonnxruntime.so.1").symlink_to(found[-1])
    (lib / "libonnxruntime.so").symlink_to("libonnxruntime.so.1")
    here = tmp_path / "run"
    shutil.copytree(run, here)
    (here / "predict.cpp").write_text(_card_block(run, "cpp", "## C++"))
    (here / "predict.py").write_text(_card_block(run, "python", "## Python"))
    build = subprocess.run([compiler, "-std=c++17", "-O1", "predict.cpp", f"-I{include}", f"-L{lib}", "-lonnxruntime",
                            f"-Wl,-rpath,{lib}", "-o", "predict"], cwd=here, capture_output=True, text=True, timeout=180)
    assert build.returncode == 0, build.stderr[-3000:]
    cpp = subprocess.run(["./predict"], cwd=here, capture_output=True, text=True, timeout=60)
    py = subprocess.run([sys.executable, "predict.py"], cwd=here, capture_output=True, text=True, timeout=60)
    assert cpp.returncode == 0 and py.returncode == 0, cpp.stderr + py.stderr
    assert [line.split()[:3] for line in cpp.stdout.splitlines()] == [line.split()[:3] for line in py.stdout.splitlines()]
    for a, b in zip(cpp.stdout.splitlines(), py.stdout.splitlines()):
        assert float(a.split()[3]) == pytest.approx(float(b.split()[3]), abs=1e-5)


def test_triton_config_has_one_typed_input_per_column(penguins, zoo, tmp_path):  # served: test_serve_table.py
    run, _ = penguins
    copy = tmp_path / "exports" / run.name
    shutil.copytree(run, copy)
    done = zoo("export", copy, "--triton", tmp_path / "repo")
    assert done.returncode == 0, done.stderr
    config = (tmp_path / "repo" / "penguins-softmax" / "config.pbtxt").read_text()
    blocks = config.split("output [")[0]
    assert blocks.count("name: ") == 1 + 7  # the model's, then seven inputs
    assert 'name: "island"\n    data_type: TYPE_STRING\n    dims: [ 1 ]' in config
    assert 'name: "body_mass_g"\n    data_type: TYPE_FP32\n    dims: [ 1 ]' in config


def test_zoo_sweep_runs_a_table_spec(zoo, tmp_path):
    import importlib.util

    if importlib.util.find_spec("palmerpenguins") is None or importlib.util.find_spec("optuna") is None:
        pytest.skip("needs palmerpenguins and the sweep extra: pip install -e '.[sweep]'")
    done = zoo("sweep", ROOT / "specs" / "penguins-softmax.json", "--set", "train.learning_rate=0.05,0.1",
               "--set", "train.folds=null", "--epochs", "2", "--workers", "1", "--export", "all", timeout=600)
    assert done.returncode == 0, done.stderr
    results = next((tmp_path / "exports" / "sweeps").glob("*/results.csv")).read_text().splitlines()
    assert len(results) == 3 and all(",complete," in line for line in results[1:])
    runs = [p for p in (tmp_path / "exports").glob("penguins-softmax-*") if p.is_dir()]
    assert len(runs) == 2
    for run in runs:
        assert json.loads((run / "verify.json").read_text())["status"] == "passed"
        assert len(list((run / "test_data_set_0").glob("input_*.pb"))) == 7


def test_the_page_has_a_form_per_column_and_predict_takes_an_object(penguins, tmp_path):
    """In Chromium, offline, as tests/test_web.py drives the image pages."""
    import threading

    import onnxruntime as ort

    chromium = Path("/usr/bin/chromium")
    if not chromium.is_file() or not (ROOT / "node_modules" / "onnxruntime-web" / "dist").is_dir():
        pytest.skip("needs Debian's chromium and npm onnxruntime-web: run `bash .ci/setup-web.sh` (as root)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    from zoo.deploy.web import make_server

    run, _ = penguins
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    done = subprocess.run([sys.executable, "-m", "zoo", "export", str(copy), "--no-onnx", "--web"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    model = json.loads((copy / "web" / "model.json").read_text())
    assert model["view"] == "table" and [c["name"] for c in model["columns"]][:2] == ["island", "bill_length_mm"]
    server = make_server(copy, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    rows = {"island": ["Biscoe", "Atlantis", None], "bill_length_mm": [45.2, None, 39], "bill_depth_mm": [14.8, 18, ""],
            "flipper_length_mm": [212, 190, 185], "body_mass_g": [5200, None, 3500], "sex": ["female", "", "male"],
            "year": [2009, 2008, None]}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
            page = browser.new_page()
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(origin + "/") else r.abort())
            page.goto(origin + "/")
            page.wait_for_function("document.getElementById('status').textContent.startsWith('ready')", timeout=30000)
            got = page.evaluate("(rows) => window.zoo.predict(rows)", rows)
            assert page.locator("#form input").count() == 7
            assert page.locator("#choices-island option").count() == 3
            page.fill("input[name=island]", "Biscoe")
            page.fill("input[name=bill_length_mm]", "45.2")
            page.fill("input[name=bill_depth_mm]", "14.8")
            page.fill("input[name=flipper_length_mm]", "212")
            page.fill("input[name=body_mass_g]", "")  # blank: missing
            page.fill("input[name=sex]", "female")
            page.click("#run")
            page.wait_for_function("window.zoo.current && window.zoo.current.input.body_mass_g === ''")
            shown = page.inner_text("#bars")
            error = page.evaluate("() => window.zoo.predict({island: 'Biscoe'}).then(() => '', (e) => e.message)")
            page.screenshot(path=str(tmp_path / "penguins-page.png"), full_page=True)
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    prep = tabular.Preprocessing.from_json(json.loads((run / "preprocessing.json").read_text()))
    feeds = {c.input: (np.array([["" if v is None else str(v)] for v in rows[c.name]], dtype=object)
                       if c.kind != "numeric" else
                       np.array([[np.nan if v in (None, "") else v] for v in rows[c.name]], np.float32))
             for c in prep.columns}
    want = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"]).run(["probabilities"], feeds)[0]
    np.testing.assert_allclose(np.asarray(got["probabilities"]), want, atol=1e-5)
    assert shown.splitlines()[0] == "Gentoo"
    assert error == 'predict(row): no column "bill_length_mm"'


def test_verify_catches_a_preprocessing_graph_that_swaps_two_categories(penguins, zoo, tmp_path):
    import onnx
    from onnx import helper

    run, _ = penguins
    copy = tmp_path / "exports" / run.name
    shutil.copytree(run, copy)
    model = onnx.load(str(copy / "model.onnx"))
    (encoder,) = [n for n in model.graph.node if n.op_type == "LabelEncoder" and n.input[0] == "sex"]
    values = next(a for a in encoder.attribute if a.name == "values_int64s")
    swapped = list(values.ints)
    swapped[0], swapped[1] = swapped[1], swapped[0]  # female <-> male
    encoder.attribute.remove(values)
    encoder.attribute.append(helper.make_attribute("values_int64s", swapped))
    onnx.save(model, str(copy / "tampered.onnx"))
    done = zoo("verify", copy / "tampered.onnx")
    assert done.returncode == 6, done.stderr
    assert "does not match the Keras model" in done.stderr
    assert json.loads((copy / "verify.json").read_text())["status"] == "failed"


def test_a_csv_spec_meeting_text_points_to_the_table_dataset(tmp_path):
    spec = validate({"version": 1, "name": "t", "model": {"kind": "softmax", "input_shape": [3], "num_classes": 2},
                     "data": {"dataset": "csv", "path": str(write(tmp_path, GOOD)), "label_column": "kind"}})
    with pytest.raises(DataError) as e:
        load_dataset(spec)
    assert "line 2, column 'name' is 'a', not a number" in str(e.value)
    assert 'use "dataset": "table"' in str(e.value)
