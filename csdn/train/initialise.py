"""The model a training run starts from: CLIP weights, a tiny random model, or an existing CSDN."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from csdn.errors import WeightsNotAvailableError, cli_flag, setting_name
from csdn.hub.architectures import ARCHITECTURES
from csdn.io.pretrained import CONFIG_METADATA_KEY, CONFIG_NAME
from csdn.io.safetensors import InvalidSafetensors, parse_header
from csdn.model.network import CSDN

Init = str | os.PathLike | CSDN | None
TINY = "tiny"  # short for the csdn_tiny architecture


def _is_csdn_file(path: Path) -> bool:
    """A saved csdn model (a ``save_pretrained`` folder, or a safetensors file whose metadata holds its
    config, as the format writes it), not CLIP weights: told by the format's own record, not by tensor names."""
    if path.is_dir():
        return True  # CLIP weights are one file; load() names what a folder lacks
    if path.suffix != ".safetensors":
        return False
    try:
        metadata, _ = parse_header(path)
    except InvalidSafetensors:
        return False  # reported as CLIP weights that cannot be read, naming the file
    return CONFIG_METADATA_KEY in metadata or path.with_name(CONFIG_NAME).is_file()


def _architecture(init: Init) -> str | None:
    """The architecture ``init`` names for a random start (``"tiny"``, ``"csdn_tiny"``, ...), if it names one."""
    if not isinstance(init, str) or Path(init).exists():
        return None
    name = "csdn_tiny" if init.lower() == TINY else init
    return name if name in ARCHITECTURES else None


def initial_model(
    init: Init, num_classes: int, *, image_size: tuple[int, int] | None = None, progress: bool = True
) -> CSDN:
    """Build the starting model for a training set with ``num_classes`` identities.

    ``init``: ``"RN50"`` (OpenAI CLIP, downloaded and verified) or a local CLIP
    weight file; ``"tiny"`` (or any architecture name, e.g. ``"csdn_tiny"``) for a random
    model of that preset (tests, demos); a model instance (trained in place) or the path of a
    saved csdn model.
    """
    architecture = _architecture(init)
    if isinstance(init, CSDN):
        model = init
    elif architecture is not None:
        from csdn.hub.factory import create_model

        overrides: dict[str, Any] = {"image_size": image_size} if image_size else {}
        return create_model(architecture, num_classes=num_classes, **overrides)
    elif init is not None and Path(init).exists() and _is_csdn_file(Path(init)):
        from csdn.hub.loading import load

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
