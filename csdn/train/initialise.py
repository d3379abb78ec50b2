"""The model a training run starts from: CLIP weights, a tiny random model, or an existing CSDN."""

from __future__ import annotations

import os
from pathlib import Path

from csdn.config import CSDNConfig
from csdn.errors import WeightsNotAvailableError, cli_flag, setting_name
from csdn.model.network import CSDN

Init = str | os.PathLike | CSDN | None


def _is_csdn_file(path: Path) -> bool:
    """A saved CSDN model (``save_pretrained`` folder or its safetensors file), not CLIP weights."""
    if path.is_dir():
        return True
    if path.suffix != ".safetensors":
        return False
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return any(key.startswith("trunk.") for key in handle.keys())
    except SafetensorError:  # unreadable: the CLIP reader names the file and what is wrong with it
        return False


def initial_model(
    init: Init, num_classes: int, *, image_size: tuple[int, int] | None = None, progress: bool = True
) -> CSDN:
    """Build the starting model for a training set with ``num_classes`` identities.

    ``init``: ``"RN50"`` (OpenAI CLIP, downloaded and verified) or a local CLIP
    weight file; ``"tiny"`` for a small random model (tests, demos); a
    :class:`CSDN` instance (trained in place) or the path of a saved CSDN model.
    """
    if isinstance(init, CSDN):
        model = init
    elif init is not None and str(init).lower() == "tiny":
        overrides = {"image_size": image_size} if image_size else {}
        return CSDN(CSDNConfig.tiny(num_classes=num_classes, **overrides))
    elif init is not None and Path(init).exists() and _is_csdn_file(Path(init)):
        from csdn.hub.api import load

        model = load(str(init))
    else:
        from csdn.hub.clip import from_clip

        weights = "RN50" if init is None or str(init).upper() == "RN50" else init
        try:
            return from_clip(
                os.fspath(weights), num_classes=num_classes, image_size=image_size or (288, 144), progress=progress
            )
        except (WeightsNotAvailableError, OSError) as err:  # not downloadable here, or no such file
            raise WeightsNotAvailableError(f"{err}; {ways_to_initialise()}") from err
    if model.config.num_classes != num_classes:
        raise ValueError(
            f"the initial model classifies {model.config.num_classes} identities but the training set has "
            f"{num_classes}; start from CLIP weights ({_naming('init', 'RN50')}) or a model trained on the same "
            "identities"
        )
    if image_size and tuple(image_size) != tuple(model.config.image_size):
        raise ValueError(
            f"{setting_name('image_size')} {tuple(image_size)} differs from the initial model's "
            f"{model.config.image_size}"
        )
    return model


def ways_to_initialise() -> str:
    """Every way to start training, for an error that could not start it the default way (one line)."""
    return (
        f"ways to initialise: {_naming('init', '/path/to/RN50.pt')} (OpenAI's CLIP file, downloaded elsewhere), "
        f"{_naming('init', '/path/to/model.safetensors')} (an open_clip or timm CLIP RN50), "
        f"HF_HUB_OFFLINE=1 with a Hugging Face cache that already holds RN50, "
        f"or {_naming('init', 'tiny')} (a small random model: a smoke test, no download)"
    )


def _naming(setting: str, value: str) -> str:
    """``--init RN50`` on the command line, ``init='RN50'`` in Python."""
    flag = cli_flag(setting)
    return f"{flag} {value}" if flag else f"{setting}={value!r}"
