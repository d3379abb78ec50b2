"""The model registry: the short names users type (``"sysu"``) and where their weights live.

The registry is a data file, ``weights/registry.json`` at the repository's top level, installed with the package
as ``csdn.weights``, so adding or re-pinning a model never touches code. Each entry
names a Hugging Face Hub file (repo, filename, pinned revision, SHA-256) and/or a
``bundled`` folder next to the registry that holds a ``save_pretrained`` model and
loads without network. A second table, ``clip``, pins the CLIP weights that
``csdn.from_clip`` starts from (e.g. ``"RN50"``) to a Hub file the same way. ``$CSDN_REGISTRY`` (or the ``registry=`` argument of the
functions here) points at another registry file, e.g. an organisation's mirror.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csdn.config import reject_unknown_fields
from csdn.io.card import AUTHORS_RELEASE as AUTHORS_RELEASE  # re-exported: where the authors publish code and weights
from csdn.system.resources import weights_dir

REGISTRY_ENV = "CSDN_REGISTRY"
# What ``csdn.load()`` loads when given no name: the demo model bundled with the
# package (trained on synthetic images), so a fresh install works offline.
DEFAULT_MODEL = "synthetic-tiny"
REGISTRY_FILENAME = "registry.json"
REGISTRY_FORMAT_VERSION = 1

SHA256_HEX = re.compile(r"[0-9a-f]{64}")  # a lowercase hex SHA-256 digest
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # a Hugging Face Hub "org/name"


@dataclass(frozen=True)
class RegistryEntry:
    """One registered model.

    ``repo_id``/``filename``/``revision`` locate the weights on the Hub; ``sha256``
    (when known) is checked against every file before it is loaded; ``bundled`` is
    a folder, relative to the registry file, holding a ``save_pretrained`` model
    shipped with the package; ``official_checkpoint`` names the authors' released
    file that ``csdn convert`` turns into these weights.
    """

    name: str
    dataset: str
    description: str
    repo_id: str | None = None
    filename: str = "model.safetensors"
    revision: str = "main"
    sha256: str | None = None
    bundled: str | None = None
    official_checkpoint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ClipWeightsEntry:
    """CLIP weights on the Hub: a file at a pinned revision and its SHA-256 (required: these
    files are large and come from a third party, so every copy is checked)."""

    name: str
    repo_id: str
    filename: str
    revision: str
    sha256: str


def _build(kind: type, name: str, fields: Any, where: str) -> Any:
    """``kind(name=name, **fields)`` from a registry JSON object; every problem is a ValueError saying ``where``."""
    if not isinstance(fields, dict):
        raise ValueError(f"{where}: must be an object")
    reject_unknown_fields(fields, kind, f"{where}: unknown field(s)", exclude={"name"})
    try:
        return kind(name=name, **fields)
    except TypeError as err:  # a required field is missing
        raise ValueError(f"{where}: {err}") from None


class Registry:
    """A parsed, validated registry file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"model registry not found: {self.path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"model registry {self.path} is not valid JSON: {err}") from err
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise ValueError(f"model registry {self.path} must be an object with a 'models' object")
        version = data.get("format_version", REGISTRY_FORMAT_VERSION)
        if version != REGISTRY_FORMAT_VERSION:
            raise ValueError(
                f"model registry {self.path} has format_version {version}; this csdn-reid reads "
                f"version {REGISTRY_FORMAT_VERSION} (upgrade with `pip install -U csdn-reid`)"
            )
        self.entries = {name: self._entry(name, fields) for name, fields in data["models"].items()}
        clip = data.get("clip", {})
        if not isinstance(clip, dict):
            raise ValueError(f"model registry {self.path}: 'clip' must be an object of CLIP weights entries")
        self.clip_entries = {name: self._clip_entry(name, fields) for name, fields in clip.items()}

    def _entry(self, name: str, fields: Any) -> RegistryEntry:
        where = f"model registry {self.path}, entry {name!r}"
        entry = _build(RegistryEntry, name, fields, where)
        if entry.repo_id is None and entry.bundled is None:
            raise ValueError(f"{where}: needs a 'repo_id' (Hub) or a 'bundled' folder")
        if entry.repo_id is not None and not REPO_ID.fullmatch(entry.repo_id):
            raise ValueError(f"{where}: repo_id {entry.repo_id!r} is not of the form 'org/name'")
        if entry.sha256 is not None and not SHA256_HEX.fullmatch(entry.sha256):
            raise ValueError(f"{where}: sha256 must be 64 lowercase hex digits or null")
        if entry.bundled is not None and (Path(entry.bundled).is_absolute() or ".." in Path(entry.bundled).parts):
            raise ValueError(f"{where}: 'bundled' must be a folder inside {self.path.parent}")
        return entry

    def _clip_entry(self, name: str, fields: Any) -> ClipWeightsEntry:
        where = f"model registry {self.path}, CLIP entry {name!r}"
        entry = _build(ClipWeightsEntry, name, fields, where)
        if not REPO_ID.fullmatch(entry.repo_id):
            raise ValueError(f"{where}: repo_id {entry.repo_id!r} is not of the form 'org/name'")
        if not SHA256_HEX.fullmatch(entry.sha256):
            raise ValueError(f"{where}: sha256 must be 64 lowercase hex digits")
        return entry

    def clip_weights(self, name: str) -> ClipWeightsEntry:
        """The CLIP weights entry ``name``; ``ValueError`` listing the known names if there is none."""
        if name not in self.clip_entries:
            known = ", ".join(sorted(self.clip_entries)) or "none"
            raise ValueError(
                f"no CLIP weights {name!r} in the model registry {self.path} (it has: {known}); "
                "pass a local CLIP file instead"
            )
        return self.clip_entries[name]

    def names(self) -> list[str]:
        return sorted(self.entries)

    def get(self, name: str) -> RegistryEntry:
        if name not in self.entries:
            raise KeyError(name)
        return self.entries[name]

    def bundled_dir(self, entry: RegistryEntry) -> Path:
        """The folder of a bundled model (``bundled`` is relative to the registry file)."""
        if entry.bundled is None:
            raise ValueError(f"model {entry.name!r} has no bundled weights")
        return self.path.parent / entry.bundled


RegistryLike = Registry | str | Path | None


def default_registry_path() -> Path:
    """``$CSDN_REGISTRY``, else the registry that ships inside the package (``weights/``, installed as ``csdn.weights``)."""
    override = os.environ.get(REGISTRY_ENV)
    if override:
        return Path(override)
    return weights_dir() / REGISTRY_FILENAME


def open_registry(registry: RegistryLike = None) -> Registry:
    """A :class:`Registry` from an instance, a path to a registry file, or ``None`` (the default one)."""
    if isinstance(registry, Registry):
        return registry
    return Registry(default_registry_path() if registry is None else registry)


def list_models(registry: RegistryLike = None) -> list[str]:
    """Names of the registered models, sorted."""
    return open_registry(registry).names()


def model_info(name: str, registry: RegistryLike = None) -> RegistryEntry:
    """The registry entry of ``name``; ``ValueError`` listing the known names if there is none."""
    opened = open_registry(registry)
    try:
        return opened.get(name)
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(opened.names())}") from None
