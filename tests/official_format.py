"""A synthetic checkpoint in the authors' format, built from the key table of DESIGN section 4.

It is derived from OpenAI's CLIP module names and the table alone, independently of
csdn.hub.official's mapping, so the conversion is checked against the format, not itself.
"""

from __future__ import annotations

import torch

from csdn import CSDNConfig
from csdn.model.clip_code import clip_model

STEM_ORDER = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3")


def official_state_dict(config: CSDNConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under every key of an official CSDN checkpoint for ``config``."""
    gen = torch.Generator().manual_seed(seed)
    clip = (
        clip_model()
        .CLIP(
            config.embed_dim,
            224,
            config.vision_layers,
            config.vision_width,
            None,
            config.context_length,
            config.vocab_size,
            config.text_width,
            config.text_heads,
            config.text_layers,
        )
        .state_dict()
    )
    shapes: dict[str, tuple[int, ...]] = {}
    for key, value in clip.items():
        parts = key.split(".")
        if key.startswith("visual.") and parts[1] in STEM_ORDER:
            index = STEM_ORDER.index(parts[1])
            for stem in ("image_encoder1", "image_encoder2"):
                shapes[f"{stem}.{index}.{'.'.join(parts[2:])}"] = tuple(value.shape)
        elif key.startswith("visual.layer"):
            shapes[f"image_encoder.{int(parts[1][-1]) - 1}.{'.'.join(parts[2:])}"] = tuple(value.shape)
        elif key.startswith("visual.attnpool."):
            shapes["attnpool." + ".".join(parts[2:])] = tuple(value.shape)
        elif key.startswith(("transformer.", "ln_final.")) or key in ("positional_embedding", "text_projection"):
            shapes["text_encoder." + key] = tuple(value.shape)
    rows, cols = config.feature_grid
    shapes["attnpool.positional_embedding"] = (rows * cols + 1, config.feature_dim)
    n, d, e, w = config.num_classes, config.feature_dim, config.embed_dim, config.text_width
    shapes["classifier.GEM.p"] = (1,)
    for head, dim in (("classifier", d), ("classifier2", e)):
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{head}.BN.{name}"] = (dim,)
        shapes[f"{head}.BN.num_batches_tracked"] = ()
        shapes[f"{head}.classifier.weight"] = (n, dim)
    for learner in ("prompt_learner1", "prompt_learner2"):
        shapes[f"{learner}.cls_ctx"] = (n, config.num_prompt_tokens, w)
        shapes[f"{learner}.token_prefix"] = (1, 5, w)
        shapes[f"{learner}.token_suffix"] = (1, config.context_length - 5 - config.num_prompt_tokens, w)
    for part in ("q", "k", "v", "common"):
        shapes[f"attention_fusion.embedding_{part}.0.weight"] = (e, e)
        shapes[f"attention_fusion.embedding_{part}.0.bias"] = (e,)

    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state["module." + key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state["module." + key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state["module." + key] = torch.randn(shape, generator=gen) * 0.05
    state["module.classifier.GEM.p"] = torch.tensor([3.2])
    return state
