"""The errors a user can fix from their message alone, under one base class.

Each subclass also derives from the built-in error it refines (``ValueError``,
``FileNotFoundError``, ...), so code that caught those keeps working, and the
command line can recognise every one of them without importing the modules
that raise them.
"""

from __future__ import annotations


class CSDNError(Exception):
    """Base of every csdn error whose message names the problem and the fix."""


class ImageDecodeError(CSDNError, ValueError):
    """An input that cannot be turned into an RGB image."""


class WeightsError(CSDNError, ValueError):
    """A weights file that is corrupted, truncated, or does not fit the model its config describes."""


class WeightsNotAvailableError(CSDNError, FileNotFoundError):
    """Weights that cannot be obtained: not published, not cached while offline, or not on the Hub."""


class CLIPWeightsError(CSDNError, RuntimeError):
    """CLIP weights that are missing, corrupted or of the wrong architecture."""


class CheckpointError(CSDNError, ValueError):
    """A checkpoint that is not the authors' CSDN format, or does not fit the model."""


class DatasetLayoutError(CSDNError, ValueError):
    """A dataset folder that does not have the layout its reader expects."""


class DeviceError(CSDNError, ValueError):
    """A torch device that this torch build or this machine does not have."""


class EmbeddingsFileError(CSDNError, ValueError):
    """An embeddings file (``.npy`` / ``.safetensors`` and its manifest) that is malformed or inconsistent."""


class DiskFullError(CSDNError, OSError):
    """An output that could not be written because its disk (or the user's quota) is full."""


class OutputExistsError(CSDNError, FileExistsError):
    """An output file or folder that already exists and was not asked to be replaced."""


class IntegrityError(WeightsError):
    """A weights file whose content differs from the SHA-256 recorded when it was saved."""


class HubError(CSDNError, OSError):
    """A Hugging Face Hub call (an upload, a query) that failed: offline, refused, server error, timed out."""


class HubTimeoutError(WeightsNotAvailableError, TimeoutError):
    """A Hub call that did not finish within its deadline (``timeout=`` or ``CSDN_HUB_TIMEOUT``)."""


class SettingError(CSDNError, ValueError):
    """A setting (a config field or a keyword option) outside the values it can take."""


class ImageTensorError(CSDNError, ValueError):
    """Preprocessed image tensors of the wrong size, of mixed sizes, or holding NaN/infinite values."""


class UnsupportedInputError(CSDNError, TypeError):
    """An input of a type that cannot be read as an image."""


class MissingDependencyError(CSDNError, ImportError):
    """An optional dependency (an extra such as ``csdn-reid[onnx]``) that is not installed."""


class ArtifactError(CSDNError, ValueError):
    """An exported model whose files, metadata or verification do not hold up: altered, incomplete, or not exact."""


class ExportError(CSDNError, ValueError):
    """A model or setting the exporter cannot express (an unsupported opset, precision or config)."""
