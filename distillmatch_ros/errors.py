"""Exceptions raised by the plain-Python API (the node and CLI turn them into diagnostics)."""


class DistillMatchError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(DistillMatchError, ValueError):
    """An image given to the matcher cannot be used (empty, wrong dtype/shape, NaN, ...)."""


class CheckpointError(DistillMatchError, RuntimeError):
    """A model file is missing, truncated, corrupt, or does not match its architecture."""


class BackendUnavailable(DistillMatchError, RuntimeError):
    """The requested inference backend (CUDA, TensorRT, ONNX Runtime) is not usable here."""
