"""Reading a PyTorch ``.pt``/``.pth`` file safely (tensors and plain data only), and saying in one line why
one cannot be read.

``torch.load(weights_only=True)`` refuses every pickled object that is not a tensor or a plain
container, which is what keeps a checkpoint from running code; but its error spans several
lines and suggests ``weights_only=False``, the one thing not to do with a file of unknown origin.
Here the refusal is explained from the file itself: the Python objects its pickle names
(found by reading the pickle's opcodes, never by running them), or that it is a TorchScript
program, or that it is no checkpoint at all.
"""

from __future__ import annotations

import io
import os
import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import torch

from csdn.errors import CheckpointError

TORCH_FILE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")  # names PyTorch checkpoints are saved under


def has_torch_file_suffix(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named like a PyTorch checkpoint (any case), e.g. ``model_119.pth``."""
    return Path(path).suffix.lower() in TORCH_FILE_SUFFIXES


# modules whose objects a tensor checkpoint is made of (torch's safe loader accepts these)
_TENSOR_MODULES = ("torch", "collections", "_codecs")
_STRING_PUSHES = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_MEMO_GETS = {"BINGET", "LONG_BINGET", "GET"}
_MAX_PICKLES = 8  # a legacy (non-zip) torch file is a few pickles followed by raw tensor bytes


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive (``torch.jit.save``): a zip holding compiled code, not only pickled tensors."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def _names_in(stream: BinaryIO) -> list[str]:
    """The ``module.name`` objects that the pickles in ``stream`` would import (what unpickling would call)."""
    names: list[str] = []
    for _ in range(_MAX_PICKLES):
        pushed: list[Any] = []  # the values pushed so far, enough to resolve STACK_GLOBAL's two strings
        memo: dict[int, Any] = {}
        try:
            for opcode, found, _position in pickletools.genops(stream):
                arg: Any = found
                if opcode.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL":
                    module, name = pushed[-2:] if len(pushed) >= 2 else (None, None)
                    names.append(f"{module}.{name}" if isinstance(module, str) and isinstance(name, str) else "?")
                elif opcode.name == "MEMOIZE":
                    memo[len(memo)] = pushed[-1] if pushed else None
                elif opcode.name in ("BINPUT", "LONG_BINPUT", "PUT"):
                    memo[int(arg)] = pushed[-1] if pushed else None
                elif opcode.name in _MEMO_GETS:
                    pushed.append(memo.get(int(arg)))
                elif opcode.name in _STRING_PUSHES:
                    pushed.append(arg.decode("latin-1") if isinstance(arg, bytes) else str(arg))
                elif opcode.stack_after:
                    pushed.append(None)
        except Exception:  # noqa: BLE001 - not (or no more) pickle data: raw tensor bytes, or another kind of file
            break
        if not stream.read(1):
            break
        stream.seek(-1, io.SEEK_CUR)
    return names


def foreign_objects(path: Path) -> list[str]:
    """The objects other than tensors and containers that the pickle of the ``torch.save`` file ``path`` names."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                found = []
                for member in archive.namelist():
                    if member.endswith("data.pkl"):
                        with archive.open(member) as data:
                            found += _names_in(io.BytesIO(data.read()))
        else:
            with open(path, "rb") as handle:
                found = _names_in(handle)
    except (OSError, zipfile.BadZipFile):
        return []
    return sorted({name for name in found if name.split(".")[0] not in _TENSOR_MODULES})


def load_torch_file(path: str | os.PathLike, what: str = "PyTorch checkpoint") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; any failure as one :class:`CheckpointError`.

    ``what`` names what the file should have been (e.g. "csdn training checkpoint").
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    cannot = f"cannot read {path}, it is not a readable {what}"
    if is_torchscript(path):
        raise CheckpointError(
            f"{cannot}: it is a TorchScript archive (a compiled program saved with torch.jit.save); save the "
            "weights with torch.save(model.state_dict(), path) and pass that file"
        )
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not the user's business
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch errors all mean "not a readable checkpoint"
        refused = foreign_objects(path)
        if refused:
            shown = ", ".join(refused[:5]) + (", ..." if len(refused) > 5 else "")
            raise CheckpointError(
                f"{cannot}: it holds Python code objects besides tensors ({shown}), which are refused for safety "
                "(loading them would run their code); if you trust the file, load it yourself and save only its "
                "tensors with torch.save(state_dict, path)"
            ) from None
        how = "it ends early" if isinstance(err, EOFError) else f"{type(err).__name__} from torch.load"
        raise CheckpointError(
            f"{cannot} ({how}); if it was copied or downloaded, it may be truncated or damaged: download it again"
        ) from err
