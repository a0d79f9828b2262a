"""Privacy attacks that measure what a model leaks about its training data.

This module starts with the simplest membership-inference attack, the loss threshold of Yeom et al.
(CSF 2018): training examples tend to have lower loss than unseen ones, so ``-loss`` is a membership
score. Its ROC AUC is 0.5 for a model that leaks nothing through its losses.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn
from torch.utils.data import Dataset

from .train import loader


@torch.no_grad()
def per_example_loss(model: nn.Module, dataset: Dataset, batch_size: int = 512) -> np.ndarray:
    """Cross-entropy loss of every example, in dataset order."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    losses = []
    for x, y in loader(dataset, batch_size):
        logits = model(x.to(device))
        losses.append(nn.functional.cross_entropy(logits, y.to(device), reduction="none").cpu())
    model.train(was_training)
    return torch.cat(losses).numpy()


def loss_threshold_attack(model: nn.Module, members: Dataset, nonmembers: Dataset,
                          balance: bool = True, seed: int = 0) -> dict:
    """Yeom et al.'s attack: score ``-loss``; report ROC AUC, best advantage (TPR - FPR) and losses.

    With ``balance`` the larger of the two sets is subsampled (seeded) to the size of the smaller, so
    the AUC is not driven by class imbalance between members and non-members.
    """
    member_loss = per_example_loss(model, members)
    nonmember_loss = per_example_loss(model, nonmembers)
    if balance:
        rng = np.random.default_rng(seed)
        n = min(len(member_loss), len(nonmember_loss))
        member_loss = rng.choice(member_loss, n, replace=False)
        nonmember_loss = rng.choice(nonmember_loss, n, replace=False)
    truth = np.r_[np.ones(len(member_loss)), np.zeros(len(nonmember_loss))]
    score = -np.r_[member_loss, nonmember_loss]
    fpr, tpr, _ = roc_curve(truth, score)
    return {"auc": float(roc_auc_score(truth, score)), "advantage": float(np.max(tpr - fpr)),
            "fpr": fpr, "tpr": tpr, "member_loss": member_loss, "nonmember_loss": nonmember_loss}
