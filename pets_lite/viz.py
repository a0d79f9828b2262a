"""The plots the notebooks share. Each returns its matplotlib Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch


def image_grid(images: torch.Tensor, labels, label_names: dict[int, str] | None = None,
               n: int = 16, cols: int = 8, title: str | None = None):
    """A grid of the first ``n`` images (N,C,H,W in [0,1]) with their label names."""
    n = min(n, len(images))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        img = images[i].detach().cpu().numpy()
        img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
        ax = axes.flat[i]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        label = int(labels[i])
        ax.set_title(label_names.get(label, str(label)) if label_names else str(label), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def history_plot(history, title: str = "training"):
    """Training loss and validation AUC per epoch, the selected epoch marked."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    epochs = np.arange(1, len(history.train_loss) + 1)
    a.plot(epochs, history.train_loss, marker="o")
    a.set(xlabel="epoch", ylabel="training loss", title=title)
    if history.val_auc:
        b.plot(epochs, history.val_auc, marker="o", color="tab:green")
        b.axvline(history.best_epoch + 1, ls="--", color="gray", label="selected")
        b.set(xlabel="epoch", ylabel="validation AUC", title="model selection on validation")
        b.legend()
    fig.tight_layout()
    return fig


def loss_histograms(member_loss: np.ndarray, nonmember_loss: np.ndarray, title: str = ""):
    """Overlaid histograms of per-example loss for training members vs held-out examples."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    upper = np.quantile(np.r_[member_loss, nonmember_loss], 0.99)
    bins = np.linspace(0, max(upper, 1e-3), 40)
    ax.hist(member_loss, bins=bins, alpha=0.6, density=True, label="members (train)")
    ax.hist(nonmember_loss, bins=bins, alpha=0.6, density=True, label="non-members (held out)")
    ax.set(xlabel="cross-entropy loss", ylabel="density", title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def roc_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], log: bool = False,
             title: str = "ROC"):
    """ROC curves ``{name: (fpr, tpr)}``; ``log=True`` for the low-FPR view membership attacks
    need."""
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for name, (fpr, tpr) in curves.items():
        ax.plot(fpr, tpr, label=name)
    lo = 1e-4 if log else 0
    ax.plot([max(lo, 1e-4) if log else 0, 1], [max(lo, 1e-4) if log else 0, 1], "k--", lw=0.8,
            label="chance")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(1e-4, 1)
        ax.set_ylim(1e-4, 1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def partition_plot(summaries: dict, title: str = "class counts per hospital"):
    """Stacked bars of class counts per hospital, one panel per partition: ``{name: table of
    pets_lite.data.partition_summary}``."""
    fig, axes = plt.subplots(1, len(summaries), figsize=(3.4 * len(summaries), 3.0), squeeze=False,
                             sharey=True)
    for ax, (name, table) in zip(axes[0], summaries.items()):
        classes = [c for c in table.columns if c not in ("total", "share of data")]
        bottom = np.zeros(len(table))
        for c in classes:
            ax.bar(table.index, table[c].to_numpy(), bottom=bottom, label=str(c))
            bottom += table[c].to_numpy()
        ax.set(title=name, xlabel="hospital")
    axes[0][0].set_ylabel("training images")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
