"""What each stage trains and the loss of one step.

1. prompts: the two prompt learners, supervised contrastive image<->text loss
   against fixed image projections;
2. fusion (SII): the fusion module, the same loss on the fused text;
3. image (HSE): stems, trunk, attention pool and heads, with identity
   cross-entropy, MSEL, weighted triplet and the fused-text classifier losses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from csdn.model.network import CSDN
from csdn.train.config import TrainConfig
from csdn.train.losses import msel_loss, supcon_loss, wrt_triplet_loss

STAGE_NAMES = {1: "prompts", 2: "fusion", 3: "image"}
Losses = dict[str, torch.Tensor]


def autocast_factory(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A no-argument factory of the autocast context for ``precision`` ("fp32": no autocast).

    bfloat16 runs on CUDA and on CPUs (fastest where the processor has native
    bf16 instructions); float16 needs CUDA and its gradient scaler.
    """
    if precision == "fp32":
        return contextlib.nullcontext
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision='fp16' needs a CUDA device; use 'bf16' or 'fp32' on {device}")
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"precision={precision!r} (mixed precision) runs on CUDA or CPU, not on {device}")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def _trainable(params: Iterator[nn.Parameter], frozen: set[int]) -> list[nn.Parameter]:
    """Parameters of a group except the frozen ones."""
    return [p for p in params if id(p) not in frozen]


def recipe_frozen(model: CSDN, config: TrainConfig) -> set[int]:
    """Parameters the recipe keeps fixed in every stage: the BNNeck biases under ``recipe="clean"``."""
    if config.rules.train_bnneck_bias:
        return set()
    return {id(model.gem_head.bn.bias), id(model.proj_head.bn.bias)}


def parameter_groups(model: CSDN, stage: int, config: TrainConfig, frozen: set[int]) -> list[dict]:
    """Optimiser groups of ``stage``; ``lr_factor`` scales the stage's base learning rate.

    ``frozen`` holds parameters the caller keeps fixed; the recipe's own
    (:func:`recipe_frozen`) are added here.
    """
    frozen = frozen | recipe_frozen(model, config)
    if stage == 1:
        return [{"params": _trainable(model.prompt_parameters(), frozen), "weight_decay": config.stage1_weight_decay}]
    if stage == 2:
        return [{"params": _trainable(model.fusion_parameters(), frozen), "weight_decay": config.stage2_weight_decay}]
    if stage == 3:
        return [
            {"params": _trainable(model.image_parameters(), frozen), "weight_decay": config.stage3_weight_decay},
            {
                "params": _trainable(model.head_parameters(), frozen),
                "weight_decay": config.stage3_weight_decay,
                "lr_factor": config.head_lr_factor,
            },
        ]
    raise ValueError(f"stage must be 1, 2 or 3, got {stage!r}")


def make_optimizer(model: CSDN, stage: int, config: TrainConfig, frozen: set[int]) -> torch.optim.Adam:
    """Adam with L2 weight decay over the stage's groups; everything else stops requiring gradients.

    The fused kernel (one pass over all parameters instead of a Python loop per
    tensor) is used where torch has it for the parameters' device.
    """
    groups = parameter_groups(model, stage, config, frozen)
    trained = {id(p) for group in groups for p in group["params"]}
    for param in model.parameters():
        param.requires_grad_(id(param) in trained)
    device = next(model.parameters()).device
    return torch.optim.Adam(groups, lr=0.0, fused=device.type in ("cpu", "cuda"))


def prompt_step(
    model: CSDN,
    visible: torch.Tensor,
    visible_labels: torch.Tensor,
    infrared: torch.Tensor,
    infrared_labels: torch.Tensor,
) -> Losses:
    """Stage 1 on fixed image projections of both modalities, each against its own prompts."""
    text = torch.cat([model.text_features(visible_labels, "visible"), model.text_features(infrared_labels, "infrared")])
    return _contrastive(torch.cat([visible, infrared]), text, torch.cat([visible_labels, infrared_labels]))


def fusion_step(model: CSDN, image: torch.Tensor, labels: torch.Tensor) -> Losses:
    """Stage 2 on a batch of fixed image projections against the fused text."""
    return _contrastive(image, model.fused_text_features(labels), labels)


def _contrastive(image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor) -> Losses:
    i2t = supcon_loss(image, text, labels, labels)
    t2i = supcon_loss(text, image, labels, labels)
    return {"loss": i2t + t2i, "i2t": i2t, "t2i": t2i}


def image_step(
    model: CSDN,
    batch: dict[str, torch.Tensor],
    text: torch.Tensor,
    config: TrainConfig,
    autocast: Callable[[], contextlib.AbstractContextManager],
) -> Losses:
    """Stage 3 on one identity batch: rows are [visible view 1; visible view 2; infrared].

    ``text`` holds the fused text features of every identity (the fixed HSE
    classifier). Terms whose weight is 0 are not computed.
    """
    labels = batch["labels"]
    n = labels.shape[0]
    with autocast():
        out = model.forward_train(torch.cat([batch["visible"], batch["exchange"]]), batch["infrared"])
    gem, proj = out.gem.float(), out.projection.float()
    pids = labels.repeat(3)
    first_views = torch.cat([torch.arange(n), torch.arange(2 * n, 3 * n)]).to(labels.device)
    paired = labels.repeat(2)
    parts: Losses = {}
    if config.id_weight:
        smooth = config.label_smoothing
        parts["id"] = F.cross_entropy(out.gem_logits.float(), pids, label_smoothing=smooth) + F.cross_entropy(
            out.proj_logits.float(), pids, label_smoothing=smooth
        )
    if config.msel_weight:
        parts["msel"] = msel_loss(gem[first_views], paired, config.images_per_id) + msel_loss(
            proj[first_views], paired, config.images_per_id
        )
    if config.triplet_weight:
        stable = config.rules.stable_triplet
        parts["triplet"] = wrt_triplet_loss(gem, pids, stable=stable) + wrt_triplet_loss(proj, pids, stable=stable)
    if config.visible_i2t_weight:
        parts["i2t_visible"] = F.cross_entropy(proj[:n] @ text.t(), labels)
    if config.infrared_i2t_weight:
        parts["i2t_infrared"] = F.cross_entropy(proj[2 * n :] @ text.t(), labels)
    weights = {
        "id": config.id_weight,
        "msel": config.msel_weight,
        "triplet": config.triplet_weight,
        "i2t_visible": config.visible_i2t_weight,
        "i2t_infrared": config.infrared_i2t_weight,
    }
    total = sum((weights[name] * value for name, value in parts.items()), torch.zeros((), device=labels.device))
    return {"loss": total, **parts}
