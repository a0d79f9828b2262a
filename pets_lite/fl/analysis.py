"""What chapter 03 shows about a federation: the two references (each hospital alone, everybody
pooled), per-hospital tables, fairness, and what the updates say about the hospitals' labels."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import config, data, train
from ..recipes import cached_model
from .server import FLResult
from .settings import FLConfig, FLConfigError
from .task import build_model, central_test, config_data


def local_only(cfg: FLConfig, epochs: int | None = None, progress: bool = True) -> list[dict]:
    """Each hospital trains alone on its own images; scored on the central test split.

    Epochs default to the federated budget (rounds x local epochs). Model selection on the
    hospital's own validation images when they hold both classes, else the last epoch. Hospital
    starts from the federation's initial weights; its shuffling is the stream (seed, "alone", k).
    """
    epochs = epochs or cfg.rounds * cfg.local_epochs
    test = central_test(cfg.flag, cfg.fast, cfg.seed, cfg.image_size)
    rows = []
    bar = config.progress(range(cfg.n_hospitals), desc=f"hospitals alone ({cfg.scheme}, "
                          f"alpha={cfg.alpha})", disable=not progress)
    for k in bar:
        local = config_data(cfg, k)
        val = local["val"] if len(torch.unique(local["val"].tensors[1])) > 1 else None
        seed = config.derive_seed(cfg.seed, "alone", k)
        with config.seeded(cfg.seed):
            model = build_model(cfg)
        history = train.fit(model, local["train"], val, epochs=epochs, lr=cfg.lr,
                            batch_size=cfg.batch_size, seed=seed, progress=False)
        m = train.evaluate(model, test)
        rows.append({"hospital": f"H{k + 1}", "n_train": len(local["train"]),
                     "test_auc": m["auc"], "test_acc": m["acc"],
                     "seconds": history.total_seconds})
    return rows


def centralized(cfg: FLConfig, epochs: int | None = None, progress: bool = True,
                refresh: bool = False) -> tuple[nn.Module, dict]:
    """The pooled reference: the same model trained on every hospital's images in one place.

    Same budget as the federation by default (rounds x local epochs over the pooled data), with
    model selection on the pooled validation split; cached in the model cache.
    """
    recipe = train.BaselineRecipe(flag=cfg.flag, seed=cfg.seed, fast=cfg.fast, width=cfg.width,
                                  depth=cfg.depth, epochs=epochs or cfg.rounds * cfg.local_epochs,
                                  batch_size=cfg.batch_size, lr=cfg.lr, image_size=cfg.image_size)
    splits = data.load_splits(cfg.flag, fast=cfg.fast, seed=cfg.seed, image_size=cfg.image_size)

    def fit_fn(model):
        h = train.fit(model, splits["train"], splits["val"], epochs=recipe.epochs, lr=recipe.lr,
                      batch_size=recipe.batch_size, seed=recipe.seed, progress=progress,
                      desc="centralized (pooled)")
        return {"seconds": h.total_seconds, "best_epoch": h.best_epoch}

    model, info, _ = cached_model("fl_centralized", recipe, lambda: build_model(cfg), fit_fn,
                                  refresh=refresh)
    model.eval()
    test = central_test(cfg.flag, cfg.fast, cfg.seed, cfg.image_size)
    return model, {**info, **train.evaluate(model, test)}


def hospitals_table(result: FLResult, phase: str = "evaluate", server_round: int | None = None):
    """Per-hospital metrics of one experiment (last round by default)."""
    import pandas as pd

    table = pd.DataFrame([r for r in result.hospitals if r["phase"] == phase])
    if table.empty:
        return table
    server_round = server_round or int(table["round"].max())
    table = table[table["round"] == server_round].copy()
    table["hospital"] = [f"H{int(h) + 1}" for h in table["hospital"]]
    return table.drop(columns=["phase"]).set_index("hospital").sort_index()


def update_deltas(result: FLResult, server_round: int) -> dict[int, dict[str, np.ndarray]]:
    """Each hospital's update in a round: the weights it sent minus the global weights it got."""
    if not result.updates or server_round not in result.updates:
        raise FLConfigError(f"no updates kept for round {server_round} of {result.name!r}; run "
                            "with keep_updates=True")
    start = result.globals[server_round]
    return {k: {n: w - start[n] for n, w in weights.items()}
            for k, weights in result.updates[server_round].items()}


def label_signal(result: FLResult, cfg: FLConfig, positive: int = 1):
    """What each update says about its hospital's labels, with no image in sight.

    For every kept round and hospital: the change of the output layer's bias for class
    ``positive`` minus its mean change over the classes (a hospital rich in that class pushes the
    bias up), beside the hospital's true share of that class. Returns a pandas table.
    """
    import pandas as pd

    rows = []
    for server_round in sorted(result.updates or {}):
        deltas = update_deltas(result, server_round)
        for k, delta in sorted(deltas.items()):
            bias = [n for n, v in delta.items() if n.endswith("bias") and v.ndim == 1][-1]
            change = delta[bias]
            labels = config_data(cfg, k)["train"].tensors[1].numpy()
            rows.append({"round": server_round, "hospital": f"H{k + 1}",
                         "bias signal": float(change[positive] - change.mean()),
                         "true share": float(np.mean(labels == positive))})
    return pd.DataFrame(rows)


def label_leak(signal) -> dict:
    """How well the server ranks the hospitals by their label mix from :func:`label_signal`:
    the Spearman correlation of bias signal and true share over every update, and the share of
    rounds in which the hospital with the largest signal is the one richest in the class."""
    from scipy.stats import spearmanr

    rho = float(spearmanr(signal["bias signal"], signal["true share"]).statistic)
    hits = [group.loc[group["bias signal"].idxmax(), "true share"] == group["true share"].max()
            for _, group in signal.groupby("round")]
    return {"spearman": rho, "top_hospital_found": float(np.mean(hits)), "updates": len(signal)}


def fairness_table(result: FLResult, local_rows: list[dict]):
    """Per hospital: local-only test AUC, the federated model's, the gain, and the federated model
    on the hospital's own validation images."""
    import pandas as pd

    table = pd.DataFrame(local_rows).set_index("hospital")[["n_train", "test_auc"]]
    table = table.rename(columns={"test_auc": "alone: test AUC"})
    table["federated: test AUC"] = result.test_auc
    table["gain"] = table["federated: test AUC"] - table["alone: test AUC"]
    local = hospitals_table(result)
    if not local.empty:
        table["federated: own val AUC"] = local["val-auc"]
        table["federated: own val ACC"] = local["val-acc"]
    return table
