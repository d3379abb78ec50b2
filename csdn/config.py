"""Architecture and preprocessing settings of a CSDN model.

Every size that shapes a tensor lives here, so the full CLIP-RN50 model and the
tiny models used in tests and demos are built by the very same code. The config
round-trips through JSON (``config.json`` and the safetensors metadata), which is
what makes a saved model self-describing.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from csdn.errors import SettingError
from csdn.system.resources import weights_dir

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROMPT_TEMPLATE = "A photo of a X X X X person."

CONFIG_FORMAT_VERSION = 1
PRESET_FORMAT_VERSION = 1
PRESETS_FOLDER = "architectures"  # inside weights/ (csdn.weights): one <architecture>.json per preset


def reject_unknown_fields(data: Mapping[str, Any], schema: type, problem: str, *, exclude: Iterable[str] = ()) -> None:
    """Refuse keys that are not fields of the dataclass ``schema``: ``problem: a, b; known: ...``.

    Configs and registry entries are read from JSON a person may have edited, so a
    misspelt key must stop the load instead of being dropped.
    """
    known = {field.name for field in dataclasses.fields(schema)} - set(exclude)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{problem}: {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def architecture_names() -> list[str]:
    """The architectures with a preset file, sorted (``["csdn_rn50", "csdn_tiny"]`` as installed)."""
    return sorted(path.stem for path in (weights_dir() / PRESETS_FOLDER).glob("*.json"))


def read_preset(architecture: str) -> dict[str, Any]:
    """The parsed preset file of ``architecture``; ``ValueError`` naming the known ones if it has none."""
    path = weights_dir() / PRESETS_FOLDER / f"{architecture}.json"
    if not path.is_file():
        raise ValueError(
            f"unknown architecture {architecture!r}; known: {', '.join(architecture_names()) or 'none'} "
            f"(each is a preset file in {path.parent})"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"architecture preset {path} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise ValueError(f"architecture preset {path} must be an object with a 'config' object")
    version = data.get("format_version", PRESET_FORMAT_VERSION)
    if version != PRESET_FORMAT_VERSION:
        raise ValueError(
            f"architecture preset {path} has format_version {version}; this csdn-reid reads version "
            f"{PRESET_FORMAT_VERSION} (upgrade with `pip install -U csdn-reid`)"
        )
    if data.get("architecture", architecture) != architecture:
        raise ValueError(
            f"architecture preset {path} names architecture {data['architecture']!r}, not {architecture!r}"
        )
    return data


@dataclass
class CSDNConfig:
    """Sizes of the CSDN image tower, text tower and heads, plus test-time preprocessing.

    The defaults are the paper's model: OpenAI CLIP RN50 with layer4 at stride 1,
    288x144 inputs and 395 identities (SYSU-MM01 training set).
    """

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
    # free-form provenance (dataset, source checkpoint, ...); not architecture
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image_size = tuple(int(v) for v in self.image_size)  # type: ignore[assignment]
        self.vision_layers = tuple(int(v) for v in self.vision_layers)  # type: ignore[assignment]
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
        """Reject inconsistent sizes and unusable preprocessing statistics, naming the field."""
        if len(self.image_size) != 2:
            raise SettingError(f"image_size must be (height, width), got {self.image_size}")
        h, w = self.image_size
        if h <= 0 or w <= 0:
            raise SettingError(f"image_size {self.image_size} must be positive (height, width)")
        for name in ("vision_width", "embed_dim", "context_length", "vocab_size", "text_width", "num_prompt_tokens"):
            value = getattr(self, name)
            if value < 1:
                raise SettingError(f"{name} must be at least 1, got {value}")
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
        if h % self.downsample or w % self.downsample or h <= 0 or w <= 0:
            raise SettingError(
                f"image_size {self.image_size} must be positive multiples of the trunk stride {self.downsample}"
            )
        if len(self.vision_layers) != 4 or min(self.vision_layers) < 1:
            raise SettingError(f"vision_layers needs four positive block counts, got {self.vision_layers}")
        if self.vision_heads < 1 or self.text_heads < 1:
            raise SettingError(
                f"vision_heads and text_heads must be at least 1, got {self.vision_heads}, {self.text_heads}"
            )
        if self.feature_dim % self.vision_heads:
            raise SettingError(f"vision_heads ({self.vision_heads}) must divide the feature width {self.feature_dim}")
        if self.text_width % self.text_heads:
            raise SettingError(f"text_heads ({self.text_heads}) must divide text_width {self.text_width}")
        if self.num_classes < 1:
            raise SettingError(f"num_classes must be at least 1, got {self.num_classes}")
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
        settings = dict(read_preset(architecture)["config"])
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
        data = dataclasses.asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        return {"model_type": "csdn", "format_version": CONFIG_FORMAT_VERSION, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CSDNConfig:
        data = dict(data)
        model_type = data.pop("model_type", "csdn")
        if model_type != "csdn":
            raise ValueError(f"this is a config for model_type={model_type!r}, not a CSDN model")
        version = data.pop("format_version", CONFIG_FORMAT_VERSION)
        if version > CONFIG_FORMAT_VERSION:
            raise ValueError(
                f"config format_version {version} is newer than this csdn-reid understands "
                f"({CONFIG_FORMAT_VERSION}); upgrade with `pip install -U csdn-reid`"
            )
        reject_unknown_fields(data, cls, "unknown CSDN config field(s)")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CSDNConfig:
        return cls.from_dict(json.loads(text))
