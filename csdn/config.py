"""Architecture and preprocessing settings of a CSDN model.

Every size that shapes a tensor lives here, so the full CLIP-RN50 model and the
tiny models used in tests and demos are built by the very same code. The config
round-trips through JSON (``config.json`` and the safetensors metadata), which is
what makes a saved model self-describing. A saved config document also carries the
model's provenance beside the architecture (:data:`PROVENANCE_KEY`); the config itself
never holds it (it is ``model.provenance``): :func:`split_provenance` and
:func:`join_provenance` take the two apart and put them together.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csdn.errors import SettingError
from csdn.system.resources import weights_dir

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROMPT_TEMPLATE = "A photo of a X X X X person."

CONFIG_FORMAT_VERSION = 2  # nested sections and an architecture name; version 1 (flat) is still read
READABLE_CONFIG_VERSIONS = (1, 2)
PRESET_FORMAT_VERSION = 2
READABLE_PRESET_VERSIONS = (1, 2)
PRESETS_FOLDER = "architectures"  # inside weights/ (csdn.weights): one <architecture>.json per preset
ARCHITECTURES_ENV = "CSDN_ARCHITECTURES"  # more preset folders, os.pathsep-separated
DEFAULT_ARCHITECTURE = "csdn_rn50"
# The tensor layout of CLIP's ModifiedResNet towers under CSDN's names (stems, trunk.layer1-4 of
# Bottlenecks, attnpool, text_encoder): what the BatchNorm folding, the CLIP and the authors' key
# maps are written for. A model class declares its layout; code written for one asks for it.
CLIP_RESNET_LAYOUT = "clip-resnet"
PROVENANCE_KEY = "meta"  # a saved config document's top-level provenance record, beside the architecture

# config.json (format 2): section -> {key in the section: CSDNConfig field}
SECTIONS: dict[str, dict[str, str]] = {
    "vision": {
        "image_size": "image_size",
        "layers": "vision_layers",
        "width": "vision_width",
        "heads": "vision_heads",
        "last_stride": "last_stride",
        "embed_dim": "embed_dim",
    },
    "text": {
        "context_length": "context_length",
        "vocab_size": "vocab_size",
        "width": "text_width",
        "heads": "text_heads",
        "layers": "text_layers",
        "prompt_template": "prompt_template",
        "num_prompt_tokens": "num_prompt_tokens",
    },
    "heads": {"num_classes": "num_classes", "gem_p": "gem_p", "gem_eps": "gem_eps", "fusion_dropout": "fusion_dropout"},
    "preprocess": {"mean": "mean", "std": "std", "interpolation": "interpolation"},
}
# Inclusive ranges of every integer size: a config is untrusted input (it comes with downloaded files), and
# one absurd value (text_layers=100000) would otherwise build modules for minutes before failing.
SIZE_LIMITS: dict[str, tuple[int, int]] = {
    "vision_width": (1, 1024),
    "vision_heads": (1, 1024),
    "embed_dim": (1, 16384),
    "context_length": (1, 4096),
    "vocab_size": (1, 1_000_000),
    "text_width": (1, 16384),
    "text_heads": (1, 1024),
    "text_layers": (1, 128),
    "num_prompt_tokens": (1, 64),
    "num_classes": (1, 10_000_000),
}
BLOCK_LIMIT = 128  # blocks per trunk stage (RN50 has 3, 4, 6, 3)
IMAGE_SIDE_LIMIT = 8192  # pixels per input side


def reject_unknown_fields(data: Mapping[str, Any], schema: type, problem: str, *, exclude: Iterable[str] = ()) -> None:
    """Refuse keys that are not fields of the dataclass ``schema``: ``problem: a, b; known: ...``.

    Configs and registry entries are read from JSON a person may have edited, so a
    misspelt key must stop the load instead of being dropped.
    """
    known = {field.name for field in dataclasses.fields(schema)} - set(exclude)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{problem}: {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def preset_folders() -> list[Path]:
    """Where preset files are read from: the installed ``weights/architectures/``, then each folder
    in ``$CSDN_ARCHITECTURES`` (``os.pathsep``-separated: an organisation's or a test's own backbones)."""
    extra = [Path(folder) for folder in os.environ.get(ARCHITECTURES_ENV, "").split(os.pathsep) if folder]
    return [weights_dir() / PRESETS_FOLDER, *extra]


def _preset_files() -> dict[str, Path]:
    """Architecture name -> its preset file (an installed preset wins over an extra folder's)."""
    files: dict[str, Path] = {}
    for folder in reversed(preset_folders()):
        files.update({path.stem: path for path in folder.glob("*.json")})
    return files


def architecture_names() -> list[str]:
    """The architectures with a preset file, sorted (``["csdn_rn50", "csdn_tiny"]`` as installed)."""
    return sorted(_preset_files())


def _format_version(data: Mapping[str, Any], default: int, readable: Sequence[int], what: str) -> int:
    """``data["format_version"]`` checked: an integer this package reads, else a ValueError saying what to do."""
    version = data.get("format_version", default)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(
            f"{what} has format_version {version!r}; it must be an integer ({', '.join(map(str, readable))})"
        )
    if version not in readable:
        newer = version > max(readable)
        raise ValueError(
            f"{what} has format_version {version}; this csdn-reid reads version(s) {', '.join(map(str, readable))}"
            + (" (upgrade with `pip install -U csdn-reid`)" if newer else "")
        )
    return version


def read_preset(architecture: str) -> dict[str, Any]:
    """The parsed preset file of ``architecture``, its ``config`` as flat :class:`CSDNConfig` fields.

    ``ValueError`` naming the known architectures if it has none. Besides ``config`` a preset
    may say what its backbone is called (``backbone``), how its image side is built (``structure``; both
    templates over the config's fields) and which CLIP weights it starts from (``clip``, a name of the
    registry's ``clip`` table), which the model card, ``csdn info`` and ``csdn publish`` read.
    """
    path = _preset_files().get(architecture)
    if path is None:
        raise ValueError(
            f"unknown architecture {architecture!r}; known: {', '.join(architecture_names()) or 'none'} "
            f"(each is a preset file in {', '.join(map(str, preset_folders()))})"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"architecture preset {path} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise ValueError(f"architecture preset {path} must be an object with a 'config' object")
    version = _format_version(data, 1, READABLE_PRESET_VERSIONS, f"architecture preset {path}")
    if data.get("architecture", architecture) != architecture:
        raise ValueError(
            f"architecture preset {path} names architecture {data['architecture']!r}, not {architecture!r}"
        )
    config = data["config"] if version == 1 else flatten_sections(data["config"], f"architecture preset {path}")
    return {**data, "config": config}


def flatten_sections(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Format-2 sections (``{"vision": {"width": 64}, ...}``) as flat fields (``{"vision_width": 64}``).

    Unknown sections and unknown keys within a section are refused, naming them and the known ones.
    """
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ValueError(
            f"unknown CSDN config field(s) in {where}: {', '.join(unknown)}; known sections: {', '.join(SECTIONS)}"
        )
    flat: dict[str, Any] = {}
    for section, values in data.items():
        if not isinstance(values, Mapping):
            raise ValueError(f"{where}: section {section!r} must be an object, got {type(values).__name__}")
        keys = SECTIONS[section]
        stray = sorted(set(values) - set(keys))
        if stray:
            raise ValueError(
                f"unknown CSDN config field(s) in {where}, section {section!r}: {', '.join(stray)}; "
                f"known: {', '.join(keys)}"
            )
        flat.update({keys[key]: value for key, value in values.items()})
    return flat


def _check_size(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    if value < low:
        raise SettingError(f"{name} must be at least {low} (allowed [{low}, {high}]), got {value}")
    if value > high:
        raise SettingError(f"{name} must be at most {high} (allowed [{low}, {high}]), got {value}")


@dataclass
class CSDNConfig:
    """Sizes of the CSDN image tower, text tower and heads, plus test-time preprocessing.

    The defaults are the paper's model: OpenAI CLIP RN50 with layer4 at stride 1,
    288x144 inputs and 395 identities (SYSU-MM01 training set). ``architecture`` names the
    preset (and, through ``csdn.hub.architectures``, the model class) these sizes belong to.
    The model's provenance (dataset, trial, source checkpoint, metrics) is no part of it: it is
    the model's ``provenance``, saved beside the config (:func:`join_provenance`).
    """

    architecture: str = DEFAULT_ARCHITECTURE
    # image tower (CLIP ModifiedResNet)
    image_size: tuple[int, int] = (288, 144)  # (height, width)
    vision_layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    vision_width: int = 64
    vision_heads: int = 32
    last_stride: int = 1
    embed_dim: int = 1024  # attention-pool projection = text feature size
    # text tower (CLIP transformer)
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int = 512
    text_heads: int = 8
    text_layers: int = 12
    prompt_template: str = PROMPT_TEMPLATE
    num_prompt_tokens: int = 4  # learnable identity tokens (the X positions)
    # heads
    num_classes: int = 395
    gem_p: float = 3.0
    gem_eps: float = 1e-6
    fusion_dropout: float = 0.1
    # preprocessing (ImageNet statistics, as in the paper's code, not CLIP's)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "lanczos"  # resize filter of the test transform

    def __post_init__(self) -> None:
        for name in ("image_size", "vision_layers", "mean", "std"):
            if not isinstance(getattr(self, name), (list, tuple)):
                raise SettingError(f"{name} must be a list of numbers, got {getattr(self, name)!r}")
        self.image_size = tuple(self.image_size)  # type: ignore[assignment]
        self.vision_layers = tuple(self.vision_layers)  # type: ignore[assignment]
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        self.validate()

    # ------------------------------------------------------------------ derived sizes
    @property
    def feature_dim(self) -> int:
        """Channels of the trunk's last feature map (2048 for RN50)."""
        return self.vision_width * 32

    @property
    def downsample(self) -> int:
        """Total stride of the trunk: stem 4, layer2 2, layer3 2, layer4 ``last_stride``."""
        return 16 * self.last_stride

    @property
    def feature_grid(self) -> tuple[int, int]:
        """(height, width) of the trunk's output map: 18x9 for 288x144 inputs."""
        h, w = self.image_size
        return h // self.downsample, w // self.downsample

    @property
    def test_feature_dim(self) -> int:
        """Size of f(x): GeM half plus projection half (3072 for RN50)."""
        return self.feature_dim + self.embed_dim

    def validate(self) -> None:
        """Reject out-of-range or inconsistent sizes and unusable preprocessing statistics, naming the field.

        Every size is bounded (:data:`SIZE_LIMITS`) before anything is built from it.
        """
        if not isinstance(self.architecture, str) or not self.architecture:
            raise SettingError(
                f"architecture must name a preset (e.g. {DEFAULT_ARCHITECTURE!r}), got {self.architecture!r}"
            )
        if len(self.image_size) != 2:
            raise SettingError(f"image_size must be (height, width), got {self.image_size}")
        for side in self.image_size:
            _check_size("image_size", side, 1, IMAGE_SIDE_LIMIT)
        h, w = self.image_size
        for name, (low, high) in SIZE_LIMITS.items():
            _check_size(name, getattr(self, name), low, high)
        if len(self.vision_layers) != 4:
            raise SettingError(f"vision_layers needs four positive block counts, got {self.vision_layers}")
        for blocks in self.vision_layers:
            _check_size("vision_layers", blocks, 1, BLOCK_LIMIT)
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != 3:
                raise SettingError(f"{name} needs one value per RGB channel (3), got {len(values)}: {values}")
            if not all(math.isfinite(v) for v in values):
                raise SettingError(f"{name} {values} holds NaN or infinite values; use finite per-channel statistics")
        if not all(v > 0 for v in self.std):
            raise SettingError(
                f"std {self.std} must be positive in every channel (a std of 0 divides by zero and makes "
                f"every image embed alike); use the statistics the model was trained with, e.g. {IMAGENET_STD}"
            )
        if not (math.isfinite(self.gem_p) and self.gem_p > 0):
            raise SettingError(f"gem_p must be a positive finite number, got {self.gem_p}")
        if not (math.isfinite(self.gem_eps) and self.gem_eps > 0):
            raise SettingError(f"gem_eps must be a positive finite number, got {self.gem_eps}")
        if not 0 <= self.fusion_dropout < 1:
            raise SettingError(f"fusion_dropout must lie in [0, 1), got {self.fusion_dropout}")
        if self.last_stride not in (1, 2):
            raise SettingError(f"last_stride must be 1 or 2, got {self.last_stride}")
        if h % self.downsample or w % self.downsample:
            raise SettingError(
                f"image_size {self.image_size} must be positive multiples of the trunk stride {self.downsample}"
            )
        if self.feature_dim % self.vision_heads:
            raise SettingError(f"vision_heads ({self.vision_heads}) must divide the feature width {self.feature_dim}")
        if self.text_width % self.text_heads:
            raise SettingError(f"text_heads ({self.text_heads}) must divide text_width {self.text_width}")
        if self.prompt_template.split().count("X") != self.num_prompt_tokens:
            raise SettingError(
                f"prompt_template {self.prompt_template!r} must hold num_prompt_tokens="
                f"{self.num_prompt_tokens} 'X' placeholders"
            )

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, architecture: str, **overrides: Any) -> CSDNConfig:
        """The config of a named architecture (``weights/architectures/<name>.json``), with ``overrides``.

        Presets are data, so adding an architecture's sizes touches no code; see
        :func:`architecture_names` for the installed ones.
        """
        settings = {**read_preset(architecture)["config"], "architecture": architecture}
        settings.update(overrides)
        reject_unknown_fields(settings, cls, f"unknown CSDN config field(s) for the {architecture!r} preset")
        return cls(**settings)

    @classmethod
    def rn50(cls, num_classes: int = 395, **overrides: Any) -> CSDNConfig:
        """The paper's CLIP-RN50 model (the ``csdn_rn50`` preset)."""
        return cls.preset("csdn_rn50", num_classes=num_classes, **overrides)

    @classmethod
    def tiny(cls, num_classes: int = 8, **overrides: Any) -> CSDNConfig:
        """A few-hundred-kilobyte model with the same structure, for tests and demos (the ``csdn_tiny`` preset)."""
        return cls.preset("csdn_tiny", num_classes=num_classes, **overrides)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Format 2: the architecture's name and the nested sections (the provenance is :func:`join_provenance`'s)."""
        sections = {
            section: {key: _plain(getattr(self, name)) for key, name in keys.items()}
            for section, keys in SECTIONS.items()
        }
        return {
            "model_type": "csdn",
            "format_version": CONFIG_FORMAT_VERSION,
            "architecture": self.architecture,
            **sections,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CSDNConfig:
        """A config from :meth:`to_dict`'s form (format 2) or a flat format-1 one (whose architecture is inferred).

        A saved document with its provenance record is read with :func:`split_provenance`; here that
        record is refused, so no caller drops it unknowingly.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"a CSDN config must be a JSON object, got {type(data).__name__}")
        if PROVENANCE_KEY in data:
            raise ValueError(
                f"this CSDN config holds a provenance record ({PROVENANCE_KEY!r}), which is the model's, not the "
                "config's: read a saved config document with csdn.config.split_provenance, which returns both"
            )
        data = dict(data)
        model_type = data.pop("model_type", "csdn")
        if model_type != "csdn":
            raise ValueError(f"this is a config for model_type={model_type!r}, not a CSDN model")
        implied = 2 if set(SECTIONS) & set(data) else 1  # an unversioned config says by its shape
        version = _format_version(data, implied, READABLE_CONFIG_VERSIONS, "the CSDN config")
        data.pop("format_version", None)
        if version == 1:
            reject_unknown_fields(data, cls, "unknown CSDN config field(s)", exclude={"architecture"})
            settings = data
            settings.setdefault("architecture", infer_architecture(settings))
        else:
            architecture = data.pop("architecture", None)
            if architecture is None:
                raise ValueError("a format-2 CSDN config needs its 'architecture' (a preset name, e.g. 'csdn_rn50')")
            settings = {**flatten_sections(data, "the CSDN config"), "architecture": architecture}
        return cls(**settings)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CSDNConfig:
        return cls.from_dict(json.loads(text))


def split_provenance(data: Mapping[str, Any]) -> tuple[CSDNConfig, dict[str, Any]]:
    """A saved config document (``config.json``, the weights' metadata, a training checkpoint's
    ``model_config``; format 1 or 2) as its :class:`CSDNConfig` and its provenance record (a copy;
    ``{}`` when it has none)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a CSDN config must be a JSON object, got {type(data).__name__}")
    settings = dict(data)
    provenance = settings.pop(PROVENANCE_KEY, {})
    if not isinstance(provenance, dict):
        raise SettingError(
            f"{PROVENANCE_KEY} (the provenance record) must be an object, got {type(provenance).__name__}"
        )
    return CSDNConfig.from_dict(settings), copy.deepcopy(provenance)


def join_provenance(config: CSDNConfig, provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The saved config document: ``config``'s format-2 form with (a copy of) ``provenance`` under
    :data:`PROVENANCE_KEY`, beside the sections."""
    return {**config.to_dict(), PROVENANCE_KEY: copy.deepcopy(dict(provenance))}


def document_json(config: CSDNConfig, provenance: Mapping[str, Any]) -> str:
    """:func:`join_provenance`'s document as the JSON text ``config.json`` and the weights' metadata hold."""
    return json.dumps(join_provenance(config, provenance), indent=2, sort_keys=True)


def infer_architecture(settings: Mapping[str, Any]) -> str:
    """The architecture of a format-1 config, which names none: the preset whose tower sizes it has.

    Format 1 knew one model family (CSDN over CLIP's ModifiedResNet), so only the sizes tell its
    installed presets apart; sizes of no preset are that family's small preset, ``csdn_tiny``. CLIP
    and the authors' checkpoints, which name no architecture either, are read the same way.
    """
    towers = ("vision_layers", "vision_width", "text_width", "text_layers")
    defaults = {key: getattr(CSDNConfig, key) for key in towers}
    for name in sorted(path.stem for path in (weights_dir() / PRESETS_FOLDER).glob("*.json")):
        preset = {**defaults, **read_preset(name)["config"]}
        if all(_plain(settings.get(key, defaults[key])) == _plain(preset[key]) for key in towers):
            return name
    return "csdn_tiny"


def _plain(value: Any) -> Any:
    """A JSON-ready value: tuples as lists."""
    return list(value) if isinstance(value, tuple) else value
