"""Where weights come from and the entry points: ``load`` (registry name, ``hf-hub:`` repo or local
path), ``load_config`` and ``push_to_hub``.

A name is located (bundled with the package, downloaded from the Hub into its cache, or
read from disk), verified completely by :mod:`csdn.hub.verified`, and only then built into a
model. The saved-model format itself (``model.safetensors`` with the config in its
metadata, ``config.json``, a model card) is :mod:`csdn.io.pretrained`'s.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from csdn.config import CSDNConfig
from csdn.errors import WeightsError, WeightsNotAvailableError
from csdn.hub.registry import (  # list_models and model_info are part of this module's API (csdn.list_models)
    AUTHORS_RELEASE,
    DEFAULT_MODEL,
    Registry,
    RegistryEntry,
    RegistryLike,
    list_models,
    model_info,
    open_registry,
)
from csdn.hub.transfer import (
    DEFAULT_HUB_TIMEOUT,
    HUB_TIMEOUT_ENV,
    REPO_ID_RULES,
    check_repo_id,
    discard_cached,
    hub_content_hash,
    hub_download,
    hub_timeout,
    upload_folder,
)
from csdn.hub.verified import WeightsFile, load_verified, verified_config
from csdn.io.card import describe_architecture, render_model_card
from csdn.io.pretrained import (
    CONFIG_METADATA_KEY,
    CONFIG_NAME,
    MODEL_CARD_NAME,
    WEIGHTS_NAME,
    register_model_hub,
    save_pretrained,
)
from csdn.io.safetensors import TensorInfo, read_safetensors_header, write_safetensors
from csdn.model.network import CSDN
from csdn.system.device import resolve_device
from csdn.system.fileio import atomic_write
from csdn.system.torchfile import has_torch_file_suffix

__all__ = [
    "load",
    "load_config",
    "load_saved_config",
    "save_pretrained",
    "DEFAULT_MODEL",
    "push_to_hub",
    "upload_folder",
    "list_models",
    "model_info",
    "hub_timeout",
    "DEFAULT_HUB_TIMEOUT",
    "HUB_TIMEOUT_ENV",
    "WeightsError",
    "WeightsNotAvailableError",
    "atomic_write",
    "write_safetensors",
    "read_safetensors_header",
    "render_model_card",
    "describe_architecture",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
    "MODEL_CARD_NAME",
    "CONFIG_METADATA_KEY",
    "TensorInfo",
]

HUB_PREFIX = "hf-hub:"


# ---------------------------------------------------------------------------- locating weights
def _local_weights(
    path: Path, *, fix: str | None = None, sha256: str | None = None, sha256_source: str = ""
) -> WeightsFile:
    """A ``save_pretrained`` folder or a single ``.safetensors`` file on disk."""
    fix = fix or "Re-create it with save_pretrained() or `csdn convert`."
    if path.is_dir():
        file = path / WEIGHTS_NAME
        if not file.is_file():
            inner = path / "model" / WEIGHTS_NAME  # a csdn train run folder keeps its finished model there
            hint = f"; it looks like a training run folder: load its model, {path / 'model'}" if inner.is_file() else ""
            raise FileNotFoundError(
                f"{path} has no {WEIGHTS_NAME}: expected a folder written by save_pretrained() or `csdn convert`{hint}"
            )
        return WeightsFile(file, fix, sha256, sha256_source, config_json=path / CONFIG_NAME)
    if has_torch_file_suffix(path):
        raise ValueError(
            f"{path} looks like a PyTorch checkpoint, not a csdn model: convert the authors' checkpoint "
            f"with `csdn convert {path} out/` (or csdn.hub.official.from_official), then load out/; "
            "a csdn train checkpoint (RUN/checkpoints/*.pt) loads with csdn.train.load_model or --model"
        )
    sidecar = path.with_name(CONFIG_NAME) if path.name == WEIGHTS_NAME else None
    return WeightsFile(path, fix, sha256, sha256_source, config_json=sidecar)


def _convert_instructions(entry: RegistryEntry) -> str:
    checkpoint = entry.official_checkpoint
    if checkpoint is None:
        return "Load a local copy instead: a folder written by save_pretrained() or `csdn convert`."
    return (
        f"To get working weights now, convert the authors' checkpoint: download {checkpoint} for "
        f"{entry.dataset} from the CSDN authors' release (linked from {AUTHORS_RELEASE}), then run\n"
        f"    csdn convert {checkpoint} out/ --dataset {entry.tag}\n"
        f'and load the result with csdn.load("out/") (or `--model out/` on the command line).'
    )


def _registry_weights(registry: Registry, name: str, revision: str | None, **download: Any) -> WeightsFile:
    """The weights of the registered ``name`` (or alias), named in messages as the user wrote it."""
    entry = registry.get(name)
    source = f"the registry entry {entry.name!r}"
    if entry.bundled is not None:
        if revision is not None:
            raise ValueError(f"{name!r} is bundled with csdn-reid and has no revisions; drop revision=")
        folder = registry.bundled_dir(entry)
        if not folder.is_dir():
            raise WeightsNotAvailableError(
                f"the bundled model {name!r} is missing from {folder}; reinstall csdn-reid "
                "(pip install --force-reinstall csdn-reid)"
            )
        fix = "Reinstall csdn-reid (pip install --force-reinstall csdn-reid) to restore it."
        return _local_weights(folder, fix=fix, sha256=entry.sha256, sha256_source=source)
    assert entry.repo_id is not None  # the registry guarantees repo_id or bundled
    revision = revision or entry.revision
    pinned_hash = entry.sha256 if revision == entry.revision else None  # the hash belongs to the pinned revision

    def unavailable(reason: str) -> str:
        return (
            f"the pretrained weights {name!r} ({entry.repo_id}, revision {revision}) are not available: "
            f"{reason}.\n{_convert_instructions(entry)}"
        )

    path = hub_download(entry.repo_id, entry.filename, revision, unavailable=unavailable, **download)
    return _hub_weights(path, entry.repo_id, revision, pinned_hash, source)


def _hub_weights(path: Path, repo_id: str, revision: str | None, sha256: str | None, source: str) -> WeightsFile:
    fix = (
        f"Delete the cached file ({path.resolve()}) and download it again, or pass force_download=True to csdn.load()."
    )
    named = hub_content_hash(path)  # what the Hub said the content is when it was downloaded
    if sha256 is None:
        sha256, source = named, f"the Hub ({repo_id}@{revision or 'main'})"

    def quarantine(actual: str) -> str | None:
        """A cached copy whose content is not what the cache names it by is corrupt: remove it, so it is fetched anew.

        When the content is what the cache names it by, the Hub's file itself differs from the pin; then it stays.
        """
        if named is None or actual == named or not discard_cached(path):
            return None
        return (
            f"The corrupted copy (the Hub sent {named}) was removed from the Hub cache, so the next load "
            "downloads it again."
        )

    return WeightsFile(path, fix, sha256, source, on_mismatch=quarantine)


def _parse_hub_id(text: str, revision: str | None) -> tuple[str, str | None]:
    """``hf-hub:org/repo`` or ``hf-hub:org/repo@revision`` -> (repo_id, revision)."""
    repo_id, _, pinned = text[len(HUB_PREFIX) :].partition("@")
    try:
        check_repo_id(repo_id)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a Hub model id; write 'hf-hub:org/repo' or 'hf-hub:org/repo@revision', "
            f"the repository id being {REPO_ID_RULES}"
        ) from None
    if pinned and revision and pinned != revision:
        raise ValueError(f"{text!r} pins revision {pinned!r}, but revision={revision!r} was also given")
    return repo_id, (pinned or revision)


def _locate(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None,
    registry: RegistryLike,
    **download: Any,
) -> WeightsFile:
    """Resolve a Hub id, an existing local path or a registry name (in that order) to a file on disk."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(
            f"name_or_path must be a registry name, an 'hf-hub:org/name' id or a local path, "
            f"got {type(name_or_path).__name__}; call csdn.load() without it for the default model"
        )
    text = os.fspath(name_or_path)
    if text.startswith(HUB_PREFIX):
        repo_id, revision = _parse_hub_id(text, revision)

        def unavailable(reason: str) -> str:
            return (
                f"cannot get {WEIGHTS_NAME} of the Hub repository {repo_id} (revision {revision or 'main'}): "
                f"{reason}. Check the repository id and revision; private repositories need a token "
                "(`hf auth login` or HF_TOKEN); offline, load a local copy made with save_pretrained()."
            )

        path = hub_download(repo_id, WEIGHTS_NAME, revision, unavailable=unavailable, **download)
        return _hub_weights(path, repo_id, revision, None, "")
    path = Path(text).expanduser()
    if path.exists():
        if revision is not None:
            raise ValueError(f"revision= applies to Hub models, not to the local path {path}")
        return _local_weights(path)
    opened = open_registry(registry)
    if text in opened:
        return _registry_weights(opened, text, revision, **download)
    if "/" in text or os.sep in text or path.suffix:
        hint = f"; for a Hub repository write 'hf-hub:{text}'" if text.count("/") == 1 and not path.suffix else ""
        raise FileNotFoundError(f"no such file or directory: {path}{hint}")
    raise ValueError(
        f"{text!r} is not a registered model ({', '.join(opened.names())}), an existing local folder or "
        ".safetensors file, or a Hub id 'hf-hub:org/repo'"
    )


# ---------------------------------------------------------------------------- public entry points
def load(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    *,
    revision: str | None = None,
    device: str | torch.device = "auto",
    local_files_only: bool | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    progress: bool = True,
    registry: RegistryLike = None,
    timeout: float | None = None,
) -> CSDN:
    """A verified CSDN model in eval mode.

    ``name_or_path`` is one of:
      - ``"hf-hub:org/repo"`` or ``"hf-hub:org/repo@revision"``: a Hub repository in our format;
      - a local folder written by :func:`save_pretrained`, or a single ``.safetensors`` file;
      - a registry name (see :func:`csdn.list_models`), downloaded from the Hub or bundled;
      - nothing: :data:`csdn.DEFAULT_MODEL` (``"synthetic-tiny"``), the small demo model bundled
        with the package, trained on synthetic images (not for real cameras).

    Downloads go through ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``,
    ``HF_TOKEN``). ``local_files_only=None`` follows ``HF_HUB_OFFLINE``; ``revision`` picks a
    branch, tag or commit (overriding a registry entry's pinned revision); ``registry`` is a
    registry file or :class:`csdn.hub.registry.Registry` to use instead of the installed one.
    ``timeout`` bounds each Hub download as a whole, retries included (default: the environment
    variable ``CSDN_HUB_TIMEOUT``, else 30 seconds).

    Raises:
        WeightsNotAvailableError: the weights cannot be obtained (for a registered model, the
            message says how to convert the authors' checkpoint instead); its subclass
            HubTimeoutError when the Hub did not answer within ``timeout``.
        WeightsError: the file is corrupted, truncated or does not fit its config.
        DeviceError: ``device`` is not available (e.g. ``"cuda"`` on a CPU-only torch build);
            the default ``"auto"`` is CUDA when available, else the CPU.
    """
    device = resolve_device(device)  # before any download
    weights = _locate(
        name_or_path,
        revision=revision,
        registry=registry,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        force_download=force_download,
        progress=progress,
        timeout=timeout,
    )
    return load_verified(weights, device)


def load_config(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    local_files_only: bool | None = None,
    cache_dir: str | Path | None = None,
    registry: RegistryLike = None,
    timeout: float | None = None,
) -> CSDNConfig:
    """The config of a model, from the same verified file :func:`load` would use, without building it."""
    return load_saved_config(
        name_or_path,
        revision=revision,
        local_files_only=local_files_only,
        cache_dir=cache_dir,
        registry=registry,
        timeout=timeout,
    )[0]


def load_saved_config(name_or_path: str | os.PathLike, **options: Any) -> tuple[CSDNConfig, dict[str, Any]]:
    """:func:`load_config`'s config (``options``: its keywords) and the model's provenance record (what
    ``load(...).provenance`` holds)."""
    settings = {"revision": None, "registry": None, "cache_dir": None, "local_files_only": None, "timeout": None}
    unknown = sorted(set(options) - set(settings))
    if unknown:
        raise TypeError(f"load_saved_config() takes load_config's keywords, not {', '.join(unknown)}")
    weights = _locate(name_or_path, **{**settings, **options}, force_download=False, progress=False)
    config, provenance, _ = verified_config(weights)
    return config, provenance


def push_to_hub(
    model: CSDN,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload CSDN model",
    timeout: float | None = None,
    evaluation: Any = None,
    extra_meta: Mapping[str, Any] | None = None,
):
    """Save ``model`` with :func:`save_pretrained` and upload the folder to the Hub repository ``repo_id``.

    ``evaluation`` (``csdn.evaluate(...)`` results) and ``extra_meta`` are recorded as by
    :func:`save_pretrained`, so the card's ``model-index`` shows the metrics on the Hub.
    Returns what :func:`upload_folder` returns; fails as it does.
    """
    check_repo_id(repo_id)
    with tempfile.TemporaryDirectory(prefix="csdn-push-") as folder:
        save_pretrained(model, folder, repo_id=repo_id, evaluation=evaluation, extra_meta=extra_meta)
        return upload_folder(
            folder, repo_id, private=private, token=token, commit_message=commit_message, timeout=timeout
        )


register_model_hub(sys.modules[__name__])  # what CSDN.from_pretrained / model.push_to_hub go through
