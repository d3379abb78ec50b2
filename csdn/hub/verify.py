"""Nothing is loaded before it is verified: the file's SHA-256 (against the registry, or the hash
the Hub's cache names it by), a full parse of the safetensors header (which catches truncation),
the config in its metadata (checked against a ``config.json`` beside it), and a strict name,
shape and dtype match against the model that config describes. A failure names the file, what
is wrong, and how to get a good copy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from csdn.config import CSDNConfig
from csdn.errors import IntegrityError, WeightsError
from csdn.hub.statedict import mismatch_report, nonfinite_tensor
from csdn.io.pretrained import CONFIG_METADATA_KEY, CONFIG_NAME, WEIGHTS_SHA256_KEY
from csdn.io.safetensors import FLOAT_DTYPES, InvalidSafetensors, TensorInfo, parse_header
from csdn.model.network import CSDN
from csdn.system.fileio import sha256_file


@dataclass(frozen=True)
class WeightsFile:
    """A located weights file and what is known about it, for verification and error messages."""

    path: Path
    fix: str  # how to get a good copy; ends every error about this file
    sha256: str | None = None  # expected content hash
    sha256_source: str = ""  # who expects it
    config_json: Path | None = None  # a config.json that must agree with the metadata
    # called with the file's actual SHA-256 when it is not the expected one; says what it did about the
    # file (a corrupted cache copy removed), which then replaces ``fix``, or None
    on_mismatch: Callable[[str], str | None] | None = None

    def error(self, problem: str, fix: str | None = None) -> WeightsError:
        return WeightsError(f"{self.path}: {problem}. It was not loaded. {fix or self.fix}")


def _parse_config(text: str, where: str, weights: WeightsFile) -> CSDNConfig:
    try:
        return CSDNConfig.from_json(text)
    except (ValueError, TypeError) as err:
        raise weights.error(f"{where} holds no valid CSDN config ({err})") from err


def _config_of(weights: WeightsFile, metadata: Mapping[str, str]) -> CSDNConfig:
    """The config from the file's metadata, checked against a ``config.json`` beside it."""
    sidecar = weights.config_json if weights.config_json is not None and weights.config_json.is_file() else None
    text = metadata.get(CONFIG_METADATA_KEY)
    if text is None and sidecar is None:
        raise weights.error(
            f"its metadata has no '{CONFIG_METADATA_KEY}' and no {CONFIG_NAME} lies beside it, so the "
            "architecture is unknown (save models with csdn's save_pretrained; convert the authors' "
            "checkpoint with `csdn convert`)"
        )
    config = _parse_config(text, "its metadata", weights) if text is not None else None
    if sidecar is None:
        return config  # type: ignore[return-value]
    other = _parse_config(sidecar.read_text(encoding="utf-8"), str(sidecar), weights)
    if config is None:
        return other
    ours, theirs = config.to_dict(), other.to_dict()
    differ = [key for key in ours if key != "meta" and ours[key] != theirs[key]]
    if differ:
        details = "; ".join(f"{key}: {ours[key]} in the metadata, {theirs[key]} in {CONFIG_NAME}" for key in differ)
        raise weights.error(
            f"{sidecar} disagrees with the config stored in the weights file ({details}); the stored one "
            f"belongs to the tensors, so delete or regenerate {CONFIG_NAME} (save_pretrained writes both)"
        )
    return config


def _check_tensors(weights: WeightsFile, infos: Mapping[str, TensorInfo], expected: Mapping[str, torch.Tensor]) -> None:
    """Every tensor the model needs, nothing else, each with its shape and kind of dtype."""
    missing = sorted(set(expected) - set(infos))
    unexpected = sorted(set(infos) - set(expected))
    wrong = []
    for name in sorted(set(infos) & set(expected)):
        info, tensor = infos[name], expected[name]
        if info.shape != tuple(tensor.shape):
            wrong.append(f"{name}: shape {list(info.shape)} in the file, {list(tensor.shape)} in the model")
        elif (info.dtype in FLOAT_DTYPES) != tensor.is_floating_point():
            wrong.append(f"{name}: dtype {info.dtype} in the file, {tensor.dtype} in the model")
    problems = mismatch_report(missing, unexpected, wrong, noun="tensors")
    if problems:
        raise weights.error("its tensors do not match the architecture its config describes: " + " | ".join(problems))


def _recorded_sha256(weights: WeightsFile) -> str | None:
    """The SHA-256 that save_pretrained recorded in the ``config.json`` beside the file, if any."""
    sidecar = weights.config_json
    if sidecar is None or not sidecar.is_file():
        return None
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8")).get("meta") or {}
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None  # reported, with the file's name, when the config itself is parsed
    recorded = meta.get(WEIGHTS_SHA256_KEY) if isinstance(meta, dict) else None
    return recorded.lower() if isinstance(recorded, str) else None


def verified_config(weights: WeightsFile) -> tuple[CSDNConfig, dict[str, TensorInfo]]:
    """Check the file's hash and header; return its config and declared tensors."""
    if weights.sha256 is not None:
        actual = sha256_file(weights.path)
        if actual != weights.sha256:
            done = weights.on_mismatch(actual) if weights.on_mismatch is not None else None
            raise weights.error(
                f"its SHA-256 is {actual}, but {weights.sha256_source} expects {weights.sha256} "
                "(corrupted, or not the published file)",
                done,
            )
    try:
        metadata, infos = parse_header(weights.path)
    except InvalidSafetensors as err:
        raise weights.error(f"not a valid safetensors file: {err}") from None
    recorded = _recorded_sha256(weights) if weights.sha256 is None else None
    if recorded is not None:
        actual = sha256_file(weights.path)
        if actual != recorded:
            raise IntegrityError(
                f"{weights.path}: this file changed after it was saved: its SHA-256 is {actual}, but "
                f"{weights.config_json} (written with it by save_pretrained) records {recorded} (corrupted "
                f"on disk or in a copy, or edited). It was not loaded. Get a good copy: restore "
                f"{weights.path.name} from a backup, download it again, or save the model again; if you "
                f"replaced the weights on purpose, write them with save_pretrained, which records the new hash"
            )
    return _config_of(weights, metadata), infos


def _check_finite(weights: WeightsFile, state: Mapping[str, torch.Tensor]) -> None:
    """No float tensor may hold NaN or inf."""
    problem = nonfinite_tensor(state)
    if problem:
        raise weights.error(f"{problem} (corrupted, or saved from a diverged training run)")


def load_verified(weights: WeightsFile, device: torch.device) -> CSDN:
    """Verify ``weights`` completely, then build the model and load it (eval mode, on ``device``).

    The config comes from the file, so it is untrusted: the model it describes is first built on
    the ``meta`` device (shapes only, no memory) and its tensors compared with the file's header,
    so a config claiming sizes the file does not hold fails before any real allocation.
    """
    config, infos = verified_config(weights)
    with torch.device("meta"):
        skeleton = CSDN(config)
    _check_tensors(weights, infos, skeleton.state_dict())
    del skeleton
    model = CSDN(config)
    expected = model.state_dict()
    try:
        state = load_file(str(weights.path))
    except (SafetensorError, OSError) as err:
        raise weights.error(f"its tensors cannot be read ({err})") from err
    _check_finite(weights, state)
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    return model.to(device).eval()
