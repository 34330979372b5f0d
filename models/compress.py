"""Smaller, faster models for the same features: int8 weights, and a distilled student.

``quantize_int8`` rewrites an exported ensemble graph with ONNX Runtime's dynamic
quantization: weights stored as int8, activations quantized per batch at run time. The
TorchScript exporter writes every ``nn.Linear`` as a ``Gemm``, which dynamic quantization
leaves alone (its integer-op registry covers ``MatMul`` but not ``Gemm``), so each such
``Gemm`` is first rewritten as ``MatMul`` + ``Add``; the arithmetic is the same.

The weight type is ``QInt8``: on x86 CPUs ONNX Runtime runs ``MatMulInteger`` with uint8
activations and int8 weights (U8S8) on its fast kernels and recommends that pairing for
dynamic quantization; ``QInt8`` loads and runs on the CPU provider here, so ``QUInt8`` is
not needed.

``Student`` is a single MLP trained to reproduce the ensemble's mean probabilities (soft
targets, KL divergence from the ensemble's distribution) on unlabelled features. Its ONNX
graph has the ensemble's input and output names and a leading member axis of one, so the
ONNX Runtime backend serves it unchanged as a one-member ensemble.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import nn

from models.export import export_onnx
from models.network import Ensemble

STUDENT_BATCH_SIZE = 256
STUDENT_LEARNING_RATE = 3e-3


def file_size(path: Path) -> int:
    return path.stat().st_size


def _plain_gemm(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> bool:
    """A Gemm that is exactly ``A @ B.T + C`` with B a 2-D constant: what Linear exports."""
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return (
        node.op_type == "Gemm"
        and attributes.get("alpha", 1.0) == 1.0
        and attributes.get("beta", 1.0) == 1.0
        and attributes.get("transA", 0) == 0
        and attributes.get("transB", 0) == 1
        and node.input[1] in constants
        and constants[node.input[1]].ndim == 2
    )


def gemm_to_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite each ``Gemm`` of a Linear layer as ``MatMul`` by a transposed weight + ``Add``."""
    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if not _plain_gemm(node, constants):
            nodes.append(node)
            continue
        weight_name = f"{node.input[1]}_transposed"
        graph.initializer.append(
            numpy_helper.from_array(np.ascontiguousarray(constants[node.input[1]].T), weight_name)
        )
        product = f"{node.output[0]}_matmul" if len(node.input) > 2 else node.output[0]
        nodes.append(
            onnx.helper.make_node(
                "MatMul", [node.input[0], weight_name], [product], name=f"{node.name}_MatMul"
            )
        )
        if len(node.input) > 2 and node.input[2]:
            nodes.append(
                onnx.helper.make_node(
                    "Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_Add"
                )
            )
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    onnx.checker.check_model(model)
    return model


def compact_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Short names for every internal tensor and node; the graph's inputs and outputs keep
    theirs. Quantization adds a handful of nodes per layer, each repeating long derived
    names, which in a small MLP can outweigh what int8 weights save."""
    graph = model.graph
    keep = {value.name for value in graph.input} | {value.name for value in graph.output}
    renamed: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return renamed.setdefault(name, f"t{len(renamed)}")

    for init in graph.initializer:
        init.name = short(init.name)
    for index, node in enumerate(graph.node):
        node.name = f"n{index}"
        node.doc_string = ""
        for position, name in enumerate(node.input):
            node.input[position] = short(name)
        for position, name in enumerate(node.output):
            node.output[position] = short(name)
    del graph.value_info[:]
    onnx.checker.check_model(model)
    return model


def quantize_int8(onnx_path: Path, out_path: Path) -> Path:
    """Dynamic int8 quantization of an exported graph; same inputs and outputs.

    Weights are quantized per output channel to 7 bits (``reduce_range``): x86 CPUs
    without VNNI multiply u8 by s8 with 16-bit intermediate sums that saturate at full
    range. Measured on an AMD EPYC without VNNI (the unit test's ensemble, 500 rows):
    the largest error in mean probability was 0.059 with 8-bit per-tensor weights,
    0.016 with these settings."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    rewritten = gemm_to_matmul(onnx.load(str(onnx_path)))
    quantize_dynamic(
        rewritten, out_path, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True
    )
    onnx.save(compact_names(onnx.load(str(out_path))), str(out_path))
    return out_path


class Student(nn.Module):
    """One MLP behind the ensemble's standardisation; forward gives (1, batch, classes)."""

    def __init__(self, inputs: int, *, hidden: int = 32, classes: int = 2) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(inputs, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, classes),
        )
        self.mean: torch.Tensor
        self.scale: torch.Tensor
        self.register_buffer("mean", torch.zeros(inputs))
        self.register_buffer("scale", torch.ones(inputs))

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) / self.scale
        return torch.where(torch.isnan(z), torch.zeros_like(z), z)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layers(self.standardise(x))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=-1).unsqueeze(0)


def ensemble_mean_probabilities(ensemble: Ensemble, x: np.ndarray) -> np.ndarray:
    """(n, classes) float32: the ensemble's mean over members, dropout off."""
    ensemble.eval()
    with torch.no_grad():
        out = ensemble(torch.as_tensor(x, dtype=torch.float32)).mean(dim=0)
    probs: np.ndarray = out.numpy()
    return probs


def student_probabilities(student: Student, x: np.ndarray) -> np.ndarray:
    """(1, n, classes) float64 from the PyTorch student: the backends' shape."""
    student.eval()
    with torch.no_grad():
        out = student(torch.as_tensor(x, dtype=torch.float32))
    probs: np.ndarray = out.numpy().astype(np.float64)
    return probs


def distill_student(
    ensemble: Ensemble,
    x: np.ndarray,
    *,
    hidden: int = 32,
    epochs: int = 20,
    seed: int = 0,
) -> Student:
    """Fit a student to the ensemble's mean probabilities on unlabelled features ``x``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    inputs = torch.as_tensor(x, dtype=torch.float32)
    targets = torch.as_tensor(ensemble_mean_probabilities(ensemble, x))
    student = Student(x.shape[1], hidden=hidden, classes=targets.shape[1])
    student.mean.copy_(ensemble.mean)
    student.scale.copy_(ensemble.scale)
    optimiser = torch.optim.Adam(student.parameters(), lr=STUDENT_LEARNING_RATE)
    loss_fn = nn.KLDivLoss(reduction="batchmean")
    student.train()
    for _ in range(epochs):
        order = torch.as_tensor(rng.permutation(len(x)))
        for start in range(0, len(order), STUDENT_BATCH_SIZE):
            batch = order[start : start + STUDENT_BATCH_SIZE]
            optimiser.zero_grad()
            log_probs = torch.log_softmax(student.logits(inputs[batch]), dim=-1)
            loss = loss_fn(log_probs, targets[batch])
            loss.backward()
            optimiser.step()
    student.eval()
    return student


def export_student_onnx(student: Student, path: Path, n_features: int) -> Path:
    """The student as a one-member ensemble graph: ``features`` -> ``member_probs`` (1, b, c)."""
    return export_onnx(student, path, n_features)
