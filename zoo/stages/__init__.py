"""The pipeline's stages, one module each: data, build, train, export, verify, predict, plots.

Each stage has one entry point (`build_run`, `train_run`, `export_run`, `verify_run`) that
takes the validated spec and its run folder and returns what it made."""
