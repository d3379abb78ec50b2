"""The errors a user can fix from their message alone, under one base class.

Each subclass also derives from the built-in error it refines (``ValueError``,
``FileNotFoundError``, ...), so code that caught those keeps working, and the
command line can recognise every one of them without importing the modules
that raise them.
"""

from __future__ import annotations

import contextlib
import contextvars
import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

# setting name (a Python argument or config field) -> the flag of the running `csdn` command that sets it
_CLI_FLAGS: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "csdn_cli_flags", default=types.MappingProxyType({})
)


@contextlib.contextmanager
def cli_flags(flags: Mapping[str, str]) -> Iterator[None]:
    """While a ``csdn`` command runs, messages name its flags (``--ids-per-batch``) instead of Python names."""
    token = _CLI_FLAGS.set(dict(flags))
    try:
        yield
    finally:
        _CLI_FLAGS.reset(token)


def cli_flag(setting: str) -> str | None:
    """The flag that sets ``setting`` in the running ``csdn`` command, or None (Python, or no such flag)."""
    return _CLI_FLAGS.get().get(setting)


def setting_name(setting: str) -> str:
    """How a message should name ``setting`` to the person who set it: the CLI flag, else the Python name."""
    return cli_flag(setting) or setting


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


class RunLogError(CSDNError, ValueError):
    """A training run's ``log.jsonl`` damaged before its last line (a torn last line is dropped instead)."""


class AmbiguousResultError(CSDNError, ValueError):
    """One figure asked of an evaluation that holds several search directions."""


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


class HubTimeoutError(HubError, WeightsNotAvailableError, TimeoutError):
    """A Hub call that did not finish within its deadline (``timeout=`` or ``CSDN_HUB_TIMEOUT``).

    A :class:`HubError` like every failed Hub call, and a :class:`WeightsNotAvailableError`
    because a download that timed out leaves the weights unavailable.
    """


class SettingError(CSDNError, ValueError):
    """A setting (a config field or a keyword option) outside the values it can take."""


class ImageTensorError(CSDNError, ValueError):
    """Preprocessed image tensors of the wrong size, of mixed sizes, or holding NaN/infinite values."""


class NonFiniteEmbeddingError(CSDNError, ValueError):
    """Embeddings that came out NaN or infinite from finite images (huge input values, or corrupted weights)."""


class UnsupportedInputError(CSDNError, TypeError):
    """An input of a type that cannot be read as an image."""


class DistributedError(CSDNError, RuntimeError):
    """A torchrun world whose ranks see different inputs, or of which a rank failed (the message names it)."""


class SkippedImagesWarning(UserWarning):
    """Images ``on_error="skip"`` left out of a result; ``.skipped`` lists each with its reason."""

    def __init__(self, skipped: list):
        self.skipped = list(skipped)
        super().__init__(f"skipped {len(self.skipped)} image(s) that could not be read:\n{describe_skipped(skipped)}")


def describe_skipped(skipped: Sequence[Any]) -> str:
    """One indented line per skipped image (objects with ``.source`` and ``.reason``)."""
    return "\n".join(f"  {item.source}: {item.reason}" for item in skipped)


class MissingDependencyError(CSDNError, ImportError):
    """An optional dependency (an extra such as ``csdn-reid[onnx]``) that is not installed."""


class ArtifactError(CSDNError, ValueError):
    """An exported model whose files, metadata or verification do not hold up: altered, incomplete, or not exact."""


class ExportError(CSDNError, ValueError):
    """A model or setting the exporter cannot express (an unsupported opset, precision or config)."""


def list_positions(positions: list[int], shown: int = 10) -> str:
    """``"3, 7, 9"``, or the first ``shown`` and ``", ..."``: image positions for a message."""
    return ", ".join(map(str, positions[:shown])) + (", ..." if len(positions) > shown else "")
