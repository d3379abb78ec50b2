"""The saved-model format, read and written in one place, and the mixin that gives a model
``from_pretrained`` / ``save_pretrained`` / ``push_to_hub`` in the shape of huggingface_hub's
``ModelHubMixin``.

A saved model is a folder: ``model.safetensors`` (every tensor, and the config in its metadata),
``config.json`` (the same config, plus the SHA-256 of the weights) and a ``README.md`` model card.
The config document (format 2) holds the architecture (:class:`csdn.config.CSDNConfig`) in nested
sections and, beside them, the model's provenance record ``meta`` (``model.provenance`` in memory:
the config holds no provenance); format-1 (flat) configs are still read, their ``meta`` alike.

Nothing is loaded before it is verified: the file's SHA-256 (against an expected one, else the one
recorded in ``config.json``), a full parse of the safetensors header (which catches truncation),
the config (checked against ``config.json``), and a strict name, shape and dtype match against the
model that config describes, built first on the ``meta`` device. A failure names the file, what
is wrong, and how to get a good copy.

This module never names a model class: :func:`load_verified` is given one, and the mixin's
``from_pretrained`` and ``push_to_hub`` go through the model hub that :mod:`csdn.hub` plugs in
(:mod:`csdn.hub.loading` registers itself with :func:`register_model_hub`), which knows the registry, the Hub and the architecture table.
"""

from __future__ import annotations

import copy
import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from csdn.config import PROVENANCE_KEY, CSDNConfig, document_json, split_provenance
from csdn.errors import IntegrityError, WeightsError
from csdn.io.card import EVALUATION_KEY, evaluation_records, merge_records, render_model_card
from csdn.io.safetensors import FLOAT_DTYPES, InvalidSafetensors, TensorInfo, parse_header, write_safetensors
from csdn.io.statedict import mismatch_report, nonfinite_tensor
from csdn.system.fileio import atomic_write, atomic_write_text, sha256_file

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
# config.json's provenance records the SHA-256 of the model.safetensors written with it (the file's own
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
    model: Any,  # an nn.Module with a CSDNConfig as .config and its provenance record as .provenance
    directory: str | Path,
    *,
    model_card: bool = True,
    extra_meta: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    evaluation: Any = None,
) -> Path:
    """Write ``model.safetensors`` (config in its metadata), ``config.json`` and a ``README.md`` model card.

    The config is written in format 2 (:func:`csdn.config.join_provenance`): the architecture's sections
    and, beside them, the model's ``provenance`` as the record ``meta``.

    Args:
        extra_meta: provenance merged into the saved ``meta`` (e.g.
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
    config: CSDNConfig = model.config
    recorded_provenance = getattr(model, "provenance", {})
    if not isinstance(recorded_provenance, Mapping):
        raise ValueError(
            f"the model's provenance must be a dict of JSON values, got {type(recorded_provenance).__name__}"
        )
    provenance = copy.deepcopy(dict(recorded_provenance))  # the model itself is not changed
    provenance.update(extra_meta or {})
    if evaluation is not None:
        recorded = evaluation_records(provenance.get(EVALUATION_KEY))
        provenance[EVALUATION_KEY] = merge_records(recorded, evaluation_records(evaluation))
    provenance.pop(WEIGHTS_SHA256_KEY, None)  # a loaded model's record of its old file; recomputed below
    try:
        config_json = document_json(config, provenance)
    except TypeError as err:
        raise ValueError(f"the provenance must hold JSON values (numbers, strings, lists, dicts): {err}") from err
    state = model.state_dict()
    directory.mkdir(parents=True, exist_ok=True)  # after every check: a refused call leaves nothing behind
    metadata = {"format": "pt", CONFIG_METADATA_KEY: config_json, "csdn_version": package_version()}
    atomic_write(directory / WEIGHTS_NAME, lambda temp: write_safetensors(temp, state, metadata))
    provenance[WEIGHTS_SHA256_KEY] = sha256_file(directory / WEIGHTS_NAME)
    atomic_write_text(directory / CONFIG_NAME, document_json(config, provenance) + "\n")
    if model_card:
        num_parameters = sum(p.numel() for p in model.parameters())
        card = render_model_card(config, num_parameters, provenance=provenance, repo_id=repo_id)
        atomic_write_text(directory / MODEL_CARD_NAME, card)
    return directory


# ---------------------------------------------------------------------------- reading
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

    def sidecar(self) -> Path | None:
        """The ``config.json`` beside the file, if there is one."""
        return self.config_json if self.config_json is not None and self.config_json.is_file() else None


def read_config_text(path: Path, weights: WeightsFile) -> str:
    """``config.json``'s text; a file that is not UTF-8 is a :class:`WeightsError` naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise weights.error(
            f"{path} is not UTF-8 text (byte {err.start}: {err.reason}), so its config cannot be read; "
            f"regenerate {CONFIG_NAME} with save_pretrained, which writes UTF-8 JSON"
        ) from None


def _parse_config(text: str, where: str, weights: WeightsFile) -> tuple[CSDNConfig, dict[str, Any]]:
    try:
        return split_provenance(json.loads(text))
    except (ValueError, TypeError) as err:
        raise weights.error(f"{where} holds no valid CSDN config ({err})") from err


def _config_of(weights: WeightsFile, metadata: Mapping[str, str]) -> tuple[CSDNConfig, dict[str, Any]]:
    """The config and provenance from the file's metadata (else from the ``config.json`` beside it), the config
    checked against that ``config.json`` (the provenance may differ: the sidecar adds the file's hash)."""
    sidecar = weights.sidecar()
    text = metadata.get(CONFIG_METADATA_KEY)
    if text is None and sidecar is None:
        raise weights.error(
            f"its metadata has no '{CONFIG_METADATA_KEY}' and no {CONFIG_NAME} lies beside it, so the "
            "architecture is unknown (save models with csdn's save_pretrained; convert the authors' "
            "checkpoint with `csdn convert`)"
        )
    stored = _parse_config(text, "its metadata", weights) if text is not None else None
    if sidecar is None:
        assert stored is not None
        return stored
    beside = _parse_config(read_config_text(sidecar, weights), str(sidecar), weights)
    if stored is None:
        return beside
    config, other = stored[0], beside[0]
    differ = [field for field, value in vars(config).items() if getattr(other, field) != value]
    if differ:
        details = "; ".join(
            f"{key}: {_shown(getattr(config, key))} in the metadata, {_shown(getattr(other, key))} in {CONFIG_NAME}"
            for key in differ
        )
        raise weights.error(
            f"{sidecar} disagrees with the config stored in the weights file ({details}); the stored one "
            f"belongs to the tensors, so delete or regenerate {CONFIG_NAME} (save_pretrained writes both)"
        )
    return stored


def _shown(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


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
    sidecar = weights.sidecar()
    if sidecar is None:
        return None
    try:
        meta = json.loads(read_config_text(sidecar, weights)).get(PROVENANCE_KEY) or {}
    except (json.JSONDecodeError, AttributeError):
        return None  # reported, with the file's name, when the config itself is parsed
    recorded = meta.get(WEIGHTS_SHA256_KEY) if isinstance(meta, dict) else None
    return recorded.lower() if isinstance(recorded, str) else None


def verified_config(weights: WeightsFile) -> tuple[CSDNConfig, dict[str, Any], dict[str, TensorInfo]]:
    """Check the file's hash and header; return its config, its provenance record and its declared tensors."""
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
    return (*_config_of(weights, metadata), infos)


ModelBuilder = Callable[[CSDNConfig], Any]  # config -> the model it describes (random weights, no provenance)


def load_verified(weights: WeightsFile, build: ModelBuilder, device: torch.device) -> Any:
    """Verify ``weights`` completely, then ``build`` the model of its config and load it (eval mode, on ``device``),
    its ``provenance`` the saved record.

    The config comes from the file, so it is untrusted: its sizes are bounded when it is parsed,
    and the model it describes is first built on the ``meta`` device (shapes only, no memory) and
    its tensors compared with the file's header, so a config claiming sizes the file does not
    hold fails before any real allocation.
    """
    config, provenance, infos = verified_config(weights)
    with torch.device("meta"):
        skeleton = build(config)
    _check_tensors(weights, infos, skeleton.state_dict())
    del skeleton
    model = build(config)
    expected = model.state_dict()
    try:
        state = load_file(str(weights.path))
    except (SafetensorError, OSError) as err:
        raise weights.error(f"its tensors cannot be read ({err})") from err
    problem = nonfinite_tensor(state)
    if problem:
        raise weights.error(f"{problem} (corrupted, or saved from a diverged training run)")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    model.provenance = provenance
    return model.to(device).eval()


# ---------------------------------------------------------------------------- the mixin
class ModelHub(Protocol):
    """Where models come from and go to beyond this format: registry names, the Hub, the architecture
    table. :mod:`csdn.hub` is one (its :func:`csdn.load` and :func:`csdn.push_to_hub`)."""

    load: Callable[..., Any]  # (name_or_path, **options) -> a verified model
    push_to_hub: Callable[..., Any]  # (model, repo_id, **options) -> the upload's commit


_MODEL_HUB: list[ModelHub] = []  # the registered hub (at most one)
MODEL_HUB_MODULE = "csdn.hub.loading"  # registers itself when imported


def register_model_hub(hub: ModelHub) -> None:
    """Make ``hub`` the source of ``from_pretrained`` and the target of ``push_to_hub``."""
    _MODEL_HUB[:] = [hub]


def model_hub() -> ModelHub:
    """The registered model hub, importing :data:`MODEL_HUB_MODULE` (which registers itself) on first need.

    By name at run time: the hub sits above the models in the layering, so no import statement here
    may point at it.
    """
    if not _MODEL_HUB:
        importlib.import_module(MODEL_HUB_MODULE)
    return _MODEL_HUB[0]


class PretrainedMixin:
    """``from_pretrained``, ``save_pretrained`` and ``push_to_hub`` for a module whose ``self.config`` is its
    :class:`CSDNConfig`, as huggingface_hub's ``ModelHubMixin`` has them. Names no model class.

    ``provenance`` is the model's record of where it came from (dataset, trial, source checkpoint,
    evaluations, ...), kept apart from the architecture config as huggingface_hub keeps model card
    data apart from the config: a plain dict, empty for a new model, saved as ``config.json``'s
    ``meta`` section and read back from it.
    """

    provenance: dict[str, Any]

    @classmethod
    def from_pretrained(cls, name_or_path: Any, **options: Any) -> Any:
        """A verified model in eval mode from a registry name, ``"hf-hub:org/repo"`` or a local folder/file.

        ``options`` are those of :func:`csdn.load` (``revision``, ``device``, ``local_files_only``,
        ``cache_dir``, ``timeout``, ...). The class the saved architecture maps to must be ``cls``
        or a subclass of it.
        """
        model = model_hub().load(name_or_path, **options)
        if not isinstance(model, cls):
            raise TypeError(
                f"{name_or_path!r} holds a {type(model).__name__} model (architecture "
                f"{model.config.architecture!r}), not a {cls.__name__}; load it with csdn.load()"
            )
        return model

    def save_pretrained(self, directory: str | Path, **options: Any) -> Path:
        """Write ``model.safetensors``, ``config.json`` and a model card; see :func:`save_pretrained`."""
        return save_pretrained(self, directory, **options)

    def push_to_hub(self, repo_id: str, **options: Any) -> Any:
        """Save this model and upload it to the Hub repository ``repo_id``; see :func:`csdn.push_to_hub`."""
        return model_hub().push_to_hub(self, repo_id, **options)
