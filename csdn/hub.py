"""Weights I/O: ``save_pretrained``, ``load`` (registry name, Hub repo or local path) and ``push_to_hub``.

File format: ``model.safetensors`` holds every tensor, and its metadata holds the
config JSON under ``csdn_config``, so the single file rebuilds the model. Beside it,
``config.json`` (the same config, for people and the Hub's web page) and a
``README.md`` model card.

On load, the metadata config is authoritative: it was written into the same file
as the tensors and cannot drift from them. A ``config.json`` next to a local
``model.safetensors`` must agree with it on every architecture field (else the
load stops and says which fields differ); it is read on its own only for files
whose metadata has no config. Hub downloads fetch the safetensors file alone.

Nothing is loaded before it is verified: the SHA-256 against the registry (or,
for Hub files, against the content hash the Hub's cache names the file by), a
full parse of the safetensors header (which catches truncation), and a strict
name, shape and dtype match against the model its config describes. A failure
names the file, what is wrong, and how to get a good copy.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    FileMetadataError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import silent_tqdm
from safetensors import SafetensorError
from safetensors.torch import load_file

from csdn.config import CSDNConfig
from csdn.device import resolve_device
from csdn.fileio import atomic_write, atomic_write_text, sha256_file
from csdn.model import CSDN
from csdn.statedict import mismatch_report
from csdn.errors import WeightsError, WeightsNotAvailableError
from csdn.registry import (  # list_models and model_info are part of this module's API (csdn.list_models)
    AUTHORS_RELEASE,
    DEFAULT_MODEL,
    Registry,
    RegistryEntry,
    RegistryLike,
    list_models,
    model_info,
    open_registry,
)

__all__ = [
    "load", "load_config", "save_pretrained", "DEFAULT_MODEL", "push_to_hub", "list_models", "model_info",
    "WeightsError", "WeightsNotAvailableError",
    "atomic_write", "write_safetensors", "read_safetensors_header", "render_model_card", "describe_architecture",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
MODEL_CARD_NAME = "README.md"
CONFIG_METADATA_KEY = "csdn_config"
HUB_PREFIX = "hf-hub:"

_MAX_HEADER_BYTES = 100 * 1024 * 1024
# torch dtype -> safetensors dtype name, for the dtypes a CSDN state dict can hold
_DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}
_DTYPE_BYTES = {name: dtype.itemsize for dtype, name in _DTYPE_NAMES.items()}
_FLOAT_DTYPES = {name for dtype, name in _DTYPE_NAMES.items() if dtype.is_floating_point}
_SHA256 = re.compile(r"[0-9a-f]{64}")


# ---------------------------------------------------------------------------- saving
def _package_version() -> str:
    try:
        return importlib_metadata.version("csdn-reid")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def write_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Write a safetensors file whose bytes depend only on ``tensors`` and ``metadata``.

    safetensors' own writer puts the metadata keys in random order, so saving the same
    model twice gave files with different SHA-256s; here the metadata keys are sorted and
    tensors ordered by (element size, largest first, then name), which also keeps every
    tensor aligned to its element size. Each tensor's bytes are copied out on their own,
    so tensors that share memory are fine.
    """
    ordered = sorted(tensors.items(), key=lambda item: (-item[1].element_size(), item[0]))
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    offset = 0
    for name, tensor in ordered:
        if tensor.dtype not in _DTYPE_NAMES:
            raise ValueError(f"cannot save tensor {name!r} of dtype {tensor.dtype} in safetensors")
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": _DTYPE_NAMES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        for _, tensor in ordered:
            handle.write(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def save_pretrained(
    model: CSDN,
    directory: str | Path,
    *,
    model_card: bool = True,
    extra_meta: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write ``model.safetensors`` (config in its metadata), ``config.json`` and a ``README.md`` model card.

    Args:
        extra_meta: provenance merged into the saved config's ``meta`` (e.g.
            ``{"dataset": "SYSU-MM01", "metrics": {...}}``); the model itself is not changed.
        repo_id: the Hub repository the model card's usage snippet should name.

    Returns the directory. Each file is replaced atomically.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"cannot save into {directory}: it exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    config = CSDNConfig.from_dict(model.config.to_dict())
    config.meta.update(extra_meta or {})
    try:
        config_json = config.to_json()
    except TypeError as err:
        raise ValueError(f"config meta must hold JSON values (numbers, strings, lists, dicts): {err}") from err
    state = model.state_dict()
    metadata = {"format": "pt", CONFIG_METADATA_KEY: config_json, "csdn_version": _package_version()}
    atomic_write(directory / WEIGHTS_NAME, lambda temp: write_safetensors(temp, state, metadata))
    atomic_write_text(directory / CONFIG_NAME, config_json + "\n")
    if model_card:
        num_parameters = sum(p.numel() for p in model.parameters())
        atomic_write_text(directory / MODEL_CARD_NAME, render_model_card(config, num_parameters, repo_id=repo_id))
    return directory


# ---------------------------------------------------------------------------- model card
_CITATION = """\
@article{yu2025csdn,
  title   = {CLIP-Driven Semantic Discovery Network for Visible-Infrared Person Re-Identification},
  author  = {Yu, Xiaoyan and Dong, Neng and Zhu, Liehuang and Peng, Hao and Tao, Dapeng},
  journal = {IEEE Transactions on Multimedia},
  year    = {2025},
  note    = {arXiv:2401.05806}
}"""


def _backbone_name(config: CSDNConfig) -> str:
    reference = CSDNConfig.rn50()
    if (config.vision_layers, config.vision_width) == (reference.vision_layers, reference.vision_width):
        return "CLIP RN50"
    return f"CLIP ModifiedResNet (blocks {list(config.vision_layers)}, width {config.vision_width})"


def _metrics_table(metrics: Any) -> list[str]:
    """``{"protocol": {"rank1": .., "mAP": ..}}`` or a flat ``{"rank1": ..}`` as a Markdown table."""
    if not isinstance(metrics, Mapping) or not metrics:
        return []
    rows = dict(metrics) if all(isinstance(v, Mapping) for v in metrics.values()) else {"": dict(metrics)}
    columns = list(dict.fromkeys(key for row in rows.values() for key in row))
    lines = ["| protocol | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for protocol, row in rows.items():
        cells = [f"{row[c]:.2f}" if isinstance(row.get(c), (int, float)) else str(row.get(c, "")) for c in columns]
        lines.append(f"| {protocol} | " + " | ".join(cells) + " |")
    return ["## Results", "", *lines, ""]


def describe_architecture(config: CSDNConfig, num_parameters: int) -> list[str]:
    """One line per architecture fact, for the model card and ``csdn info``."""
    height, width = config.image_size
    return [
        f"Backbone: {_backbone_name(config)}, a stem per modality and a shared trunk (layer4 stride "
        f"{config.last_stride}), attention pool to {config.embed_dim}-d",
        f"Input: {height}x{width} (HxW), ImageNet normalisation",
        f"Test feature: {config.test_feature_dim}-d (GeM half + projection half, each unit norm); "
        f"embedding with flip test-time augmentation: {2 * config.test_feature_dim}-d",
        f"Training identities: {config.num_classes}",
        f"Parameters: {num_parameters:,}",
    ]


def render_model_card(config: CSDNConfig, num_parameters: int, *, repo_id: str | None = None) -> str:
    """The ``README.md`` of a saved model: what it is, how it was made, how to use and cite it."""
    meta = dict(config.meta)
    dataset = meta.get("dataset", "unspecified")
    load_target = f"hf-hub:{repo_id}" if repo_id else "path/to/this/folder"
    provenance = [f"- {key}: `{value}`" for key, value in meta.items() if key not in ("metrics", "license")]
    lines = [
        "---",
        "library_name: csdn-reid",
        f"license: {meta.get('license', 'other')}",
        "pipeline_tag: image-feature-extraction",
        "tags: [person-reid, visible-infrared, cross-modality, clip, csdn]",
        "---",
        "",
        f"# CSDN for visible-infrared person re-identification ({dataset})",
        "",
        f"Trained on: **{dataset}**. Maps visible (RGB) and infrared person crops into one embedding "
        "space, so the same person is close whatever the camera's modality.",
        "",
        "## Architecture",
        "",
        *(f"- {line}" for line in describe_architecture(config, num_parameters)),
        "",
        *_metrics_table(meta.get("metrics")),
        "## Usage",
        "",
        "```python",
        "import csdn",
        "",
        f'model = csdn.load("{load_target}")',
        'query = model.embed_image(["ir_0001.jpg"], modality="infrared")',
        'gallery = model.embed_image(["rgb_0001.jpg", "rgb_0002.jpg"], modality="visible")',
        "matches = csdn.match(query, gallery, topk=2)  # .indices, .scores (cosine, best first)",
        "```",
        "",
        *(["## Provenance", "", *provenance, ""] if provenance else []),
        "## License and citation",
        "",
        "The csdn-reid code is MIT-licensed. Weights converted from the authors' release "
        f"({AUTHORS_RELEASE}) follow that release's terms. If you use this model, cite the CSDN paper:",
        "",
        "Yu, Dong, Zhu, Peng, Tao. *CLIP-Driven Semantic Discovery Network for Visible-Infrared Person "
        "Re-Identification.* IEEE Transactions on Multimedia, 2025. arXiv:2401.05806.",
        "",
        "```bibtex",
        _CITATION,
        "```",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- verification
@dataclass(frozen=True)
class TensorInfo:
    """A tensor as the safetensors header declares it."""

    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class _WeightsFile:
    """A located weights file and what is known about it, for verification and error messages."""

    path: Path
    fix: str  # how to get a good copy; ends every error about this file
    sha256: str | None = None  # expected content hash
    sha256_source: str = ""  # who expects it
    config_json: Path | None = None  # a config.json that must agree with the metadata

    def error(self, problem: str) -> WeightsError:
        return WeightsError(f"{self.path}: {problem}. It was not loaded. {self.fix}")


class _InvalidSafetensors(Exception):
    """What makes a file unreadable as safetensors (worded to follow "not a valid safetensors file:")."""


def _parse_header(path: Path) -> tuple[dict[str, str], dict[str, TensorInfo]]:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise _InvalidSafetensors(f"it is only {size} bytes long")
        (header_bytes,) = struct.unpack("<Q", prefix)
        if header_bytes > min(size - 8, _MAX_HEADER_BYTES):
            raise _InvalidSafetensors(
                f"it declares a {header_bytes}-byte header but holds {size} bytes (truncated, or another format)"
            )
        raw = handle.read(header_bytes)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _InvalidSafetensors("its header is not JSON (truncated, or another format)") from None
    if not isinstance(header, dict):
        raise _InvalidSafetensors("its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _InvalidSafetensors("its __metadata__ is not a string-to-string map")
    infos: dict[str, TensorInfo] = {}
    data_end = 0
    for name, spec in header.items():
        try:
            dtype, shape, (begin, end) = spec["dtype"], tuple(int(d) for d in spec["shape"]), spec["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise _InvalidSafetensors(f"the header entry of tensor {name!r} is malformed") from None
        if dtype not in _DTYPE_BYTES:
            raise _InvalidSafetensors(f"tensor {name!r} has unsupported dtype {dtype!r}")
        if begin < 0 or end - begin != math.prod(shape) * _DTYPE_BYTES[dtype]:
            raise _InvalidSafetensors(f"tensor {name!r} declares {end - begin} bytes for shape {list(shape)} of {dtype}")
        infos[name] = TensorInfo(dtype, shape)
        data_end = max(data_end, end)
    data_bytes = size - 8 - header_bytes
    if data_end > data_bytes:
        raise _InvalidSafetensors(f"it is truncated: its tensors need {data_end} data bytes, the file holds {data_bytes}")
    if data_end < data_bytes:
        raise _InvalidSafetensors(f"it has {data_bytes - data_end} unexpected bytes after its tensors")
    return metadata, infos


def read_safetensors_header(path: str | Path) -> tuple[dict[str, str], dict[str, TensorInfo]]:
    """Parse and check a safetensors header: ``(metadata, {name: TensorInfo})``.

    Checks that the declared tensors fill the file exactly, so a truncated download
    or a file that is not safetensors at all is caught before any tensor is read.
    """
    try:
        return _parse_header(Path(path))
    except _InvalidSafetensors as err:
        raise WeightsError(f"{path} is not a valid safetensors file: {err}") from None


def _parse_config(text: str, where: str, weights: _WeightsFile) -> CSDNConfig:
    try:
        return CSDNConfig.from_json(text)
    except (ValueError, TypeError) as err:
        raise weights.error(f"{where} holds no valid CSDN config ({err})") from err


def _config_of(weights: _WeightsFile, metadata: Mapping[str, str]) -> CSDNConfig:
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


def _check_tensors(weights: _WeightsFile, infos: Mapping[str, TensorInfo], expected: Mapping[str, torch.Tensor]) -> None:
    """Every tensor the model needs, nothing else, each with its shape and kind of dtype."""
    missing = sorted(set(expected) - set(infos))
    unexpected = sorted(set(infos) - set(expected))
    wrong = []
    for name in sorted(set(infos) & set(expected)):
        info, tensor = infos[name], expected[name]
        if info.shape != tuple(tensor.shape):
            wrong.append(f"{name}: shape {list(info.shape)} in the file, {list(tensor.shape)} in the model")
        elif (info.dtype in _FLOAT_DTYPES) != tensor.is_floating_point():
            wrong.append(f"{name}: dtype {info.dtype} in the file, {tensor.dtype} in the model")
    problems = mismatch_report(missing, unexpected, wrong, noun="tensors")
    if problems:
        raise weights.error("its tensors do not match the architecture its config describes: " + " | ".join(problems))


def _verified_config(weights: _WeightsFile) -> tuple[CSDNConfig, dict[str, TensorInfo]]:
    """Check the file's hash and header; return its config and declared tensors."""
    if weights.sha256 is not None:
        actual = sha256_file(weights.path)
        if actual != weights.sha256:
            raise weights.error(
                f"its SHA-256 is {actual}, but {weights.sha256_source} expects {weights.sha256} "
                "(corrupted, or not the published file)"
            )
    try:
        metadata, infos = _parse_header(weights.path)
    except _InvalidSafetensors as err:
        raise weights.error(f"not a valid safetensors file: {err}") from None
    return _config_of(weights, metadata), infos


def _load_verified(weights: _WeightsFile, device: torch.device) -> CSDN:
    """Verify ``weights`` completely, then build the model and load it (eval mode, on ``device``)."""
    config, infos = _verified_config(weights)
    model = CSDN(config)
    expected = model.state_dict()
    _check_tensors(weights, infos, expected)
    try:
        state = load_file(str(weights.path))
    except (SafetensorError, OSError) as err:
        raise weights.error(f"its tensors cannot be read ({err})") from err
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    return model.to(device).eval()


# ---------------------------------------------------------------------------- locating weights
def _local_weights(path: Path, *, fix: str | None = None, sha256: str | None = None, sha256_source: str = "") -> _WeightsFile:
    """A ``save_pretrained`` folder or a single ``.safetensors`` file on disk."""
    fix = fix or "Re-create it with save_pretrained() or `csdn convert`."
    if path.is_dir():
        file = path / WEIGHTS_NAME
        if not file.is_file():
            raise FileNotFoundError(
                f"{path} has no {WEIGHTS_NAME}: expected a folder written by save_pretrained() or `csdn convert`"
            )
        return _WeightsFile(file, fix, sha256, sha256_source, config_json=path / CONFIG_NAME)
    if path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        raise ValueError(
            f"{path} looks like a PyTorch checkpoint, not a csdn model: convert the authors' checkpoint "
            f"with `csdn convert {path} out/` (or csdn.convert.from_official), then load out/"
        )
    sidecar = path.with_name(CONFIG_NAME) if path.name == WEIGHTS_NAME else None
    return _WeightsFile(path, fix, sha256, sha256_source, config_json=sidecar)


def _hub_content_hash(path: Path) -> str | None:
    """The SHA-256 a Hub cache file is stored under (LFS files' blobs are named by it), if any."""
    if path.is_symlink():
        name = path.resolve().name
        return name if _SHA256.fullmatch(name) else None
    return None


def _unavailable_reason(err: Exception, filename: str) -> str:
    if isinstance(err, RepositoryNotFoundError):
        return "the repository does not exist on the Hub (or is private and no valid token was given)"
    if isinstance(err, RevisionNotFoundError):
        return "the repository has no such revision"
    if isinstance(err, RemoteEntryNotFoundError):
        return f"the repository has no file {filename}"
    if isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        return "it is not in the local cache and the Hub cannot be reached (offline mode, local_files_only, or no network)"
    return str(err).strip().splitlines()[0]


def _transfer_errors() -> tuple[type[BaseException], ...]:
    """What the HTTP client huggingface_hub uses raises when a transfer fails (connection cut, timeout).

    huggingface_hub has used requests, httpx and httpx2; whichever it imported is in ``sys.modules``.
    """
    found = []
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "RequestException")):
        error = getattr(sys.modules.get(module), name, None)
        if isinstance(error, type) and issubclass(error, BaseException):
            found.append(error)
    return tuple(found)


def _transfer_failure(err: BaseException) -> str | None:
    """What went wrong when ``err`` is a failed transfer or a Hub server error (HTTP 5xx), else None."""
    for cause in (err, err.__cause__):  # a failed HEAD reaches us as LocalEntryNotFoundError from it
        if isinstance(cause, OfflineModeIsEnabled):
            return None
        status = getattr(getattr(cause, "response", None), "status_code", None)
        if isinstance(cause, HfHubHTTPError) and isinstance(status, int) and status >= 500:
            return f"the Hub answered HTTP {status} (a server error)"
        if isinstance(cause, (ConnectionError, *_transfer_errors())):
            return f"the connection failed ({type(cause).__name__}: {str(cause).strip() or 'no details'})"
    return None


def _download(
    repo_id: str,
    filename: str,
    revision: str | None,
    *,
    cache_dir: str | Path | None,
    local_files_only: bool | None,
    force_download: bool,
    progress: bool,
    unavailable: Callable[[str], str],
) -> Path:
    """``hf_hub_download`` (its cache, offline mode and revisions), with failures turned into our error."""
    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=bool(local_files_only),
                force_download=force_download,
                library_name="csdn-reid",
                library_version=_package_version(),
                tqdm_class=None if progress else silent_tqdm,
            )
        )
    except (HfHubHTTPError, EntryNotFoundError, OfflineModeIsEnabled, FileMetadataError, *_transfer_errors()) as err:
        failure = _transfer_failure(err)
        if failure is not None:
            raise WeightsNotAvailableError(
                f"cannot download {filename} of the Hub repository {repo_id} (revision {revision or 'main'}): "
                f"{failure}; check the connection, or set HF_HUB_OFFLINE=1 to use the cache"
            ) from err
        raise WeightsNotAvailableError(unavailable(_unavailable_reason(err, filename))) from err


def _convert_instructions(entry: RegistryEntry) -> str:
    checkpoint = entry.official_checkpoint
    if checkpoint is None:
        return "Load a local copy instead: a folder written by save_pretrained() or `csdn convert`."
    return (
        f"To get working weights now, convert the authors' checkpoint: download {checkpoint} for "
        f"{entry.dataset} from the CSDN authors' release (linked from {AUTHORS_RELEASE}), then run\n"
        f"    csdn convert {checkpoint} out/ --dataset {entry.name}\n"
        f"and load the result with csdn.load(\"out/\") (or `--model out/` on the command line)."
    )


def _registry_weights(
    registry: Registry, entry: RegistryEntry, revision: str | None, **download: Any
) -> _WeightsFile:
    source = f"the registry entry {entry.name!r}"
    if entry.bundled is not None:
        if revision is not None:
            raise ValueError(f"{entry.name!r} is bundled with csdn-reid and has no revisions; drop revision=")
        folder = registry.bundled_dir(entry)
        if not folder.is_dir():
            raise WeightsNotAvailableError(
                f"the bundled model {entry.name!r} is missing from {folder}; reinstall csdn-reid "
                "(pip install --force-reinstall csdn-reid)"
            )
        fix = "Reinstall csdn-reid (pip install --force-reinstall csdn-reid) to restore it."
        return _local_weights(folder, fix=fix, sha256=entry.sha256, sha256_source=source)
    assert entry.repo_id is not None  # the registry guarantees repo_id or bundled
    revision = revision or entry.revision
    pinned_hash = entry.sha256 if revision == entry.revision else None  # the hash belongs to the pinned revision

    def unavailable(reason: str) -> str:
        return (
            f"the pretrained weights {entry.name!r} ({entry.repo_id}, revision {revision}) are not available: "
            f"{reason}.\n{_convert_instructions(entry)}"
        )

    path = _download(entry.repo_id, entry.filename, revision, unavailable=unavailable, **download)
    return _hub_weights(path, entry.repo_id, revision, pinned_hash, source)


def _hub_weights(path: Path, repo_id: str, revision: str | None, sha256: str | None, source: str) -> _WeightsFile:
    fix = (
        f"Delete the cached file ({path.resolve()}) and download it again, or pass force_download=True "
        "to csdn.load()."
    )
    if sha256 is None:
        sha256, source = _hub_content_hash(path), f"the Hub ({repo_id}@{revision or 'main'})"
    return _WeightsFile(path, fix, sha256, source)


def _parse_hub_id(text: str, revision: str | None) -> tuple[str, str | None]:
    """``hf-hub:org/repo`` or ``hf-hub:org/repo@revision`` -> (repo_id, revision)."""
    repo_id, _, pinned = text[len(HUB_PREFIX):].partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"{text!r} is not a Hub model id; write 'hf-hub:org/repo' or 'hf-hub:org/repo@revision'")
    if pinned and revision and pinned != revision:
        raise ValueError(f"{text!r} pins revision {pinned!r}, but revision={revision!r} was also given")
    return repo_id, (pinned or revision)


def _locate(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None,
    registry: RegistryLike,
    **download: Any,
) -> _WeightsFile:
    """Resolve a Hub id, an existing local path or a registry name (in that order) to a file on disk."""
    text = os.fspath(name_or_path)
    if text.startswith(HUB_PREFIX):
        repo_id, revision = _parse_hub_id(text, revision)

        def unavailable(reason: str) -> str:
            return (
                f"cannot get {WEIGHTS_NAME} of the Hub repository {repo_id} (revision {revision or 'main'}): "
                f"{reason}. Check the repository id and revision; private repositories need a token "
                "(`hf auth login` or HF_TOKEN); offline, load a local copy made with save_pretrained()."
            )

        path = _download(repo_id, WEIGHTS_NAME, revision, unavailable=unavailable, **download)
        return _hub_weights(path, repo_id, revision, None, "")
    path = Path(text).expanduser()
    if path.exists():
        if revision is not None:
            raise ValueError(f"revision= applies to Hub models, not to the local path {path}")
        return _local_weights(path)
    opened = open_registry(registry)
    if text in opened.entries:
        return _registry_weights(opened, opened.get(text), revision, **download)
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
    device: str | torch.device = "cpu",
    local_files_only: bool | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    progress: bool = True,
    registry: RegistryLike = None,
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
    registry file or :class:`csdn.registry.Registry` to use instead of the installed one.

    Raises:
        WeightsNotAvailableError: the weights cannot be obtained (for a registered model, the
            message says how to convert the authors' checkpoint instead).
        WeightsError: the file is corrupted, truncated or does not fit its config.
        DeviceError: ``device`` is not available (e.g. ``"cuda"`` on a CPU-only torch build).
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
    )
    return _load_verified(weights, device)


def load_config(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    local_files_only: bool | None = None,
    cache_dir: str | Path | None = None,
    registry: RegistryLike = None,
) -> CSDNConfig:
    """The config of a model, from the same verified file :func:`load` would use, without building it."""
    weights = _locate(
        name_or_path,
        revision=revision,
        registry=registry,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        force_download=False,
        progress=False,
    )
    return _verified_config(weights)[0]


def push_to_hub(
    model: CSDN,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload CSDN model",
):
    """Save ``model`` with :func:`save_pretrained` and upload the folder to the Hub repository ``repo_id``.

    Creates the repository if needed. Returns huggingface_hub's ``CommitInfo`` (a string
    holding the commit URL, with ``.oid`` the commit hash).
    """
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory(prefix="csdn-push-") as folder:
        save_pretrained(model, folder, repo_id=repo_id)
        return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message, repo_type="model")
