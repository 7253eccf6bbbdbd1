"""The web page: `zoo export --web`, `zoo web`, and the page itself in a real headless Chromium.

The browser tests drive Debian's /usr/bin/chromium with Playwright (from PyPI; never
`playwright install`), serve the page on 127.0.0.1 and refuse every request that leaves
it, so they prove the page works offline. They need chromium and onnxruntime-web from npm
(`bash .ci/setup-web.sh` installs both) and skip with that reason where either is absent.
"""

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import DATASETS, MNIST10K, ROOT, find_data, spec_dict, write_spec

CHROMIUM = os.environ.get("ZOO_CHROMIUM", "/usr/bin/chromium")
ORT_WEB = ROOT / "node_modules" / "onnxruntime-web"
ENABLE = "run `bash .ci/setup-web.sh` (as root: Debian's chromium, npm onnxruntime-web) to enable it"


def _trained(tmp_path_factory, spec_name, epochs):
    """A catalog spec trained briefly and exported (with test_data_set_0), through the real CLI."""
    folder = tmp_path_factory.mktemp(spec_name)
    spec = spec_dict(spec_name)
    path = write_spec(folder, spec)
    done = subprocess.run([sys.executable, "-m", "zoo", "run", str(path), "--epochs", str(epochs), "--quiet",
                           "--out", str(folder / "exports"), "--data-dir", str(DATASETS)],
                          capture_output=True, text=True, cwd=folder, timeout=240)
    assert done.returncode == 0, done.stderr
    return folder / "exports" / spec["name"]


def _zoo(*args, cwd, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def _read_tensor(path):
    import onnx
    from onnx import numpy_helper

    return numpy_helper.to_array(onnx.load_tensor(str(path)))


def _onnxruntime(run, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input": x})))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return _trained(tmp_path_factory, "digits-softmax", 2)


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    return _trained(tmp_path_factory, "linear-synthetic", 1)


# ----- the folder and the commands (no browser) -------------------------------------------

def _need_ort_web():
    if not (ORT_WEB / "dist").is_dir():
        pytest.skip(f"needs onnxruntime-web in {ROOT / 'node_modules'}; {ENABLE}")


def test_export_web_writes_the_page_with_a_local_onnxruntime(digits, tmp_path):
    _need_ort_web()
    (digits / ".web.killed.tmp").mkdir()  # what a zoo killed while writing the page leaves
    (digits / ".web.killed.tmp" / "zoo.js").write_text("half")
    done = _zoo("export", digits, "--no-onnx", "--web", "--ort-web", ROOT / "node_modules", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "works offline" in done.stdout
    web = digits / "web"
    assert sorted(p.name for p in web.iterdir()) == ["examples.json", "index.html", "model.json", "model.onnx",
                                                      "ort", "style.css", "zoo.js"]
    assert (web / "model.onnx").read_bytes() == (digits / "model.onnx").read_bytes()
    for name in ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm"):
        assert (web / "ort" / name).read_bytes() == (ORT_WEB / "dist" / name).read_bytes()
    config = json.loads((web / "model.json").read_text())
    assert config["input"] == {"name": "input", "shape": [8, 8], "dtype": "float32", "js": "Float32Array"}
    assert config["class_names"] == [str(i) for i in range(10)] and config["view"] == "image"
    assert config["ort"]["source"] == "local" and config["ort"]["module"] == "./ort/ort.wasm.bundle.min.mjs"
    assert config["drawing"]["ink"] == 16.0  # scikit-learn's digits run 0..16
    assert "https://" not in (web / "index.html").read_text() + (web / "zoo.js").read_text()
    examples = json.loads((web / "examples.json").read_text())
    x = _read_tensor(digits / "test_data_set_0" / "input_0.pb")
    assert np.array_equal(np.frombuffer(base64.b64decode(examples["input_base64"]), np.float32).reshape(x.shape), x)
    assert examples["labels"] == _true_labels(digits, len(x))  # the grid shows the truth beside the prediction
    assert not [p for p in digits.iterdir() if p.name.startswith(".web.")]  # no temporary folder left, old or new


def _true_labels(run, n):
    from zoo.spec import load_spec
    from zoo.stages.data import load_dataset

    return load_dataset(load_spec(run / "spec.json")).y_test[:n].tolist()


def test_without_onnxruntime_web_the_page_uses_a_pinned_cdn_and_says_so(digits, tmp_path):
    done = _zoo("export", digits, "--no-onnx", "--web", "--ort-web", "cdn", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "needs the network" in done.stdout and "sha384" in done.stdout
    web = digits / "web"
    config = json.loads((web / "model.json").read_text())
    assert config["ort"]["source"] == "cdn" and "@1.30.0/" in config["ort"]["module"]
    assert not (web / "ort").exists()
    html = (web / "index.html").read_text()
    importmap = json.loads(html.split('<script type="importmap">')[1].split("</script>")[0])
    assert importmap["integrity"][config["ort"]["module"]].startswith("sha384-")
    if (ORT_WEB / "dist").is_dir():  # the pinned hashes are those of the npm release's files
        for url, integrity in config["ort"]["integrity"].items():
            digest = hashlib.sha384((ORT_WEB / "dist" / url.rsplit("/", 1)[1]).read_bytes()).digest()
            assert integrity == "sha384-" + base64.b64encode(digest).decode()


def test_a_given_folder_without_onnxruntime_web_is_an_error_not_a_cdn(digits, tmp_path):
    before = sorted(p.name for p in digits.iterdir())
    done = _zoo("export", digits, "--no-onnx", "--web", "--ort-web", tmp_path, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(f"Error: --ort-web {tmp_path}: no onnxruntime-web files there")
    assert len(done.stderr.splitlines()) == 1
    done = _zoo("export", digits, "--no-onnx", "--web", cwd=tmp_path, env={"ZOO_ORT_WEB": str(tmp_path)})
    assert done.returncode == 2 and done.stderr.startswith("Error: $ZOO_ORT_WEB")
    assert sorted(p.name for p in digits.iterdir()) == before


def test_export_says_what_is_missing(digits, tmp_path):
    done = _zoo("export", digits, "--no-onnx", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr == "Error: nothing to export: give --onnx, --web and/or --triton\n"
    done = _zoo("export", digits, "--ort-web", "cdn", cwd=tmp_path)
    assert done.returncode == 2 and "add --web" in done.stderr


def test_web_refuses_a_symlinked_web_folder(digits, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits, run, ignore=shutil.ignore_patterns("web", "checkpoints"))
    (tmp_path / "elsewhere").mkdir()
    (run / "web").symlink_to(tmp_path / "elsewhere")
    done = _zoo("export", run, "--no-onnx", "--web", "--ort-web", "cdn", cwd=tmp_path)
    assert done.returncode == 2 and "not a folder zoo wrote" in done.stderr
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_zoo_web_serves_the_folder_on_loopback(digits, tmp_path):
    done = _zoo("web", tmp_path, cwd=tmp_path)
    assert done.returncode == 2 and "run `zoo export" in done.stderr and "--web" in done.stderr
    _zoo("export", digits, "--no-onnx", "--web", "--ort-web", "cdn", cwd=tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "web", str(digits), "--port", "0"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"serving {digits / 'web'} at http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split(" at ")[1].split()[0]
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200 and b"zoo.js" in r.read()
        with urllib.request.urlopen(url + "zoo.js", timeout=10) as r:
            assert r.headers["Content-Type"] == "text/javascript"
        with urllib.request.urlopen(url + "model.onnx", timeout=10) as r:
            assert r.read() == (digits / "model.onnx").read_bytes()
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop, not a traceback
        assert proc.wait(10) == 0
        assert proc.stdout.read() == "stopped\n" and proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


# ----- in the browser ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM}; {ENABLE}")
    _need_ort_web()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("needs playwright (pip install -e '.[web]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def open_page(browser):
    """open_page(run) -> (page, requests): the run's page served on 127.0.0.1; nothing else reachable."""
    from zoo.deploy.web import make_server

    servers, pages = [], []

    def open_(run):
        server = make_server(run, 0)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        origin = f"http://127.0.0.1:{server.server_address[1]}"
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        pages.append(page)
        requests, errors = [], []

        def offline(route):  # the page may reach its own server and nothing else
            requests.append(route.request.url)
            if route.request.url.startswith(origin + "/"):
                route.continue_()
            else:
                route.abort()

        page.route("**/*", offline)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(origin + "/")
        page.evaluate("window.zoo.ready")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('ready')", timeout=30000)
        assert errors == []
        return page, requests, origin

    try:
        yield open_
    finally:
        for page in pages:
            page.close()
        for server in servers:
            server.shutdown()
            server.server_close()


def test_a_cdn_page_offline_says_what_to_install(digits, browser, tmp_path):
    """Where the CDN cannot be reached, the page says to install onnxruntime-web, as the export command did."""
    from zoo.deploy.web import INSTALL_ORT_WEB, make_server

    done = _zoo("export", digits, "--no-onnx", "--web", "--ort-web", "cdn", cwd=tmp_path)
    assert done.returncode == 0 and INSTALL_ORT_WEB in done.stdout, done.stdout
    server = make_server(digits, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    page = browser.new_page()
    try:
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(origin + "/")
                   else route.abort())
        page.goto(origin + "/")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Error')", timeout=30000)
        said = page.text_content("#status")
    finally:
        page.close()
        server.shutdown()
        server.server_close()
    assert "needs the network" in said and INSTALL_ORT_WEB in said, said
    assert "web/ort" not in said  # a CDN page has no ort/ folder to check


def _page_predict(page, x):
    kind = "Uint8Array" if x.dtype == np.uint8 else "Float32Array"
    return page.evaluate(f"(values) => window.zoo.predict(new {kind}(values))", x.ravel().tolist())


def _export_web(run, tmp_path):
    done = _zoo("export", run, "--no-onnx", "--web", "--ort-web", ROOT / "node_modules", cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_page_matches_onnxruntime_on_test_data_and_a_drawn_stroke(digits, open_page, tmp_path):
    _export_web(digits, tmp_path)
    page, requests, origin = open_page(digits)
    assert all(u.startswith(origin + "/") for u in requests)  # offline: everything came from the run's web/

    # test_data_set_0 as one batch, then one example, through the page's API
    x = _read_tensor(digits / "test_data_set_0" / "input_0.pb")
    want = _onnxruntime(digits, x)
    got = _page_predict(page, x)
    assert sorted(got) == ["logits", "probabilities"]
    for name in got:
        assert np.asarray(got[name]).shape == want[name].shape
        np.testing.assert_allclose(np.asarray(got[name]), want[name], rtol=0, atol=1e-5)
    one = _page_predict(page, x[3])
    np.testing.assert_allclose(np.asarray(one["probabilities"]), want["probabilities"][3:4], rtol=0, atol=1e-5)
    # the grid of test examples: the true label beside each prediction, a wrong one marked
    cells = page.locator("#grid .example span").all_text_contents()
    truth, predicted = _true_labels(digits, len(x)), want["probabilities"].argmax(axis=1)
    assert cells == [f"true {t} · pred {p} {100 * want['probabilities'][i][p]:.0f}%"
                     for i, (t, p) in enumerate(zip(truth, predicted))], cells
    assert page.locator("#grid .example.wrong").count() == int(sum(t != p for t, p in zip(truth, predicted)))
    assert page.evaluate("window.zoo.examples.maxAbsDiff") < 1e-5  # the page's own check against the export
    assert page.locator(".example").count() == len(x)
    error = page.evaluate("window.zoo.predict(new Float32Array(5)).then(() => '', e => e.message)")
    assert "5 values is not a whole number of examples of 64" in error

    # a stroke drawn with the mouse: the page's input is the drawing, and its bars are onnxruntime's answer
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 140, box["y"] + 50)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(box["x"] + 140 + step, box["y"] + 50 + 18 * step)
    page.mouse.up()
    page.wait_for_function("window.zoo.current && window.zoo.current.input.some(v => v > 0)")
    current = page.evaluate("window.zoo.current")
    drawn = np.asarray(current["input"], np.float32).reshape(1, 8, 8)
    assert drawn.max() <= 16 and drawn.sum() > 0
    assert drawn[0, :, :2].sum() == 0 and drawn[0, :, -2:].sum() == 0  # a vertical stroke, centred
    expected = _onnxruntime(digits, drawn)["probabilities"][0]
    np.testing.assert_allclose(current["probabilities"], expected, atol=1e-5)
    top = page.locator("#bars .bar").first
    assert top.get_attribute("data-index") == str(int(expected.argmax()))
    assert top.locator(".p").inner_text() == f"{100 * expected.max():.1f}%"
    page.screenshot(path=str(tmp_path / "digits-page.png"), full_page=True)
    assert (tmp_path / "digits-page.png").stat().st_size > 10_000


def test_regression_page_has_a_form(linear, open_page, tmp_path):
    _export_web(linear, tmp_path)
    page, _, _ = open_page(linear)
    x = _read_tensor(linear / "test_data_set_0" / "input_0.pb")
    got = _page_predict(page, x)
    assert list(got) == ["predictions"]
    np.testing.assert_allclose(np.asarray(got["predictions"]), _onnxruntime(linear, x)["predictions"], atol=1e-5)
    page.fill("input[name=x0]", "1")
    page.fill("input[name=x1]", "-1")
    page.click("#run")
    page.wait_for_function("window.zoo.current && window.zoo.current.input[0] === 1")
    shown = float(page.inner_text("#values"))
    want = _onnxruntime(linear, np.array([[1, -1]], np.float32))["predictions"][0, 0]
    assert shown == pytest.approx(want, rel=1e-5)
    assert abs(shown - (2 * 1 - 3.4 * -1 + 4.2)) < 1.0  # the learned line is near d2l's w, b
    page.screenshot(path=str(tmp_path / "linear-page.png"), full_page=True)


def test_uint8_mnist_page_reads_a_drawn_one(tmp_path_factory, open_page, tmp_path):
    if find_data(MNIST10K) is None:
        pytest.skip(f"needs {MNIST10K}; set ZOO_DATA_DIR to a folder holding it (../shared/datasets on the team's machines)")
    run = _trained(tmp_path_factory, "mnist10k-mlp", 2)
    _export_web(run, tmp_path)
    page, _, _ = open_page(run)
    x = _read_tensor(run / "test_data_set_0" / "input_0.pb")
    assert x.dtype == np.uint8
    np.testing.assert_allclose(np.asarray(_page_predict(page, x)["probabilities"]),
                               _onnxruntime(run, x)["probabilities"], atol=1e-5)
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 150, box["y"] + 40)
    page.mouse.down()
    for step in range(1, 21):
        page.mouse.move(box["x"] + 150 - step, box["y"] + 40 + 10 * step)
    page.mouse.up()
    page.wait_for_function("window.zoo.current && window.zoo.current.input.some(v => v > 0)")
    current = page.evaluate("window.zoo.current")
    drawn = np.asarray(current["input"], np.uint8).reshape(1, 28, 28)
    assert drawn.max() > 200  # white on black, 0..255, as MNIST
    assert drawn[0, :4].sum() == 0 and drawn[0, -4:].sum() == 0  # scaled into the 20x20 box, as MNIST
    assert page.locator("#bars .bar .name").first.inner_text() == "1"
    page.screenshot(path=str(tmp_path / "mnist-page.png"), full_page=True)

    # an image given to the page, dark on light like a scan: inverted and framed as MNIST, read as the digit it is
    from PIL import Image

    p = _onnxruntime(run, x)["probabilities"]
    best = int(p.max(axis=1).argmax())  # the test example the model is surest of
    Image.fromarray(255 - x[best]).resize((112, 112), Image.NEAREST).save(tmp_path / "scan.png")
    page.evaluate("window.zoo.current = null")
    page.set_input_files("#file", str(tmp_path / "scan.png"))
    page.wait_for_function("window.zoo.current !== null")
    current = page.evaluate("window.zoo.current")
    assert int(np.argmax(current["probabilities"])) == int(p[best].argmax())
    seen = np.asarray(current["input"], np.uint8).reshape(1, 28, 28)
    assert seen[0, 0].max() == 0 and seen[0, -1].max() == 0 and seen.max() == 255  # light on dark now
    np.testing.assert_allclose(current["probabilities"], _onnxruntime(run, seen)["probabilities"][0], atol=1e-5)
    page.screenshot(path=str(tmp_path / "mnist-scan.png"), full_page=True)


def test_an_int8_page_loads_the_int8_model_and_says_so(digits, open_page, tmp_path):
    """zoo export --web --variant int8: the page downloads only the int8 file and answers as onnxruntime runs it.
    (For this 650-parameter softmax the QDQ file is larger than the float32 one: see benchmarks/RESULTS.md.)"""
    import onnxruntime as ort

    run = tmp_path / "run"
    shutil.copytree(digits, run)
    done = _zoo("export", run, "--web", "--variant", "int8", "--ort-web", ROOT / "node_modules", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (run / "web/model.onnx").exists()  # the page downloads the int8 file only
    page, requests, origin = open_page(run)
    assert origin + "/model.int8.onnx" in requests and origin + "/model.onnx" not in requests
    assert "Model: model.int8.onnx (variant int8)" in page.text_content("#footer")
    assert page.evaluate("window.zoo.examples.maxAbsDiff") < 1e-3  # against the int8 file's own outputs
    x = _read_tensor(run / "test_data_set_0.int8" / "input_0.pb")
    session = ort.InferenceSession(str(run / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    want = session.run(["probabilities"], {"input": x})[0]
    got = np.asarray(_page_predict(page, x)["probabilities"])
    assert np.array_equal(got.argmax(1), want.argmax(1))
    np.testing.assert_allclose(got, want, atol=1e-3)
