"""The few CUDA runtime calls TensorRT execution needs, through ctypes: no torch, no cuda-python.

A Jetson has ``libcudart`` from JetPack; that is all this needs. ``EDGESMLP_CUDART`` names the library
file when it is not on the loader's path (or, in tests, a stand-in library with the same functions).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

import numpy as np

from edgesmlp.errors import MissingDependencyError, RuntimeFailure

HOST_TO_DEVICE, DEVICE_TO_HOST = 1, 2
CANDIDATES = ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0",
              "/usr/local/cuda/lib64/libcudart.so")


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """The CUDA runtime library, loaded once; a one-line error naming the fix when there is none."""
    explicit = os.environ.get("EDGESMLP_CUDART")
    names = [explicit] if explicit else [*CANDIDATES, ctypes.util.find_library("cudart")]
    for name in filter(None, names):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        return lib
    raise MissingDependencyError("libcudart", "running TensorRT engines",
                                 "run on the Jetson (JetPack ships CUDA), or set EDGESMLP_CUDART to libcudart.so")


def _check(code: int, what: str) -> None:
    if code != 0:
        message = library().cudaGetErrorString(code).decode(errors="replace")
        raise RuntimeFailure(f"CUDA {what} failed: {message} (error {code})")


def device_count() -> int:
    """Visible CUDA devices; 0 when there is no CUDA runtime or no device."""
    try:
        lib = library()
    except MissingDependencyError:
        return 0
    count = ctypes.c_int(0)
    return count.value if lib.cudaGetDeviceCount(ctypes.byref(count)) == 0 else 0


class DeviceBuffer:
    """``nbytes`` of device memory, freed with the object."""

    def __init__(self, nbytes: int):
        self.nbytes, self._ptr = nbytes, ctypes.c_void_p()
        _check(library().cudaMalloc(ctypes.byref(self._ptr), ctypes.c_size_t(max(nbytes, 1))), "cudaMalloc")

    @property
    def ptr(self) -> int:
        return int(self._ptr.value)

    def upload(self, array: np.ndarray, stream: "Stream") -> None:
        array = np.ascontiguousarray(array)
        if array.nbytes > self.nbytes:
            raise ValueError(f"{array.nbytes} bytes do not fit a {self.nbytes}-byte buffer")
        _check(library().cudaMemcpyAsync(self._ptr, array.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(array.nbytes),
                                         HOST_TO_DEVICE, stream.handle), "cudaMemcpyAsync (to device)")

    def download(self, out: np.ndarray, stream: "Stream") -> np.ndarray:
        _check(library().cudaMemcpyAsync(out.ctypes.data_as(ctypes.c_void_p), self._ptr, ctypes.c_size_t(out.nbytes),
                                         DEVICE_TO_HOST, stream.handle), "cudaMemcpyAsync (to host)")
        stream.synchronize()
        return out

    def __del__(self) -> None:
        if getattr(self, "_ptr", None) and self._ptr.value:
            library().cudaFree(self._ptr)
            self._ptr = ctypes.c_void_p()


class Stream:
    def __init__(self):
        self._handle = ctypes.c_void_p()
        _check(library().cudaStreamCreate(ctypes.byref(self._handle)), "cudaStreamCreate")

    @property
    def handle(self) -> ctypes.c_void_p:
        return self._handle

    @property
    def address(self) -> int:
        return int(self._handle.value or 0)

    def synchronize(self) -> None:
        _check(library().cudaStreamSynchronize(self._handle), "cudaStreamSynchronize")


class Event:
    def __init__(self):
        self._handle = ctypes.c_void_p()
        _check(library().cudaEventCreate(ctypes.byref(self._handle)), "cudaEventCreate")

    def record(self, stream: Stream) -> None:
        _check(library().cudaEventRecord(self._handle, stream.handle), "cudaEventRecord")

    def elapsed_ms(self, start: "Event") -> float:
        """Milliseconds from ``start`` to this event (waits for this event)."""
        _check(library().cudaEventSynchronize(self._handle), "cudaEventSynchronize")
        ms = ctypes.c_float()
        _check(library().cudaEventElapsedTime(ctypes.byref(ms), start._handle, self._handle), "cudaEventElapsedTime")
        return float(ms.value)
