"""The `zoo` command. It only parses options and delegates to the library.

Heavy imports (Keras, TensorFlow, onnxruntime) happen inside the commands that need
them, so `zoo --help`, `zoo list`, `zoo schema` and spec validation answer at once.
Every `ZooError` becomes one line on stderr and its exit code (see errors.EXIT_CODES).
"""

from __future__ import annotations

import json
from textwrap import shorten

import click

from zoo.core import files, runs
from zoo.core.console import handled
from zoo.core.errors import EXIT_CODES, UsageError
from zoo.core.version import __version__
from zoo.deploy.defaults import GRPC_PORT, HOST, HTTP_PORT, INSTANCES, METRICS_PORT, WEB_PORT
from zoo.spec import load_spec

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT, epilog="Exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()))
@click.version_option(__version__, "-V", "--version")
def main():
    """zoo: a JSON spec in; a trained, exported, verified model out.

    \b
    Example:
      zoo run specs/digits-softmax.json
    """


# ----- spec commands (no TensorFlow) ----------------------------------------------------

@main.command("list")
@click.option("--specs", "folder", type=click.Path(), default=None, help="Catalog folder [default: ./specs or $ZOO_SPECS].")
@handled
def list_cmd(folder):
    """List the catalog of specs: name, kind, dataset, parameters.

    \b
    Example:
      zoo list
    """
    from zoo.spec.catalog import catalog

    rows = catalog(folder)
    if not rows:
        raise UsageError(f"no specs in {folder or 'specs'}/")
    width = max(len(r["file"]) for r in rows)
    click.echo(f"{'spec':<{width}}  {'kind':<7}  {'dataset':<16}  {'params':>9}  description")
    for r in rows:
        params = f"{r['params']:,}" if r["params"] is not None else "invalid" if r["kind"] == "?" else "by data"
        click.echo(f"{r['file']:<{width}}  {r['kind']:<7}  {r['dataset']:<16}  {params:>9}  "
                   f"{shorten(r['description'], 60, placeholder=' …')}")


@main.command()
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None, help="Write to this file instead of stdout.")
@handled
def schema(out):
    """Print the JSON Schema of a spec (specs/schema.json is generated from it).

    \b
    Example:
      zoo schema --out specs/schema.json
    """
    from zoo.spec import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if out:
        files.write_text(out, text)
    else:
        click.echo(text, nl=False)


@main.command()
@click.argument("spec_file", metavar="SPEC", type=click.Path())
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Dataset folder, for a table's columns [default: $ZOO_DATA_DIR, else ~/.keras/datasets].")
@handled
def check(spec_file, data_dir):
    """Validate a spec and print it with every default filled in; for a table, also each
    column's kind (inferred from the training split, or the spec's) and fitted figures, or,
    when its CSV is not found yet, where zoo looked (exit 0: the spec is valid).

    \b
    Example:
      zoo check specs/mnist-mlp.json
    """
    from zoo import api
    from zoo.spec import dumps

    spec = load_spec(spec_file)
    click.echo(dumps(spec), nl=False)
    missing = api.table_data_missing(spec, data_dir=data_dir)
    columns = [] if missing else api.table_columns(spec, data_dir=data_dir)
    if missing:
        click.echo(missing)
    if columns:
        click.echo(f"columns of {spec.data.path or spec.data.dataset} (label {spec.data.label_column!r}), "
                   f"as read from the training split:")
        for c in columns:
            fitted = (f"mean {c['mean']:.4g}, std {c['std']:.4g}" if c["kind"] == "numeric"
                      else f"{len(c['categories'])} categories: {', '.join(c['categories'][:5])}"
                      + (", ..." if len(c["categories"]) > 5 else ""))
            click.echo(f"  {c['name']:<20} -> input {c['input']:<20} {c['how']:<24} {fitted}")


# ----- build / train --------------------------------------------------------------------

out_option = click.option("--out", default=None, type=click.Path(file_okay=False),
                          help="Folder for runs [default: ./exports or $ZOO_OUT].")
data_option = click.option("--data-dir", default=None, type=click.Path(file_okay=False),
                           help="Dataset folder [default: $ZOO_DATA_DIR, else ~/.keras/datasets].")


@main.command()
@click.argument("spec_file", metavar="SPEC", type=click.Path())
@out_option
@click.option("--show", is_flag=True, help="Print the resolved spec (every default filled in).")
@handled
def build(spec_file, out, show):
    """Validate a spec, build its Keras model and write exports/<name>/.

    Writes spec.json (resolved) and the untrained model.keras.

    \b
    Example:
      zoo build specs/fashion-mnist-softmax.json
    """
    from zoo import api
    from zoo.spec import dumps

    spec = api.load_spec(spec_file)
    if show:
        click.echo(dumps(spec), nl=False)
    built = api.build(spec, out=out)
    click.echo(f"{built.run.name} ({spec.model.kind})")
    click.echo(f"  {'layer':<14} {'type':<12} {'output shape':<18} {'params':>9}")
    for r in built.summary:
        click.echo(f"  {r['name']:<14} {r['type']:<12} {str(tuple(r['output_shape'])):<18} {r['params']:>9,}")
    click.echo(f"  total params: {built.model.count_params():,}")
    click.echo(f"wrote {built.run}/spec.json and model.keras")


def train_options(fn):
    for option in reversed([
        click.option("--epochs", type=int, default=None, help="Override train.epochs."),
        click.option("--batch-size", type=int, default=None, help="Override train.batch_size."),
        click.option("--learning-rate", type=float, default=None, help="Override train.learning_rate."),
        click.option("--seed", type=int, default=None, help="Override train.seed."),
        click.option("--device", type=click.Choice(["cpu", "gpu"]), default=None,
                     help="Force a device [default: the GPU when there is one]."),
        click.option("--backend", type=click.Choice(["tensorflow", "jax", "torch"]), default=None,
                     help="Keras backend [default: $KERAS_BACKEND, else tensorflow]."),
        click.option("--quiet", "-q", is_flag=True, help="No progress output."),
        data_option, out_option,
    ]):
        fn = option(fn)
    return fn


def _report_training(metrics, run):
    from zoo import api

    for line in api.training_summary(metrics, run):
        click.echo(line)


@main.command()
@click.argument("target", metavar="[SPEC|RUN]", required=False)
@train_options
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last completed epoch.")
@handled
def train(target, epochs, batch_size, learning_rate, seed, device, backend, quiet, data_dir, out, resume):
    """Train a spec's model (or a built run; with no argument the latest run).

    \b
    Example:
      ZOO_DATA_DIR=../shared/datasets zoo train specs/fashion-mnist-softmax.json
    """
    from zoo import api

    if target is None:
        click.echo(f"training the latest run: {runs.latest(out)}")
    metrics = api.train(target, out=out, resume=resume, data_dir=data_dir, device=device, backend=backend,
                        log=None if quiet else click.echo, quiet=quiet, epochs=epochs, batch_size=batch_size,
                        learning_rate=learning_rate, seed=seed)
    _report_training(metrics, api.run_folder(target, out))


# ----- export / verify / predict / run ----------------------------------------------------

@main.command()
@click.argument("target", metavar="[RUN]", required=False)
@click.option("--onnx/--no-onnx", default=True, help="Write model.onnx (the only format so far).")
@click.option("--opset", type=int, default=None, help="ONNX opset [default: the spec's export.opset].")
@click.option("--atol", type=float, default=None, help="Absolute tolerance for verification.")
@click.option("--rtol", type=float, default=None, help="Relative tolerance for verification.")
@click.option("--no-verify", is_flag=True, help="Skip the onnxruntime check (not recommended).")
@click.option("--web", is_flag=True, help="Also write web/: a page running the model with onnxruntime-web.")
@click.option("--ort-web", type=click.Path(file_okay=False), default=None,
              help="onnxruntime-web's npm folder to copy into web/ort/, or `cdn` [default: $ZOO_ORT_WEB, a node_modules nearby].")
@click.option("--triton", "triton_repo", is_flag=False, flag_value="", default=None, metavar="[REPO]",
              help="Also write a Triton model repository [REPO default: RUN/triton].")
@click.option("--variant", "variants", multiple=True, metavar="NAME",
              help="Also make and verify this variant: int8, fp16, ort, litert, litert-int8 (repeatable); with "
                   "--web/--triton, the verified ONNX variant they use.")
@data_option
@out_option
@handled
def export(target, onnx, opset, atol, rtol, no_verify, web, ort_web, triton_repo, variants, data_dir, out):
    """Export a trained run to ONNX (tf2onnx), then verify it against Keras.

    With --web or --triton, a model.onnx that is already the export of the run's
    model.keras (provenance.json says so) is used as it is, unless --opset is given.

    \b
    Example:
      zoo export exports/digits-softmax --onnx
      zoo export exports/digits-softmax --web --triton
      zoo export exports/digits-softmax --variant int8 --variant litert
    """
    from zoo import api

    api.export(runs.find_run(target, out), out=out, opset=opset, atol=atol, rtol=rtol, data_dir=data_dir,
               verify=not no_verify, onnx=onnx, web=web, ort_web=ort_web, triton=triton_repo, variants=variants,
               log=click.echo)


@main.command()
@click.argument("target", metavar="RUN|MODEL.onnx", required=False)
@click.option("--atol", type=float, default=None, help="Absolute tolerance [default: the spec's export.atol].")
@click.option("--rtol", type=float, default=None, help="Relative tolerance [default: the spec's export.rtol].")
@data_option
@out_option
@handled
def verify(target, atol, rtol, data_dir, out):
    """Check an exported model against its Keras model with onnxruntime.

    \b
    Example:
      zoo verify exports/digits-softmax
    """
    from zoo import api

    api.verify(target, out=out, atol=atol, rtol=rtol, data_dir=data_dir, log=click.echo)


@main.command()
@click.argument("model", metavar="MODEL.onnx", type=click.Path())
@click.argument("inputs", metavar="INPUT", type=click.Path())
@click.option("--top-k", "-k", type=int, default=3, show_default=True, help="Classes to show per example.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@handled
def predict(model, inputs, top_k, as_json):
    """Run an exported model with onnxruntime alone on a .npy, an image, a .csv or a .pb.

    \b
    Example:
      zoo predict exports/digits-softmax/model.onnx exports/digits-softmax/test_data_set_0/input_0.pb
    """
    from zoo.api import predict as predict_api
    from zoo.stages.predict import format_predictions

    results = predict_api(model, inputs, top_k=top_k, log=lambda message: click.echo(message, err=True))
    click.echo(json.dumps(results, indent=2) if as_json else format_predictions(results))


@main.command()
@click.argument("spec_file", metavar="SPEC", type=click.Path())
@train_options
@handled
def run(spec_file, epochs, batch_size, learning_rate, seed, device, backend, quiet, data_dir, out):
    """Build, train, export and verify a spec in one command.

    \b
    Example:
      zoo run specs/digits-softmax.json
    """
    from zoo import api

    done = api.run(spec_file, out=out, data_dir=data_dir, device=device, backend=backend,
                   log=None if quiet else click.echo, quiet=quiet, epochs=epochs, batch_size=batch_size,
                   learning_rate=learning_rate, seed=seed)
    if quiet:  # otherwise api.run said it all as it went
        _report_training(done["metrics"], done["run"])


# ----- web: the page zoo export --web writes ----------------------------------------------

@main.command()
@click.argument("target", metavar="[RUN]", required=False)
@click.option("--port", type=click.IntRange(0, 65535), default=WEB_PORT, show_default=True,
              help="Port on 127.0.0.1 (0: any free port).")
@out_option
@handled
def web(target, port, out):
    """Serve a run's web page (from `zoo export RUN --web`) on 127.0.0.1.

    \b
    Example:
      zoo export exports/digits-softmax --web && zoo web exports/digits-softmax
    """
    from zoo.deploy.web import serve

    serve(runs.find_run(target, out), port, log=click.echo)


# ----- sweep (issue 11) -------------------------------------------------------------------

@main.command()
@click.argument("spec_file", metavar="SPEC", required=False, type=click.Path())
@click.option("--set", "sets", multiple=True, metavar="KEY=V1,V2",
              help="Sweep a spec key over values (repeatable), e.g. model.hidden[0].units=64,256.")
@click.option("--seeds", default=None, metavar="S1,S2", help="Seeds for every combination [default: the spec's].")
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Worker processes on this machine (each trains one trial at a time).")
@click.option("--storage", envvar="ZOO_SWEEP_STORAGE", default=None, metavar="URL",
              help="Optuna RDB storage, e.g. postgresql://user:pw@host/db [default: SQLite in the sweep folder; "
                   "$ZOO_SWEEP_STORAGE].")
@click.option("--study", "study_name", default=None, help="Study name [default: the spec's name and a hash of the grid].")
@click.option("--metric", default=None, help="Test metric to rank by [default: accuracy; loss for regression].")
@click.option("--heartbeat", type=click.IntRange(1, 3600), default=10, show_default=True,
              help="Seconds between a running trial's heartbeats (set by the process that creates the study); "
                   "a trial silent for 3 of them is retried by another worker.")
@click.option("--status", "show_status", is_flag=True, help="Show a sweep's progress and results so far, then exit.")
@click.option("--export", "export", type=click.Choice(["best", "all", "none"]), default="best", show_default=True,
              help="Which runs are exported to ONNX and verified: the sweep's best run (at the end), every trial's, "
                   "or none.")
@train_options
@handled
def sweep(spec_file, sets, seeds, workers, storage, study_name, metric, heartbeat, show_status, export,
          epochs, batch_size, learning_rate, seed, device, backend, quiet, data_dir, out):
    """Train a grid of spec overrides x seeds as trials of an Optuna study.

    Each trial is an ordinary run folder, built and trained as `zoo train` does; the
    best run is then exported and verified (--export all: every run, as `zoo run`
    does). Run the same command on other machines, with the same --storage, to join
    the sweep.

    \b
    Example:
      zoo sweep specs/digits-mlp.json --set train.learning_rate=0.05,0.1 \\
          --set model.hidden[0].units=64,256 --seeds 0,1,2 --workers 2
    """
    from zoo import sweep as sweeps

    seeds = sweeps.choose_seeds(seeds, seed)
    fixed = {"train.epochs": epochs, "train.batch_size": batch_size, "train.learning_rate": learning_rate}
    if show_status:
        sweeps.status(storage, study_name, out, spec=spec_file, sets=sets, seeds=seeds, fixed=fixed, metric=metric,
                      echo=click.echo)
    else:
        sweeps.sweep(spec_file, sets, seeds, fixed=fixed, metric=metric, workers=workers, storage_url=storage,
                     study_name=study_name, out=out, data_dir=data_dir, device=device, backend=backend,
                     heartbeat=heartbeat, quiet=quiet, echo=click.echo, export=export)


# ----- serve (Triton over the Open Inference Protocol) ---------------------------------------

@main.command()
@click.argument("targets", metavar="RUN|REPO...", nargs=-1)
@click.option("--host", default=HOST, show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=int, default=HTTP_PORT, show_default=True, help="REST (HTTP) port.")
@click.option("--grpc-port", type=int, default=GRPC_PORT, show_default=True, help="gRPC port.")
@click.option("--metrics-port", type=int, default=METRICS_PORT, show_default=True, help="Prometheus metrics port.")
@click.option("--instances", type=click.IntRange(1, 16), default=INSTANCES, show_default=True,
              help="Model instances per model (batches in flight at once).")
@click.option("--verbose", is_flag=True, help="Show Triton's own log.")
@click.option("--variant", default=None, metavar="NAME",
              help="Serve each run's verified ONNX variant (int8 or fp16) instead of its model.onnx.")
@handled
def serve(targets, host, port, grpc_port, metrics_port, instances, verbose, variant):
    """Serve exported models with Triton (REST + gRPC, Open Inference Protocol) until Ctrl-C.

    RUN is a run folder with model.onnx; REPO a Triton model repository from
    `zoo export --triton`. Requests are checked against the model (input name, dtype,
    shape, batch size) and answered with a 400 when they do not fit.

    \b
    Example:
      zoo serve exports/digits-softmax
      curl localhost:8000/v2/models/digits-softmax
    """
    from zoo.deploy.serve import serve as serve_models

    serve_models(targets, host=host, port=port, grpc_port=grpc_port, metrics_port=metrics_port, instances=instances,
                 verbose=verbose, log=click.echo, variant=variant)


if __name__ == "__main__":
    main()
