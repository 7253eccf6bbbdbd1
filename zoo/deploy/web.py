"""A web page that runs the exported model in the browser with onnxruntime-web.

`write_web(run)` writes `run/web/`: the page (index.html, zoo.js, style.css: plain ES
modules, no build step), the model, `model.json` (the contract, class names, how the page
draws inputs, where onnxruntime-web comes from) and `examples.json` (test_data_set_0's
inputs and outputs). onnxruntime-web's files go to `web/ort/`, copied from an npm
package found at `--ort-web DIR`, `$ZOO_ORT_WEB` or a `node_modules` nearby; where none
is found the page loads a pinned CDN release, every file checked against a hash, and
the command says so. Local files given but unusable are an error, never a silent CDN.

`serve(run)` serves `run/web/` on 127.0.0.1 with the standard library's http.server.
The page's API is `window.zoo = {ready, predict(input)}` (see zoo/deploy/assets/web/zoo.js).
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from zoo.core import provenance
from zoo.core.arrays import read_tensor_proto
from zoo.core.contract import (
    META_COLUMNS,
    META_METRICS,
    META_SPEC,
    MODEL_ONNX,
    TEST_DATA_SET,
    WEB_DIR,
    Contract,
    test_data_name,
    variant_test_data_name,
)
from zoo.core.errors import UsageError
from zoo.deploy.defaults import WEB_PORT

ORT_WEB_VERSION = "1.30.0"
ORT_MODULE = "ort.wasm.bundle.min.mjs"  # the WebAssembly build with its loader bundled in: 2 files in all
ORT_WASM = "ort-wasm-simd-threaded.wasm"
ORT_CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_WEB_VERSION}/dist/"
# Subresource-integrity hashes (sha384) of the pinned release's two files, from its npm tarball.
ORT_INTEGRITY = {
    ORT_MODULE: "sha384-PLWz+nHEVHpjwBsO0YVdvQj6n5814Iv8E3b8FG0Rp/uIAtjFMCKOpP66iPzedrIG",
    ORT_WASM: "sha384-vjBJ1z7qrhkTyYsNqKeF6c7N+nOJSU94czEo+tvZcu8G75JparGq9kB+kTnEUNVM",
}
ORT_ENV = "ZOO_ORT_WEB"
# What the page says when it cannot start (model.json's ort.advice), and the export command too
INSTALL_ORT_WEB = ("run `npm install onnxruntime-web` in zoo's checkout (or any folder above the run), "
                   "then `zoo export RUN --web` again")
CDN_ADVICE = (f"This page loads onnxruntime-web {ORT_WEB_VERSION} from {ORT_CDN} and needs the network; "
              f"for a page that works offline, {INSTALL_ORT_WEB}.")
LOCAL_ADVICE = "Serve this folder with `zoo web RUN` (a page opened as a file cannot load its model)."
PAGE_FILES = ("index.html", "zoo.js", "style.css")
WEB = WEB_DIR
DIGIT_DATASETS = ("mnist", "digits")  # drawn digits are scaled into a box and centred by mass, as MNIST was
DIGITS = [str(i) for i in range(10)]  # a model whose classes are these reads digits too (an npz of MNIST, say)


def _dist(folder: Path) -> Path | None:
    """The folder holding onnxruntime-web's dist files, given the package, its dist or a node_modules."""
    for candidate in (folder, folder / "dist", folder / "onnxruntime-web" / "dist"):
        if (candidate / ORT_MODULE).is_file() and (candidate / ORT_WASM).is_file():
            return candidate
    return None


def find_ort_web(explicit=None, start: Path | None = None) -> tuple[Path | None, str]:
    """(dist folder or None, where it came from). A folder named by option or env var must be usable.

    The word `cdn` instead of a folder asks for the pinned CDN release on purpose.
    """
    for given, how in ((explicit, "--ort-web"), (os.environ.get(ORT_ENV), f"${ORT_ENV}")):
        if given and str(given) == "cdn":
            return None, "cdn"
        if given:
            dist = _dist(Path(given))
            if dist is None:
                raise UsageError(f"{how} {given}: no onnxruntime-web files there ({ORT_MODULE} and {ORT_WASM}); "
                                 f"give the folder of `npm install onnxruntime-web` (its node_modules or "
                                 f"node_modules/onnxruntime-web)")
            return dist, f"{how} {given}"
    places = []
    for base in (start or Path.cwd(), Path(__file__).resolve().parent):
        places += [base, *base.parents]
    seen = set()
    for base in places:
        if base in seen:
            continue
        seen.add(base)
        dist = _dist(base / "node_modules" / "onnxruntime-web")
        if dist is not None:
            return dist, str(base / "node_modules")
    return None, ""


def _ort_version(dist: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        return json.loads((dist.parent / "package.json").read_text())["version"]
    return "unknown"


def _examples(run: Path, contract: Contract, variant=None) -> dict | None:
    """test_data_set_0's input and expected outputs for the page's example grid (a variant's own
    outputs, test_data_set_0.<variant>/, for a variant); None where there is none (a table: the form only)."""
    def name(kind, i):
        return test_data_name(kind, i) if variant is None else variant_test_data_name(variant, kind, i)

    if contract.is_table or not (run / name("input", 0)).is_file():
        return None
    x = read_tensor_proto(run / name("input", 0))
    expected = {}
    for i, output in enumerate(contract.outputs):
        if (run / name("output", i)).is_file():
            expected[output] = read_tensor_proto(run / name("output", i)).reshape(len(x), -1).tolist()
    return {"count": int(len(x)), "shape": list(x.shape), "dtype": str(x.dtype),
            "input_base64": base64.b64encode(np.ascontiguousarray(x).tobytes()).decode("ascii"),
            "expected": expected, "labels": _true_labels(run, contract, x)}


def _true_labels(run: Path, contract: Contract, x) -> list[int] | None:
    """The true classes of test_data_set_0's examples (the test set's first ones), for the page's
    grid; None for regression, or where the run's data cannot be read now."""
    from zoo.core.errors import ZooError
    from zoo.spec import validate
    from zoo.stages.data import load_dataset

    if not contract.is_classifier or not isinstance(contract.metadata.get(META_SPEC), dict):
        return None
    try:
        data = load_dataset(validate(contract.metadata[META_SPEC], MODEL_ONNX), run=run)
    except ZooError:
        return None
    if not np.array_equal(data.x_test[:len(x)].reshape(x.shape), x):  # not the examples test_data_set_0 holds
        return None
    return [int(v) for v in data.y_test[:len(x)]]


def _page_config(contract: Contract, examples: dict | None, ort: dict) -> dict:
    spec = contract.metadata.get(META_SPEC) or {}
    dataset = (spec.get("data") or {}).get("dataset", "")
    image = contract.is_classifier and len(contract.input_shape) == 2
    # Ink is the training data's top value: 255 for uint8 pixels, 16 for scikit-learn's digits.
    if contract.input_dtype == "uint8":
        ink = 255
    elif examples:
        ink = float(np.frombuffer(base64.b64decode(examples["input_base64"]), np.float32).max(initial=1.0))
    else:
        ink = 1.0
    return {
        **contract.to_json(),
        "description": spec.get("description", ""),
        "dataset": dataset,
        "metrics": contract.metadata.get(META_METRICS) or {},
        "view": "image" if image else "table" if contract.is_table else "form",
        "columns": contract.metadata.get(META_COLUMNS) if contract.is_table else None,
        "drawing": {"style": "digit" if dataset in DIGIT_DATASETS or contract.labels() == DIGITS else "fill", "ink": ink,
                    "background": 0, "polarity": "light on dark"},
        "ort": ort,
        "examples": "examples.json" if examples else None,
    }


def write_web(run: Path, *, ort_web=None, log=print, variant=None) -> Path:
    """Write run/web/ from run/model.onnx (or the verified ONNX `variant`: zoo.stages.variants_verify.verified);
    return the folder. Replaces an earlier web/ whole."""
    run = Path(run)
    model = run / MODEL_ONNX
    provenance.check_chain(run, MODEL_ONNX)  # the page ships only the model export wrote, made from this run's
    if variant is not None:
        from zoo.deploy.variants_card import onnx_variant

        model = onnx_variant(run, variant)
    contract = Contract.from_onnx(model)  # checks the file keeps the contract
    target = run / WEB
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise UsageError(f"{target}: exists and is not a folder zoo wrote (a link or a file); remove it first")
    dist, source = find_ort_web(ort_web, start=run.resolve())
    examples = _examples(run, contract, variant)
    for stale in run.glob(".web.*"):  # what a killed zoo left (the caller holds the run's lock)
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=run, prefix=".web.", suffix=".tmp"))
    try:
        for name in PAGE_FILES:
            (tmp / name).write_bytes(resources.files("zoo.deploy.assets").joinpath("web", name).read_bytes())
        shutil.copyfile(model, tmp / model.name)
        if dist is not None:
            (tmp / "ort").mkdir()
            for name in (ORT_MODULE, ORT_WASM):
                shutil.copyfile(dist / name, tmp / "ort" / name)
            ort = {"source": "local", "version": _ort_version(dist), "module": f"./ort/{ORT_MODULE}",
                   "wasm": f"./ort/{ORT_WASM}", "integrity": {}, "advice": LOCAL_ADVICE}
        else:
            ort = {"source": "cdn", "version": ORT_WEB_VERSION, "module": ORT_CDN + ORT_MODULE,
                   "wasm": ORT_CDN + ORT_WASM,
                   "integrity": {ORT_CDN + name: h for name, h in ORT_INTEGRITY.items()}, "advice": CDN_ADVICE}
        config = {**_page_config(contract, examples, ort), "model": model.name, "variant": variant or "float32"}
        (tmp / "model.json").write_text(json.dumps(config, indent=2) + "\n")
        if examples:
            (tmp / "examples.json").write_text(json.dumps(examples) + "\n")
        html = (tmp / "index.html").read_text()
        importmap = {"imports": {"onnxruntime-web": ort["module"]}}
        if ort["integrity"]:
            importmap["integrity"] = {ort["module"]: ort["integrity"][ort["module"]]}
        (tmp / "index.html").write_text(html.replace("<!--ZOO_IMPORTMAP-->", json.dumps(importmap)))
        for p in [tmp, *tmp.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        _swap_in(tmp, target)
        provenance.record_folder(run, WEB, "export", inputs=[MODEL_ONNX] if variant is None else [model.name])
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dist is not None:
        log(f"wrote {target}/ (onnxruntime-web {ort['version']} copied from {source} into web/ort/: works offline)")
    else:
        log(f"wrote {target}/; no onnxruntime-web found (--ort-web DIR, ${ORT_ENV} or a node_modules nearby), "
            f"so the page loads onnxruntime-web {ORT_WEB_VERSION} from {ORT_CDN} (checked against sha384 "
            f"hashes) and needs the network; for an offline page, {INSTALL_ORT_WEB}")
    if examples is None:
        log(f"  no {TEST_DATA_SET}/ in {run}: the page has no example grid (run `zoo verify {run}` to write it)")
    return target


def _swap_in(tmp: Path, target: Path) -> None:
    """Put the finished folder at `target`; a reader sees the old web/ or the new one, never half."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=".web.", suffix=".old"))
        os.replace(target, old / WEB)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
                      ".json": "application/json", ".onnx": "application/octet-stream"}

    def log_message(self, format, *args):  # quiet: the page's requests are not news
        pass


def web_folder(run: Path) -> Path:
    folder = Path(run) / WEB
    if not (folder / "index.html").is_file() or not (folder / "model.json").is_file():
        raise UsageError(f"{run}: no web page yet; run `zoo export {run} --web` first")
    return folder


def make_server(run: Path, port: int = WEB_PORT) -> http.server.ThreadingHTTPServer:
    """An HTTP server for run/web/ on 127.0.0.1 (port 0: any free port); the caller serves and closes it."""
    folder = web_folder(run)
    handler = lambda *a, **k: _Handler(*a, directory=str(folder), **k)  # noqa: E731
    try:
        return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as e:
        raise UsageError(f"cannot listen on 127.0.0.1:{port} ({e.strerror}); choose another --port") from None


def serve(run: Path, port: int = WEB_PORT, log=print) -> None:
    """Serve run/web/ until interrupted."""
    server = make_server(run, port)
    log(f"serving {web_folder(run)} at http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log("stopped")
    finally:
        server.server_close()
