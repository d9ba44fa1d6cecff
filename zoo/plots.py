"""PNG plots of what a person would rather see than read."""
from __future__ import annotations

import csv
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(summary_csv: Path, output: Path, title: str = "") -> Path:
    """Loss and top-1 accuracy per epoch (train and test) from a run's summary.csv."""
    rows = list(csv.DictReader(Path(summary_csv).open()))
    plt = _pyplot()
    epochs = [int(r["epoch"]) for r in rows]

    def column(name):
        return [float(r[name]) if r.get(name) not in (None, "") else float("nan") for r in rows]

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, column("loss"), "o-", label="train")
    # the training objective on the test images (val_loss in runs made before the rename)
    test_loss = "val_train_loss" if rows and "val_train_loss" in rows[0] else "val_loss"
    ax_loss.plot(epochs, column(test_loss), "o-", label="test")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_acc.plot(epochs, column("accuracy"), "o-", label="train")
    ax_acc.plot(epochs, column("val_accuracy"), "o-", label="test")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("top-1 accuracy (%)")
    ax_acc.legend()
    stages = [r["stage"] for r in rows]
    for i in range(1, len(stages)):
        if stages[i] != stages[i - 1]:
            for ax in (ax_loss, ax_acc):
                ax.axvline(epochs[i] - 0.5, color="grey", linestyle="--", linewidth=0.8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return Path(output)
