"""The only module that imports onnxruntime: execution providers, threads, clear errors.

onnxruntime-gpu on a machine without usable CUDA libraries silently falls back to the CPU provider
and logs an ERROR and a WARNING per session. We silence ONNX Runtime's own logging, read
``get_providers()`` after creation to learn what really runs, and say so in one line of our own.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from avatarlink.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "tensorrt")

_PROVIDER_BY_DEVICE = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}

CUDA_HINT = (
    "install the CUDA 13 and cuDNN 9 runtime libraries that onnxruntime-gpu needs "
    "(e.g. pip install 'onnxruntime-gpu[cuda,cudnn]') and check `nvidia-smi`, "
    "or run with --device cpu"
)

_ORT_QUIET = 3  # ONNX Runtime log severity: 3 = errors only from our own calls


def default_threads() -> int:
    """Intra-op threads: all cores but one, so capture and sending keep a core (at least 1)."""
    return max(1, (os.cpu_count() or 2) - 1)


@dataclass(frozen=True)
class SessionOptions:
    """How to run a model.

    Attributes:
        device: ``auto`` (TensorRT -> CUDA -> CPU, whichever really loads), ``cpu``, ``cuda`` or
            ``tensorrt`` (fail with a clear message when the provider cannot run).
        threads: intra-op CPU threads; ``None`` means :func:`default_threads`.
    """

    device: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape (``None`` for dynamic axes) and numpy dtype of a model input or output."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype[Any]


_ORT_TYPES: dict[str, np.dtype[Any]] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
}


def restore_hint(path: Path) -> str:
    """How a user gets a model file back."""
    return (
        f"restore it with `git checkout -- models/{path.name}` in the avatarlink checkout "
        f"(or rebuild it: python models/build.py --only {path.stem})"
    )


_PROVIDER_LIBRARY = {
    "CUDAExecutionProvider": "onnxruntime_providers_cuda",
    "TensorrtExecutionProvider": "onnxruntime_providers_tensorrt",
}


@contextlib.contextmanager
def _quiet_native_output() -> Iterator[list[str]]:
    """Capture what native code (and onnxruntime's own prints) write to fds 1 and 2.

    ONNX Runtime reports a missing CUDA/TensorRT library on the raw file descriptors, bypassing
    its log level; we keep the console clean and log the text at debug level instead.
    """
    captured: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace").strip()
            if text:
                captured.append(text)
                log.debug("onnxruntime said: %s", text)


def _provider_loads(ort: Any, provider: str) -> bool:
    """Whether a GPU provider's shared library and its CUDA dependencies can be loaded here."""
    library = _PROVIDER_LIBRARY.get(provider)
    if library is None:
        return True
    capi = Path(ort.__file__).parent / "capi"
    path = capi / (f"{library}.dll" if os.name == "nt" else f"lib{library}.so")
    if not path.exists():
        return False
    try:
        ctypes.CDLL(str(path))
    except OSError as exc:
        log.debug("%s cannot load: %s", provider, exc)
        return False
    return True


def _requested_providers(ort: Any, device: str) -> list[str]:
    """Providers to ask for, in order; GPU ones only when their libraries really load."""
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    if device != "auto":
        gpu = [_PROVIDER_BY_DEVICE[device]]
        if gpu[0] not in available:
            raise ModelError(
                f"--device {device}: this onnxruntime build has no {gpu[0]} (available: "
                f"{', '.join(available)}); install onnxruntime-gpu, or use --device auto"
            )
    gpu = [p for p in gpu if p in available]
    if gpu and hasattr(ort, "preload_dlls"):
        with _quiet_native_output():  # CUDA/cuDNN from pip packages, when installed
            ort.preload_dlls()
    usable = [p for p in gpu if _provider_loads(ort, p)]
    if device != "auto" and not usable:
        raise ModelError(
            f"--device {device} requested but {gpu[0]} cannot load its libraries; {CUDA_HINT}; "
            "or use --device auto to fall back to the CPU"
        )
    return [*usable, "CPUExecutionProvider"]


class InferenceSession:
    """An ONNX Runtime session with known providers and introspected inputs/outputs.

    Args:
        path: the .onnx file.
        options: device and thread choice.
    """

    def __init__(self, path: Path, options: SessionOptions | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.options = options or SessionOptions()
        if not self.path.is_file():
            raise ModelError(f"model file not found: {self.path}; {restore_hint(self.path)}")
        ort.set_default_logger_severity(_ORT_QUIET)
        so = ort.SessionOptions()
        so.log_severity_level = _ORT_QUIET
        so.intra_op_num_threads = self.options.threads or default_threads()
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        requested = _requested_providers(ort, self.options.device)
        try:
            with _quiet_native_output():
                self._session = ort.InferenceSession(str(self.path), so, providers=requested)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise ModelError(
                f"model file {self.path} could not be loaded ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]}); it may be corrupt: {restore_hint(self.path)}"
            ) from exc
        self.providers: tuple[str, ...] = tuple(self._session.get_providers())
        self._check_device(requested)
        self.inputs = tuple(_info(i) for i in self._session.get_inputs())
        self.outputs = tuple(_info(o) for o in self._session.get_outputs())
        self.output_names = tuple(o.name for o in self.outputs)

    def _check_device(self, requested: list[str]) -> None:
        device = self.options.device
        if device in ("cuda", "tensorrt"):
            wanted = _PROVIDER_BY_DEVICE[device]
            if wanted not in self.providers:
                raise ModelError(
                    f"--device {device} requested but {wanted} could not start for "
                    f"{self.path.name}; {CUDA_HINT}; or use --device auto to fall back to the CPU"
                )
        elif device == "auto" and self.providers[0] == "CPUExecutionProvider":
            log.info(
                "no usable GPU provider; running %s on the CPU (%s)", self.path.name, CUDA_HINT
            )

    @property
    def provider(self) -> str:
        """The provider that runs the model, e.g. ``CPUExecutionProvider``."""
        return self.providers[0]

    @property
    def raw(self) -> Any:
        """The underlying ``onnxruntime.InferenceSession`` (for IO binding)."""
        return self._session

    def run(
        self, feeds: dict[str, npt.NDArray[Any]], outputs: tuple[str, ...] | None = None
    ) -> dict[str, npt.NDArray[Any]]:
        """Run the model; returns a dict output name -> array."""
        names = list(outputs or self.output_names)
        results = self._session.run(names, feeds)
        return dict(zip(names, results, strict=True))


def _info(arg: Any) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None:
        raise ModelError(f"unsupported tensor type {arg.type} for {arg.name}")
    return TensorInfo(arg.name, shape, dtype)
