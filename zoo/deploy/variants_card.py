"""The model card's "Variants" section: what each export variant costs and buys, measured.

One row per variant that verify.json records (zoo.stages.variants_verify): its file and
size, the test metric on the whole test set, the drop from the float32 model.onnx, the
argmax agreement with Keras, and the median latency of one call at batch 1 and 256 in its
own runtime, on the machine verify ran on (named). A variant that failed its gate is
listed as failed, and nothing uses it.
"""

from __future__ import annotations

from zoo.core.contract import MODEL_ONNX


def _row(name: str, f: dict, reference: float) -> str:
    agree = f"{f['argmax_agreement']:.2%}" if "argmax_agreement" in f else "–"
    drop = "–" if name == "float32" else f"{f['drop']:+.4f}"
    status = "reference" if name == "float32" else f["status"]
    lat = f.get("latency_ms", {})
    return (f"| {name} | `{f['file']}` | {f['runtime']} | {f['size_bytes'] / 1024:,.0f} KiB | {f['value']:.4f} | "
            f"{drop} | {agree} | {lat.get('batch_1', float('nan')):.3f} | {lat.get('batch_256', float('nan')):.3f} "
            f"| {status} |")


def _pays(table: dict) -> list[str]:
    """One line per variant: size and batch-256 latency against float32, and whether it pays."""
    base = table["float32"]
    lines = []
    for name, f in table.items():
        if name == "float32" or "latency_ms" not in f:
            continue
        size = f["size_bytes"] / base["size_bytes"]
        speed = f["latency_ms"]["batch_256"] / base["latency_ms"]["batch_256"]
        verdict = ("smaller and faster" if size < 1 and speed < 1 else "smaller, not faster" if size < 1
                   else "faster, not smaller" if speed < 1 else "neither smaller nor faster: it does not pay here")
        lines.append(f"- {name}: {size:.0%} of float32's size, {speed:.2f}× its batch-256 latency: {verdict}.")
    return lines


def variants_section(report: dict) -> str:
    """The card's Markdown section from verify.json's content (report["variants"])."""
    table = report["variants"]
    base = table["float32"]
    metric = base["metric"]
    drop_word = "accuracy points lost" if metric == "accuracy" else "relative MSE increase"
    rows = [_row(name, f, base["value"]) for name, f in table.items()]
    failed = [n for n, f in table.items() if f.get("status") == "failed"]
    made = [f"- `{f['file']}`: {f['made'].get('method', '')}" for n, f in table.items() if n != "float32" and f.get("made")]
    note = (f"\n**Failed their gate, kept for inspection only, never used by the page or a server:** "
            f"{', '.join(failed)}.\n" if failed else "")
    return f"""## Variants

Each file verified on the whole test set ({report.get('variants_examples', '?'):,} examples) against the Keras model;
drop is {drop_word} against `{MODEL_ONNX}` (float32). Latency: {report.get('latency', '')}, in the variant's
own runtime, on {report.get('machine', 'this machine')}.

| variant | file | runtime | size | {metric} | drop | argmax agreement | ms at batch 1 | ms at batch 256 | gate |
| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |
{chr(10).join(rows)}
{note}
How each was made:
{chr(10).join(made)}

{chr(10).join(_pays(table))}

`zoo export RUN --web --variant NAME` and
`zoo export RUN --triton --variant NAME` use a verified ONNX variant; `zoo predict` runs any file here.
"""


def onnx_variant(run, variant: str):
    """The verified ONNX variant file the page, Triton or zoo serve use instead of model.onnx."""
    from zoo.stages.variants_verify import verified

    check_onnx_variant(variant)
    return verified(run, variant)


def check_onnx_variant(variant: str) -> None:
    """UsageError unless `variant` names an ONNX variant (what onnxruntime-web and Triton load)."""
    from zoo.core.contract import ONNX_VARIANTS, VARIANT_FILES
    from zoo.core.errors import UsageError

    if variant not in VARIANT_FILES:
        raise UsageError(f"--variant {variant}: unknown variant; valid: {', '.join(VARIANT_FILES)}")
    if variant not in ONNX_VARIANTS:
        raise UsageError(f"--variant {variant}: onnxruntime-web, Triton and zoo serve load ONNX files; choose one "
                         f"of {', '.join(ONNX_VARIANTS)} (or none: model.onnx)")
