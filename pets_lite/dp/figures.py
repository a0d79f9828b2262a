"""The figures of chapter 02: gradient norms before and after clipping, the privacy-utility curve,
the membership attack against its DP ceiling, and the cost of each clipping engine."""

from __future__ import annotations

import numpy as np


def norms_figure(anatomies: dict[str, dict], max_grad_norm: float):
    """Histograms of per-sample gradient norms before and after clipping, one panel per step of
    :func:`pets_lite.dp.dp_sgd_step_anatomy`."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(anatomies), figsize=(5 * len(anatomies), 3.2), squeeze=False)
    for ax, (name, a) in zip(axes[0], anatomies.items()):
        bins = np.linspace(0, np.quantile(a["norms_before"], 0.99) * 1.05, 40)
        ax.hist(a["norms_before"], bins=bins, alpha=0.6, label="before clipping")
        ax.hist(a["norms_after"], bins=bins, alpha=0.6,
                label=f"after clipping (C = {max_grad_norm:g})")
        ax.set(xlabel="per-sample gradient L2 norm", ylabel="examples", title=name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def curve_figure(curve, runs, baseline_auc: float, matched_auc: float, title: str):
    """Test AUC against ε (log scale): the mean over seeds with its spread (``curve``: a frame
    indexed by ε with ``test_auc`` and ``test_auc_sd``), each run as a dot (``runs``: rows with
    ``epsilon`` and ``test_auc``), and the two non-private references as lines."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.errorbar(curve.index, curve["test_auc"], yerr=curve["test_auc_sd"].fillna(0), marker="o",
                capsize=3, label="DP-SGD (mean over seeds; dots: single runs)")
    ax.plot([r["epsilon"] for r in runs], [r["test_auc"] for r in runs], ".", color="tab:blue",
            alpha=0.4)
    ax.axhline(baseline_auc, color="k", ls="--", label="non-private baseline (chapter 00)")
    ax.axhline(matched_auc, color="gray", ls=":", label="non-private, DP recipe's model")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="epsilon (delta = 1e-5)", ylabel="test AUC", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def attack_figure(table):
    """The loss-threshold attack's advantage per model (``table``: a frame indexed by model with
    ``advantage`` and ``DP ceiling on advantage``), the first row non-private."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.bar(table.index, table["advantage"], color=["k"] + ["tab:blue"] * (len(table) - 1),
           label="measured advantage")
    ax.plot(table.index, table["DP ceiling on advantage"], "r_", ms=25, mew=2,
            label="DP ceiling (any attack)")
    ax.set(ylabel="TPR - FPR (best threshold)", title="loss-threshold membership attack",
           ylim=(0, 1.05))
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def cost_figure(cost, default_mode: str, title: str):
    """Epoch time of each engine over the non-private epoch (``cost``: a frame indexed by mode
    with ``ratio``, ``ratio_min`` and ``ratio_max``, from :func:`pets_lite.dp.overhead_summary`);
    the default engine in green."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    colors = ["gray"] + ["tab:green" if m == default_mode else "tab:blue" for m in cost.index[1:]]
    ax.bar(cost.index, cost["ratio"], color=colors, capsize=3,
           yerr=[cost["ratio"] - cost["ratio_min"], cost["ratio_max"] - cost["ratio"]])
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(cost)),
                  [f"{m}\n(default)" if m == default_mode else m for m in cost.index])
    ax.set(ylabel="epoch time / non-private epoch", title=title)
    fig.tight_layout()
    return fig
