"""ONNX export: one graph, input ``features`` (batch, n_features) float32 with NaN for a
missing value, output ``member_probs`` (members, batch, classes): every member in one call."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

ONNX_FILE_NAME = "model.onnx"
INPUT = "features"
OUTPUT = "member_probs"
OPSET = 17


def export_onnx(model: torch.nn.Module, path: Path, n_features: int) -> Path:
    """``model`` (an ``Ensemble``, or any module that maps a batch to
    ``(members, batch, classes)``) as the graph above, at ``path``."""
    model.eval()
    example = torch.zeros(2, n_features, dtype=torch.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript exporter is the one that needs no extra package (the dynamo
        # exporter needs onnxscript); torch announces its retirement on every call.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {1: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return path
