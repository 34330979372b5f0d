"""The TensorRT backend: the exported ONNX graph built into an engine, run through cuda-python.

TensorRT and cuda-python are optional (the ``gpu`` extra). Neither is imported at module
level: ``tensorrt_available()`` says whether both import and a CUDA device is present, and
``TensorRTBackend`` imports them when it is built. The engine is built once per ONNX file,
precision, batch range, TensorRT version and GPU, and cached next to the ONNX file.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from models.export import INPUT, OUTPUT

OPT_BATCH = 128
WORKSPACE_BYTES = 1 << 30
FP16_AGREEMENT_TOLERANCE = 2e-3  # largest absolute difference in a probability at fp16
_PLAN_MAGIC = b"headrace-trt-plan\n"
_KEY_BYTES = 64  # a sha256 in hex


def _cuda_runtime() -> Any:
    """cuda-python's runtime API: ``cuda.bindings.runtime`` (12.6+), else ``cuda.cudart``."""
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        return importlib.import_module("cuda.cudart")


def _import_stack() -> tuple[Any, Any]:
    """(tensorrt, cuda runtime); ImportError where either is missing."""
    return importlib.import_module("tensorrt"), _cuda_runtime()


def _checked(cudart: Any, result: Any, call: str) -> Any:
    """The value of a cuda-python call, which returns ``(err, value...)``; RuntimeError on error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        _, text = cudart.cudaGetErrorString(err)
        message = text.decode() if isinstance(text, bytes) else str(text)
        raise RuntimeError(f"CUDA call {call} failed: {err!r} ({message})")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def tensorrt_available() -> bool:
    """True where tensorrt and cuda-python import and a CUDA device is present."""
    try:
        _, cudart = _import_stack()
        err, count = cudart.cudaGetDeviceCount()
    except (ImportError, OSError, RuntimeError):
        return False
    return bool(err == cudart.cudaError_t.cudaSuccess and count > 0)


def plan_path(onnx_path: Path, *, fp16: bool) -> Path:
    """Where the engine for ``onnx_path`` is cached: ``<onnx>.plan`` or ``<onnx>.fp16.plan``."""
    suffix = ".fp16.plan" if fp16 else ".plan"
    return onnx_path.with_name(onnx_path.name + suffix)


def plan_key(onnx_bytes: bytes, *, fp16: bool, max_batch: int, trt_version: str, gpu: str) -> str:
    """What an engine depends on: the graph, precision, batch range, TensorRT and the GPU."""
    settings = json.dumps(
        {"fp16": fp16, "max_batch": max_batch, "tensorrt": trt_version, "gpu": gpu},
        sort_keys=True,
    )
    return hashlib.sha256(onnx_bytes + settings.encode()).hexdigest()


def read_cached_plan(path: Path, key: str) -> bytes | None:
    """The cached engine bytes when the file exists and was built for ``key``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    header = len(_PLAN_MAGIC) + _KEY_BYTES
    if not raw.startswith(_PLAN_MAGIC) or raw[len(_PLAN_MAGIC) : header] != key.encode():
        return None
    return raw[header:]


def write_cached_plan(path: Path, key: str, plan: bytes) -> None:
    """Write atomically, so a crash or a concurrent reader never sees half a plan."""
    scratch = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    scratch.write_bytes(_PLAN_MAGIC + key.encode() + plan)
    scratch.replace(path)


def _gpu_identity(cudart: Any) -> str:
    device = _checked(cudart, cudart.cudaGetDevice(), "cudaGetDevice")
    props = _checked(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else props.name
    return f"{name.rstrip(chr(0))} sm_{props.major}{props.minor}"


def _build_plan(trt: Any, logger: Any, onnx_bytes: bytes, *, fp16: bool, max_batch: int) -> bytes:
    builder = trt.Builder(logger)
    major = int(str(trt.__version__).split(".", maxsplit=1)[0])
    # TensorRT 10 networks are always explicit-batch; before 10 the flag had to be asked for.
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX graph: {errors}")
    features = int(network.get_input(0).shape[1])
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    else:
        # TF32 is on by default; it would put fp32 outside AGREEMENT_TOLERANCE.
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    profile.set_shape(
        INPUT, (1, features), (min(OPT_BATCH, max_batch), features), (max_batch, features)
    )
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build an engine from the ONNX graph")
    return bytes(serialized)


class TensorRTBackend:
    """ScoringBackend on a TensorRT engine: one profile for batches 1..max_batch."""

    def __init__(self, onnx_path: Path, *, max_batch: int = 4096, fp16: bool = False) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        try:
            trt, cudart = _import_stack()
        except ImportError as error:
            raise RuntimeError(
                "the TensorRT backend needs tensorrt and cuda-python (the 'gpu' extra)"
            ) from error
        self.name = "tensorrt-fp16" if fp16 else "tensorrt"
        self.plan_path = plan_path(onnx_path, fp16=fp16)
        self.built = False  # True when this instance built the engine instead of loading it
        self._trt = trt
        self._cudart = cudart
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._input_ptr: Any = None
        self._output_ptr: Any = None
        self._stream: Any = None
        self._logger = trt.Logger(trt.Logger.WARNING)
        onnx_bytes = onnx_path.read_bytes()
        key = plan_key(
            onnx_bytes,
            fp16=fp16,
            max_batch=max_batch,
            trt_version=str(trt.__version__),
            gpu=_gpu_identity(cudart),
        )
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._load_or_build(onnx_bytes, key, fp16=fp16)
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise RuntimeError("TensorRT could not create an execution context")
        self._features = int(self._engine.get_tensor_shape(INPUT)[1])
        self._output_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(OUTPUT)))
        if np.dtype(trt.nptype(self._engine.get_tensor_dtype(INPUT))) != np.float32:
            raise RuntimeError(f"the engine's {INPUT!r} input is not float32")
        self._allocate()

    def _load_or_build(self, onnx_bytes: bytes, key: str, *, fp16: bool) -> Any:
        cached = read_cached_plan(self.plan_path, key)
        if cached is not None:
            engine = self._runtime.deserialize_cuda_engine(cached)
            if engine is not None:
                return engine
        plan = _build_plan(
            self._trt, self._logger, onnx_bytes, fp16=fp16, max_batch=self._max_batch
        )
        write_cached_plan(self.plan_path, key, plan)
        self.built = True
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine it just built")
        return engine

    def _allocate(self) -> None:
        cudart = self._cudart
        self._set_batch(self._max_batch)
        largest_output = tuple(self._context.get_tensor_shape(OUTPUT))
        input_bytes = self._max_batch * self._features * np.dtype(np.float32).itemsize
        output_bytes = int(np.prod(largest_output)) * self._output_dtype.itemsize
        try:
            self._stream = _checked(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
            self._input_ptr = _checked(cudart, cudart.cudaMalloc(input_bytes), "cudaMalloc")
            self._output_ptr = _checked(cudart, cudart.cudaMalloc(output_bytes), "cudaMalloc")
        except RuntimeError:
            self.close()
            raise
        if not (
            self._context.set_tensor_address(INPUT, int(self._input_ptr))
            and self._context.set_tensor_address(OUTPUT, int(self._output_ptr))
        ):
            self.close()
            raise RuntimeError("TensorRT refused the device buffer addresses")

    def _set_batch(self, batch: int) -> None:
        if not self._context.set_input_shape(INPUT, (batch, self._features)):
            raise RuntimeError(f"TensorRT refused input shape ({batch}, {self._features})")

    def member_probs(self, features: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self._features:
            raise ValueError(f"expected features of shape (batch, {self._features}), got {x.shape}")
        if len(x) <= self._max_batch:
            return self._run(x)
        chunks = [self._run(x[i : i + self._max_batch]) for i in range(0, len(x), self._max_batch)]
        return np.concatenate(chunks, axis=1)

    def _run(self, x: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        with self._lock:
            if self._stream is None:
                raise RuntimeError("the TensorRT backend is closed")
            self._set_batch(len(x))
            shape = tuple(int(d) for d in self._context.get_tensor_shape(OUTPUT))
            out = np.empty(shape, dtype=self._output_dtype)
            to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            to_host = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            _checked(
                cudart,
                cudart.cudaMemcpyAsync(
                    self._input_ptr, x.ctypes.data, x.nbytes, to_device, self._stream
                ),
                "cudaMemcpyAsync(host to device)",
            )
            if not self._context.execute_async_v3(int(self._stream)):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            _checked(
                cudart,
                cudart.cudaMemcpyAsync(
                    out.ctypes.data, self._output_ptr, out.nbytes, to_host, self._stream
                ),
                "cudaMemcpyAsync(device to host)",
            )
            _checked(cudart, cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return out.astype(np.float64)

    def close(self) -> None:
        """Free the device buffers and the stream; safe to call twice."""
        cudart = self._cudart
        for pointer in (self._input_ptr, self._output_ptr):
            if pointer is not None:
                _checked(cudart, cudart.cudaFree(pointer), "cudaFree")
        self._input_ptr = self._output_ptr = None
        if self._stream is not None:
            _checked(cudart, cudart.cudaStreamDestroy(self._stream), "cudaStreamDestroy")
            self._stream = None
