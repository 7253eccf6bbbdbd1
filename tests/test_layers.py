"""The house rule, held by the suite: layers, no circles, small modules and functions.

The layers are declared in pyproject.toml ([tool.importlinter]) and checked by import-linter's
`lint-imports`; circles and sizes are checked here, on the same import graph (grimp).
"""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "zoo"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# Functions allowed past MAX_FUNCTION_LINES, each with its reason. Keep this short.
LONG_FUNCTIONS = {}


def _modules():
    return [p for p in sorted(PACKAGE.rglob("*.py")) if "assets" not in p.relative_to(PACKAGE).parts]


def test_the_layer_contract_holds():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(lint).exists():
        pytest.skip("import-linter is not installed: pip install -e '.[test]'")
    done = subprocess.run([lint, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def _graph():
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter: pip install -e '.[test]'")
    sys.path.insert(0, str(ROOT))
    return grimp.build_graph("zoo", include_external_packages=False)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a circle."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_no_module_is_part_of_an_import_circle():
    graph = _graph()
    # the package's face (zoo/__init__.py) re-exports the API: every `import zoo.x` runs it first,
    # but it is not a module of any layer, so edges into it are not circles of the layers
    modules = {m for m in graph.modules if m != "zoo"}
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i in modules} for m in modules}
    assert _cycles(edges) == []


def test_the_circle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_is_over_400_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in _modules()}
    assert {k: v for k, v in sizes.items() if v > MAX_MODULE_LINES} == {}


def test_no_function_is_over_60_lines():
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{path.relative_to(ROOT)}:{node.name}"
                size = node.end_lineno - node.lineno + 1
                if size > MAX_FUNCTION_LINES and name not in LONG_FUNCTIONS:
                    long[name] = size
    assert long == {}


def test_one_module_spells_the_artefacts_names():
    """The contract is the only module that spells a run's file names and the graph's output names."""
    names = ['"model.onnx"', '"model.keras"', '"spec.json"', '"metrics.json"', '"verify.json"', '"history.json"',
             '"test_data_set_0"', '"provenance.json"', '"logits"', '"probabilities"', '"predictions"']
    found = {}
    for path in _modules():
        if path.name == "contract.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and f'"{node.value}"' in names:
                found.setdefault(str(path.relative_to(ROOT)), []).append(node.value)
    assert found == {}


def test_the_package_face_only_re_exports_the_api():
    import zoo
    from zoo import api

    assert sorted(zoo.__all__) == sorted([*api.__all__, "__version__"])
    assert all(getattr(zoo, name) is getattr(api, name) for name in api.__all__)
