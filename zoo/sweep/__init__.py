"""zoo sweep: a grid of spec overrides x seeds, trained as trials of an Optuna study."""
