"""Scoring backends behind one protocol: ONNX Runtime on CPU, PyTorch on CPU or CUDA.

Every backend takes float32 features (batch, n_features), NaN for missing, and returns
every member's probabilities (members, batch, classes) as float64. The same inputs give
the same outputs within a stated tolerance on every backend (checked by the tests for
each backend that runs on the machine at hand). TensorRT (``models/tensorrt_backend.py``)
comes first where it imports and a CUDA device is present; its fp32 engine is held to the
same tolerance, TF32 off.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort
import torch

from models.export import INPUT
from models.network import Ensemble
from models.tensorrt_backend import TensorRTBackend, tensorrt_available

AGREEMENT_TOLERANCE = 1e-5  # largest absolute difference in a probability


class ScoringBackend(Protocol):
    name: str

    def member_probs(self, features: np.ndarray) -> np.ndarray: ...


class OnnxRuntimeBackend:
    name = "onnxruntime-cpu"

    def __init__(self, onnx_path: Path, *, threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(onnx_path),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )

    def member_probs(self, features: np.ndarray) -> np.ndarray:
        outputs = self._session.run(None, {INPUT: np.ascontiguousarray(features, dtype=np.float32)})
        return np.asarray(outputs[0], dtype=np.float64)


def _own_copy(model: Ensemble, device: torch.device) -> Ensemble:
    """The backend's own copy of the model on its device: ``Module.to`` moves in place, so
    a CPU backend built after a CUDA one from the same model would pull the CUDA one's
    weights back to the CPU, and the train/eval mode is shared state too."""
    return copy.deepcopy(model).to(device)


class TorchBackend:
    def __init__(self, model: Ensemble, *, device: str = "cpu", threads: int | None = None) -> None:
        self.name = f"torch-{device}"
        self._device = torch.device(device)
        self._model = _own_copy(model, self._device).eval()
        if threads is not None and device == "cpu":
            torch.set_num_threads(threads)

    def member_probs(self, features: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.as_tensor(
                np.ascontiguousarray(features, dtype=np.float32), device=self._device
            )
            out = self._model(x)
        probs: np.ndarray = out.to("cpu").numpy().astype(np.float64)
        return probs


def graph_bucket(rows: int, max_batch: int) -> int:
    """The captured batch size a call of ``rows`` rows runs at: the next power of two, at
    most ``max_batch`` (larger calls run in chunks of ``max_batch``)."""
    if rows < 1:
        raise ValueError(f"a batch has at least one row, not {rows}")
    return min(1 << (rows - 1).bit_length(), max_batch)


class CudaGraphBackend:
    """PyTorch on CUDA, each batch replayed from a captured CUDA graph.

    A plain eager call launches every layer's kernels one by one, about a millisecond per
    call whatever the batch (``bench.gpu_check``); a replay launches them as one graph. A
    graph has fixed shapes, so a batch is padded up to its power-of-two bucket (at most
    ``max_batch``, so a dozen graphs at most), captured on first use; the padded rows are
    zeros and are dropped from the output. One call at a time: the static buffers are
    shared.
    """

    name = "torch-cuda-graph"

    def __init__(self, model: Ensemble, *, max_batch: int = 4096) -> None:
        self._model = _own_copy(model, torch.device("cuda")).eval()
        self._max_batch = max_batch
        self._graphs: dict[int, tuple[Any, torch.Tensor, torch.Tensor]] = {}
        self._lock = threading.Lock()

    def _capture(self, bucket: int, features: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
        static_in = torch.zeros(bucket, features, device="cuda")
        stream_type: Any = torch.cuda.Stream  # untyped in torch's stubs
        side = stream_type()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad():
            with torch.cuda.stream(side):  # warm-up off the capture stream, as CUDA asks
                for _ in range(3):
                    self._model(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._model(static_in)
        return graph, static_in, static_out

    def member_probs(self, features: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        with self._lock:
            parts = [
                self._replay(x[start : start + self._max_batch])
                for start in range(0, len(x), self._max_batch)
            ]
        return np.concatenate(parts, axis=1)

    def _replay(self, x: torch.Tensor) -> np.ndarray:
        bucket = graph_bucket(len(x), self._max_batch)
        if bucket not in self._graphs:
            self._graphs[bucket] = self._capture(bucket, x.shape[1])
        graph, static_in, static_out = self._graphs[bucket]
        static_in[: len(x)].copy_(x)
        static_in[len(x) :].zero_()
        graph.replay()
        probs: np.ndarray = static_out[:, : len(x)].to("cpu").numpy().astype(np.float64)
        return probs


class McDropoutBackend:
    """PyTorch with dropout left on: ``samples`` stochastic passes of every member.

    Returns (members * samples, batch, classes), which the uncertainty summary reads as a
    larger ensemble: the mutual information then includes the dropout disagreement. The
    passes are seeded by ``seed`` on every call, so the same batch gives the same output
    (a replay reproduces it). The conformal thresholds were fitted on the deterministic
    ensemble, so coverage is as measured for it; chosen by name only, never by default.
    The train mode and the seeded generator are shared state: one call at a time (the
    explainer calls from a thread of its own).
    """

    def __init__(
        self, model: Ensemble, *, samples: int = 8, seed: int = 0, device: str = "cpu"
    ) -> None:
        if samples < 1:
            raise ValueError(f"samples must be at least 1, not {samples}")
        self.name = f"torch-{device}-mc-dropout"
        self.samples = samples
        self._seed = seed
        self._device = torch.device(device)
        self._model = _own_copy(model, self._device)
        self._lock = threading.Lock()

    def member_probs(self, features: np.ndarray) -> np.ndarray:
        with self._lock:
            return self._member_probs(features)

    def _member_probs(self, features: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.ascontiguousarray(features, dtype=np.float32), device=self._device)
        was_training = self._model.training
        devices = [self._device] if self._device.type == "cuda" else []
        try:
            self._model.train()  # dropout on; the model has no batch statistics to disturb
            with torch.random.fork_rng(devices=devices), torch.inference_mode():
                torch.manual_seed(self._seed)
                passes = [self._model(x) for _ in range(self.samples)]
        finally:
            self._model.train(was_training)
        probs: np.ndarray = torch.cat(passes).to("cpu").numpy().astype(np.float64)
        return probs


def backend_factories(model: Ensemble, onnx_path: Path) -> dict[str, Callable[[], ScoringBackend]]:
    """How to build each backend this machine can run, by name, the preferred one first.

    Nothing is built here: a TensorRT engine takes seconds to build, so only the backend
    chosen is.
    """
    factories: dict[str, Callable[[], ScoringBackend]] = {}
    if tensorrt_available():
        factories["tensorrt"] = lambda: TensorRTBackend(onnx_path)
    if torch.cuda.is_available():  # graphs first: a plain call costs ~1 ms in launches
        factories["torch-cuda-graph"] = lambda: CudaGraphBackend(model)
        factories["torch-cuda"] = lambda: TorchBackend(model, device="cuda")
    factories["onnxruntime-cpu"] = lambda: OnnxRuntimeBackend(onnx_path)
    factories["torch-cpu"] = lambda: TorchBackend(model, device="cpu")
    factories["torch-cpu-mc-dropout"] = lambda: McDropoutBackend(model)
    return factories


def available_backends(model: Ensemble, onnx_path: Path) -> list[ScoringBackend]:
    """Every deterministic backend this machine can run, built, the preferred one first."""
    return [
        build()
        for name, build in backend_factories(model, onnx_path).items()
        if not name.endswith("mc-dropout")
    ]


def choose_backend(
    model: Ensemble, onnx_path: Path, preference: str | None = None
) -> ScoringBackend:
    """The named backend, or the first available: TensorRT, else PyTorch on CUDA replayed
    from CUDA graphs, else ONNX Runtime on CPU."""
    factories = backend_factories(model, onnx_path)
    if preference is None:
        return next(iter(factories.values()))()
    if preference not in factories:
        names = ", ".join(factories)
        raise ValueError(f"backend {preference!r} is not available here; available: {names}")
    return factories[preference]()
