"""The default model family for tabular features: an ensemble of small MLPs with dropout.

Every member sees the same standardised inputs; a missing feature (NaN) becomes the
training mean, i.e. zero after standardisation. The forward pass returns every member's
probabilities at once, shape (members, batch, classes), with the fitted temperature
applied to the logits, so one exported graph serves the whole ensemble.
"""

from __future__ import annotations

import torch
from torch import nn


class MemberMLP(nn.Module):
    def __init__(self, inputs: int, hidden: int, classes: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(inputs, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.layers(x)
        return logits


class Ensemble(nn.Module):
    """K members behind one input standardisation and one temperature."""

    def __init__(
        self,
        inputs: int,
        *,
        members: int = 5,
        hidden: int = 64,
        classes: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.members = nn.ModuleList(
            MemberMLP(inputs, hidden, classes, dropout) for _ in range(members)
        )
        self.mean: torch.Tensor
        self.scale: torch.Tensor
        self.temperature: torch.Tensor
        self.register_buffer("mean", torch.zeros(inputs))
        self.register_buffer("scale", torch.ones(inputs))
        self.register_buffer("temperature", torch.ones(()))

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) / self.scale
        return torch.where(torch.isnan(z), torch.zeros_like(z), z)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        z = self.standardise(x)
        return torch.stack([member(z) for member in self.members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.member_logits(x) / self.temperature
        return torch.softmax(logits, dim=-1)
