"""The authors' released CSDN checkpoint <-> csdn models.

The official checkpoint is a ``torch.save`` of an ``nn.DataParallel`` state dict
(every key starts with ``module.``). Its names map onto ours by prefix; the
mapping is strict in both directions, so a checkpoint of another architecture,
a truncated file or a renamed tensor is reported by name instead of leaving
random weights behind.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import torch

from csdn.config import CLIP_RESNET_LAYOUT, CSDNConfig, infer_architecture
from csdn.errors import CheckpointError, setting_name
from csdn.hub.architectures import model_class
from csdn.io.provenance import CONVERTED, WEIGHTS_KEY
from csdn.io.statedict import mismatch_report, nonfinite_tensor
from csdn.model.network import CSDN
from csdn.system.fileio import sha256_file
from csdn.system.torchfile import load_torch_file

_STEM_LAYERS = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3")

# (official prefix, csdn prefix); the first match wins.
_PREFIXES: tuple[tuple[str, str], ...] = (
    *((f"image_encoder1.{i}.", f"stem_visible.{name}.") for i, name in enumerate(_STEM_LAYERS)),
    *((f"image_encoder2.{i}.", f"stem_infrared.{name}.") for i, name in enumerate(_STEM_LAYERS)),
    *((f"image_encoder.{i}.", f"trunk.layer{i + 1}.") for i in range(4)),
    ("attnpool.", "attnpool."),
    ("classifier.GEM.", "gem_head.gem."),
    ("classifier.BN.", "gem_head.bn."),
    ("classifier.classifier.", "gem_head.classifier."),
    ("classifier2.BN.", "proj_head.bn."),
    ("classifier2.classifier.", "proj_head.classifier."),
    ("prompt_learner1.", "prompt_visible."),
    ("prompt_learner2.", "prompt_infrared."),
    ("text_encoder.", "text_encoder."),
    ("attention_fusion.embedding_q.", "fusion.q_proj."),
    ("attention_fusion.embedding_k.", "fusion.k_proj."),
    ("attention_fusion.embedding_v.", "fusion.v_proj."),
    ("attention_fusion.embedding_common.0.", "fusion.out_proj."),
)


def _rename(key: str, table: tuple[tuple[str, str], ...]) -> str | None:
    for source, target in table:
        if key.startswith(source):
            return target + key[len(source) :]
    return None


def official_to_csdn_key(key: str) -> str | None:
    """Our name for an official key (with or without ``module.``), or None if it has no counterpart."""
    return _rename(key.removeprefix("module."), _PREFIXES)


def csdn_to_official_key(key: str) -> str | None:
    """The official (DataParallel) name of one of our keys."""
    name = _rename(key, tuple((b, a) for a, b in _PREFIXES))
    return None if name is None else "module." + name


def read_official(path: str | Path) -> dict[str, torch.Tensor]:
    """Load the official checkpoint safely (``weights_only``) and return its tensor state dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = load_torch_file(path, "checkpoint of the authors' CSDN")
    for wrapper in ("state_dict", "net", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{path} holds no state dict")
    tensors = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
    problem = nonfinite_tensor(tensors)
    if problem:
        raise CheckpointError(
            f"{path}: {problem}; the checkpoint is corrupted (or was saved from a diverged training run), "
            "so nothing was converted: download it again"
        )
    return tensors


def config_from_official(state: Mapping[str, torch.Tensor], image_size: tuple[int, int] = (288, 144)) -> CSDNConfig:
    """Infer architecture sizes and the number of identities from the tensors' shapes."""
    state = {key.removeprefix("module."): value for key, value in state.items()}
    needed = (
        "image_encoder1.0.weight",
        "attnpool.c_proj.weight",
        "attnpool.positional_embedding",
        "prompt_learner1.cls_ctx",
        "text_encoder.ln_final.weight",
        "text_encoder.positional_embedding",
    )
    missing = [key for key in needed if key not in state]
    if missing:
        raise CheckpointError(f"not an official CSDN checkpoint: missing {', '.join('module.' + k for k in missing)}")
    layers = tuple(
        len({int(m.group(1)) for key in state if (m := re.match(rf"image_encoder\.{i}\.(\d+)\.", key))})
        for i in range(4)
    )
    width = state["image_encoder1.0.weight"].shape[0] * 2
    text_width = state["text_encoder.ln_final.weight"].shape[0]
    num_classes, num_tokens, _ = state["prompt_learner1.cls_ctx"].shape
    text_layers = len(
        {int(m.group(1)) for key in state if (m := re.match(r"text_encoder\.transformer\.resblocks\.(\d+)\.", key))}
    )
    towers = {"vision_layers": layers, "vision_width": width, "text_width": text_width, "text_layers": text_layers}
    config = CSDNConfig(
        architecture=infer_architecture(towers),
        image_size=image_size,
        vision_layers=cast("tuple[int, int, int, int]", layers),
        vision_width=width,
        vision_heads=width * 32 // 64,
        embed_dim=state["attnpool.c_proj.weight"].shape[0],
        context_length=state["text_encoder.positional_embedding"].shape[0],
        text_width=text_width,
        text_heads=max(text_width // 64, 1),
        text_layers=text_layers,
        num_prompt_tokens=num_tokens,
        num_classes=num_classes,
    )
    tokens = state["attnpool.positional_embedding"].shape[0]
    rows, cols = config.feature_grid
    if tokens != rows * cols + 1:
        name = setting_name("image_size")
        raise CheckpointError(
            f"the checkpoint's attention pool has {tokens} positions, but {name} {tuple(image_size)} gives a "
            f"{rows}x{cols} grid ({rows * cols + 1} positions); pass the {name} it was trained with"
        )
    return config


def load_official_state(model: CSDN, state: Mapping[str, torch.Tensor]) -> None:
    """Copy an official state dict into ``model``; every key must match, by name and shape."""
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, value in state.items():
        name = official_to_csdn_key(key)
        if name is None or name not in own:
            unexpected.append(key)
        else:
            mapped[name] = value
    missing = sorted(csdn_to_official_key(k) or k for k in own if k not in mapped)
    wrong = [
        f"{k}: {tuple(v.shape)} in checkpoint, {tuple(own[k].shape)} in model"
        for k, v in mapped.items()
        if v.shape != own[k].shape
    ]
    problems = mismatch_report(missing, sorted(unexpected), wrong)
    if problems:
        raise CheckpointError("the checkpoint does not match the CSDN architecture:\n  " + "\n  ".join(problems))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in mapped.items()}, strict=True)


def from_official(
    path: str | Path,
    *,
    image_size: tuple[int, int] = (288, 144),
    dataset: str | None = None,
) -> CSDN:
    """Load the authors' released checkpoint (e.g. ``model_119.pth``) as a CSDN model in eval mode.

    No CLIP weights are needed: the checkpoint already holds the text encoder and
    the prompt templates' token embeddings. ``dataset`` is recorded in the model's
    ``provenance`` (saved as ``meta``) and shown on the model card.
    """
    state = read_official(path)
    config = config_from_official(state, image_size)
    cls = model_class(config.architecture)
    if getattr(cls, "layout", None) != CLIP_RESNET_LAYOUT:  # the official names are those of this layout
        raise CheckpointError(f"architecture {config.architecture!r} has no official checkpoint layout")
    model = cls(config)
    load_official_state(model, state)
    model.provenance.update(source=Path(path).name, source_sha256=sha256_file(path), init="official checkpoint")
    model.provenance[WEIGHTS_KEY] = CONVERTED
    if dataset:
        model.provenance["dataset"] = dataset
    return model.eval()


def to_official_state_dict(model: CSDN) -> dict[str, torch.Tensor]:
    """The model's weights under the official DataParallel names (for the authors' code)."""
    out = {}
    for key, value in model.state_dict().items():
        name = csdn_to_official_key(key)
        if name is None:
            raise CheckpointError(f"{key} has no official counterpart")
        out[name] = value.clone()
    return out
