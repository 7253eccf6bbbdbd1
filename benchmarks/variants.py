"""What each export variant costs and buys, for every catalog model, in one run.

For each spec in specs/ whose data is here, the model is trained as its spec says (or with
--epochs) and exported by the real `zoo run`, or taken from --runs where a run of that name
is already trained. Then `zoo export RUN --variant ...` makes every variant that applies
(int8 and litert-int8 are refused for the linear regression) and verifies each on the whole
test set, as the card reports it. This script only collects verify.json's figures:

    variant, file size, test metric, drop from float32, argmax agreement with Keras,
    latency of one call at batch 1 and at batch 256 (the median of 200 and 30 calls on one
    thread, in the variant's own runtime: onnxruntime or the LiteRT interpreter), and the gate.

A variant that fails its gate is kept in the table, marked failed (the command's exit 6 is
expected then, and reported). Prints a Markdown table per model and the machine.

Usage (from the repository root, with ZOO_DATA_DIR set):
    python benchmarks/variants.py                         # every catalog spec, trained as specified
    python benchmarks/variants.py --runs exports          # reuse the runs trained there
    python benchmarks/variants.py --specs specs/digits-mlp.json --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo.core.contract import VARIANT_FILES, VERIFY_FILE  # noqa: E402
from zoo.spec import load_spec  # noqa: E402
from zoo.stages.data import load_dataset  # noqa: E402

QUANTIZED = ("int8", "litert-int8")


def zoo(*args, env=None):
    return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}, cwd=ROOT)


def trained_run(spec_path: Path, runs: Path, epochs):
    spec = load_spec(spec_path)
    run = runs / spec.name
    if (run / "metrics.json").is_file():
        return run, None
    args = ["run", spec_path, "--out", runs, "--quiet"] + (["--epochs", epochs] if epochs else [])
    done = zoo(*args)
    return run, (None if done.returncode == 0 else done.stderr.strip().splitlines()[-1])


def variants_for(spec) -> list[str]:
    return [v for v in VARIANT_FILES if spec.is_classifier or v not in QUANTIZED]


def table(name: str, report: dict) -> list[str]:
    rows = []
    for variant, f in report["variants"].items():
        lat = f["latency_ms"]
        agree = f"{f['argmax_agreement']:.2%}" if "argmax_agreement" in f else "–"
        drop = "–" if variant == "float32" else f"{f['drop']:+.4f}"
        status = "reference" if variant == "float32" else f["status"]
        rows.append(f"| {name} | {variant} | {f['runtime']} | {f['size_bytes'] / 1024:,.1f} | {f['metric']} "
                    f"{f['value']:.4f} | {drop} | {agree} | {lat['batch_1']:.3f} | {lat['batch_256']:.3f} | {status} |")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--specs", nargs="*", type=Path, default=None, help="spec files [default: the catalog]")
    p.add_argument("--runs", type=Path, default=None, help="reuse (and write) runs here [default: a temporary folder]")
    p.add_argument("--epochs", type=int, default=None, help="override every spec's train.epochs")
    args = p.parse_args(argv)
    specs = args.specs or sorted(s for s in (ROOT / "specs").glob("*.json") if s.name != "schema.json")
    runs = args.runs or Path(tempfile.mkdtemp(prefix="zoo-variants-"))
    rows, failed, skipped, machine = [], [], [], ""
    for spec_path in specs:
        spec = load_spec(spec_path)
        try:
            load_dataset(spec)
        except Exception as e:  # noqa: BLE001 - data absent here: say so and go on
            skipped.append(f"{spec.name} ({type(e).__name__}: {str(e).splitlines()[0][:100]})")
            continue
        run, error = trained_run(spec_path, runs, args.epochs)
        if error:
            skipped.append(f"{spec.name} (training failed: {error})")
            continue
        flags = [x for v in variants_for(spec) for x in ("--variant", v)]
        done = zoo("export", run, *flags)
        if done.returncode not in (0, 6):
            skipped.append(f"{spec.name} (export failed, exit {done.returncode}: {done.stderr.strip()[-200:]})")
            continue
        report = json.loads((run / VERIFY_FILE).read_text())
        machine = report.get("machine", machine)
        rows += table(spec.name, report)
        failed += [f"{spec.name} {v}: {'; '.join(f['failures'])}" for v, f in report["variants"].items()
                   if f.get("status") == "failed"]
        print(f"done: {spec.name}", file=sys.stderr, flush=True)
    print(f"Machine: {machine}\n")
    print("| model | variant | runtime | KiB | test metric | drop | argmax agreement | ms batch 1 | ms batch 256 | gate |")
    print("| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | --- |")
    print("\n".join(rows))
    print("\nFailed their gate: " + ("; ".join(failed) if failed else "none"))
    if skipped:
        print("Skipped: " + "; ".join(skipped))
    return 0


if __name__ == "__main__":
    sys.exit(main())
