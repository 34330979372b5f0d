"""Training the ensemble: bootstrap resamples, one seed per member, AdamW, a fixed number
of epochs (no early stopping: the validation split is kept for the temperature)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.network import Ensemble


@dataclass(frozen=True)
class TrainingConfig:
    members: int = 5
    hidden: int = 64
    dropout: float = 0.1
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0


def fit_standardisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and scales ignoring NaN; a constant or empty column gets scale 1."""
    present = ~np.isnan(x)
    counts = present.sum(axis=0)
    filled = np.where(present, x, 0.0)
    mean = np.divide(filled.sum(axis=0), counts, out=np.zeros(x.shape[1]), where=counts > 0)
    centred = np.where(present, x - mean, 0.0)
    variance = np.divide(
        (centred**2).sum(axis=0), counts, out=np.ones(x.shape[1]), where=counts > 0
    )
    scale = np.sqrt(variance)
    return mean, np.where(scale > 1e-12, scale, 1.0)


def train_ensemble(
    x: np.ndarray, y: np.ndarray, config: TrainingConfig, classes: int = 2
) -> Ensemble:
    """Train on float features ``x`` (NaN = missing) and integer labels ``y``."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = Ensemble(
        x.shape[1],
        members=config.members,
        hidden=config.hidden,
        classes=classes,
        dropout=config.dropout,
    )
    mean, scale = fit_standardisation(x)
    model.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
    model.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
    inputs = torch.as_tensor(x, dtype=torch.float32)
    targets = torch.as_tensor(y, dtype=torch.long)
    loss_fn = nn.CrossEntropyLoss()
    for member in model.members:
        sample = torch.as_tensor(rng.integers(0, len(x), len(x)))
        member_x, member_y = inputs[sample], targets[sample]
        optimiser = torch.optim.AdamW(
            member.parameters(),
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
        )
        member.train()
        for _ in range(config.epochs):
            order = torch.as_tensor(rng.permutation(len(member_x)))
            for start in range(0, len(order), config.batch_size):
                batch = order[start : start + config.batch_size]
                optimiser.zero_grad()
                loss = loss_fn(member(model.standardise(member_x[batch])), member_y[batch])
                loss.backward()
                optimiser.step()
        member.eval()
    model.eval()
    return model


def member_probabilities(model: Ensemble, x: np.ndarray) -> np.ndarray:
    """(members, n, classes) float64 from the PyTorch model, dropout off."""
    with torch.no_grad():
        out = model(torch.as_tensor(x, dtype=torch.float32))
    probs: np.ndarray = out.numpy().astype(np.float64)
    return probs
