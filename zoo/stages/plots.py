"""Pictures of a run, as files: d2l's training curves and its predict_ch3 grid."""

from __future__ import annotations

from zoo.core import files


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


Y_LABEL_CLASSIFIER = "loss (cross-entropy) / accuracy"
Y_LABEL_REGRESSION = "loss (MSE, log scale)"
TRUE_PREFIX, PRED_PREFIX = "true: ", "pred: "
PREDICTIONS_TITLE = "each image: true label (top line) / predicted label (bottom line, red when wrong)"


def curves(history, spec, path, best_epoch=None):
    """Train loss, train accuracy and test accuracy per epoch (MSE and MAE for regression);
    `best_epoch`: early stopping's best, whose weights the model kept, marked by a line."""
    _save(curves_figure(history, spec, best_epoch), path)


def _save(fig, path):
    plt = _pyplot()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def best_label(epoch: int) -> str:
    return f"best epoch {epoch} (weights kept)"


def curves_figure(history, spec, best_epoch=None):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    epochs = [h["epoch"] for h in history]
    keys = ["loss", "accuracy", "val_accuracy"] if spec.is_classifier else ["loss", "val_loss"]
    labels = {"loss": "train loss", "accuracy": "train acc", "val_accuracy": "test acc", "val_loss": "test loss"}
    for key in keys:
        if history and key in history[0]:
            ax.plot(epochs, [h[key] for h in history], marker="o", markersize=3, label=labels[key])
    if best_epoch:
        ax.axvline(best_epoch, color="tab:green", linestyle="--", linewidth=1, label=best_label(best_epoch))
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # ticks on whole epochs only
    ax.set_ylabel(Y_LABEL_CLASSIFIER if spec.is_classifier else Y_LABEL_REGRESSION)
    ax.set_title(spec.name)
    ax.grid(True, alpha=0.3)
    ax.legend()
    if not spec.is_classifier:
        ax.set_yscale("log")
    fig.tight_layout()
    return fig


def predictions(images, y_true, y_pred, class_names, path, columns=9):
    """A grid of test images titled 'true: X' over 'pred: Y', as d2l's predict_ch3 (which leaves the lines unnamed)."""
    _save(predictions_figure(images, y_true, y_pred, class_names, columns), path)


def predictions_figure(images, y_true, y_pred, class_names, columns=9):
    plt = _pyplot()
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.3, rows * 1.6), dpi=100, squeeze=False)
    names = class_names or [str(i) for i in range(int(max(y_true.max(), y_pred.max())) + 1)]
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, t, p in zip(axes.flat, images, y_true, y_pred):
        ax.imshow(img, cmap="gray_r" if img.max() <= 16 else "gray")
        ax.set_title(f"{TRUE_PREFIX}{names[int(t)]}\n{PRED_PREFIX}{names[int(p)]}", fontsize=7,
                     color="black" if t == p else "red")
    fig.suptitle(PREDICTIONS_TITLE, fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.80, wspace=0.15, hspace=0.7)  # tight_layout: 0.5 s
    return fig
