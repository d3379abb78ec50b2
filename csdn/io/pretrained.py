"""The saved-model folder: ``model.safetensors`` (every tensor, and the config in its metadata),
``config.json`` and a ``README.md`` model card, written by a mixin that never names the model.

Any ``nn.Module`` with a ``config`` (:class:`csdn.config.CSDNConfig`) can inherit
:class:`SavePretrainedMixin`; loading, which must build the concrete model, lives in
:mod:`csdn.hub`.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from csdn.config import CSDNConfig
from csdn.io.card import EVALUATION_KEY, evaluation_records, merge_records, render_model_card
from csdn.io.safetensors import write_safetensors
from csdn.system.fileio import atomic_write, atomic_write_text, sha256_file

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
# config.json's meta records the SHA-256 of the model.safetensors written with it (the file's own
# metadata cannot hold its own hash); load verifies it, so a flipped bit in a local copy is refused.
WEIGHTS_SHA256_KEY = "weights_sha256"
MODEL_CARD_NAME = "README.md"
CONFIG_METADATA_KEY = "csdn_config"


def package_version() -> str:
    try:
        return importlib_metadata.version("csdn-reid")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def save_pretrained(
    model: Any,  # an nn.Module with a CSDNConfig as .config
    directory: str | Path,
    *,
    model_card: bool = True,
    extra_meta: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    evaluation: Any = None,
) -> Path:
    """Write ``model.safetensors`` (config in its metadata), ``config.json`` and a ``README.md`` model card.

    Args:
        extra_meta: provenance merged into the saved config's ``meta`` (e.g.
            ``{"dataset": "SYSU-MM01", "metrics": {...}}``); the model itself is not changed.
        repo_id: the Hub repository the model card's usage snippet should name.
        evaluation: ``csdn.evaluate(...)`` results (one or a list) to record in the config
            (``meta["evaluation"]``) and in the card's ``model-index``; a result replaces a
            recorded one of the same dataset, protocol and search direction.

    ``config.json`` (and the card) record the SHA-256 of ``model.safetensors`` as
    ``meta["weights_sha256"]``; loading the folder verifies it.

    Returns the directory. Each file is replaced atomically.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"cannot save into {directory}: it exists and is not a directory")
    config = CSDNConfig.from_dict(model.config.to_dict())
    config.meta.update(extra_meta or {})
    if evaluation is not None:
        recorded = evaluation_records(config.meta.get(EVALUATION_KEY))
        config.meta[EVALUATION_KEY] = merge_records(recorded, evaluation_records(evaluation))
    config.meta.pop(WEIGHTS_SHA256_KEY, None)  # a loaded model's record of its old file; recomputed below
    try:
        config_json = config.to_json()
    except TypeError as err:
        raise ValueError(f"config meta must hold JSON values (numbers, strings, lists, dicts): {err}") from err
    state = model.state_dict()
    directory.mkdir(parents=True, exist_ok=True)  # after every check: a refused call leaves nothing behind
    metadata = {"format": "pt", CONFIG_METADATA_KEY: config_json, "csdn_version": package_version()}
    atomic_write(directory / WEIGHTS_NAME, lambda temp: write_safetensors(temp, state, metadata))
    config.meta[WEIGHTS_SHA256_KEY] = sha256_file(directory / WEIGHTS_NAME)
    atomic_write_text(directory / CONFIG_NAME, config.to_json() + "\n")
    if model_card:
        num_parameters = sum(p.numel() for p in model.parameters())
        atomic_write_text(directory / MODEL_CARD_NAME, render_model_card(config, num_parameters, repo_id=repo_id))
    return directory


class SavePretrainedMixin:
    """``save_pretrained`` for a module that carries its :class:`CSDNConfig` as ``self.config``."""

    def save_pretrained(self, directory: str | Path, **options: Any) -> Path:
        """Write ``model.safetensors``, ``config.json`` and a model card; see :func:`save_pretrained`."""
        return save_pretrained(self, directory, **options)
