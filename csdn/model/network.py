"""The CSDN network: modality-specific stems, a shared CLIP-RN50 trunk, two heads, and the text side."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from csdn.config import CLIP_RESNET_LAYOUT, CSDNConfig
from csdn.errors import ImageTensorError
from csdn.images.transforms import nonfinite_rows
from csdn.io.pretrained import PretrainedMixin
from csdn.modality import normalize_modality
from csdn.model.clip_code import tokenize
from csdn.model.layers import (
    BNNeckHead,
    GeMHead,
    PromptLearner,
    SemanticFusion,
    Stem,
    TextEncoder,
    Trunk,
    attention_pool,
)
from csdn.model.pool import single_query_attention_pool


@dataclass
class TrainOutput:
    """What the training losses need from one forward pass (rows follow the input order)."""

    gem: torch.Tensor  # [N, feature_dim] GeM-pooled trunk features, before the BNNeck
    gem_logits: torch.Tensor  # [N, num_classes]
    projection: torch.Tensor  # [N, embed_dim] attention-pool projection
    proj_logits: torch.Tensor  # [N, num_classes]


class _MeanOfPowers(torch.autograd.Function):
    """``mean over H, W of clamp(x, eps) ** p`` (``[N, C, H, W] -> [N, C]``) with a hand-written backward.

    The arithmetic of :class:`csdn.model.layers.GeM` up to its outer root. Autograd's
    backward of ``pow(tensor, tensor)`` re-evaluates powers and logarithms over the
    whole trunk map in several passes; this one reuses the forward's ``x ** p``:
    ``d/dx = p x^p / x`` where ``x >= eps`` (clamp passes nothing below) and
    ``d/dp = x^p log x``. About 2.5x less time for GeM in a training step.
    """

    @staticmethod
    def forward(ctx, fmap: torch.Tensor, p: torch.Tensor, eps: float) -> torch.Tensor:
        clamped = fmap.clamp(min=eps)
        powered = clamped.pow(p)  # promotes a bf16 map (autocast) to p's float32, as the module does
        ctx.eps = eps
        ctx.save_for_backward(fmap, p, clamped, powered)
        return powered.mean(dim=(2, 3))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        fmap, p, clamped, powered = ctx.saved_tensors
        scaled = powered * (grad / (fmap.shape[2] * fmap.shape[3]))[:, :, None, None]  # dL/d(x^p) * x^p
        grad_p = (scaled * clamped.log()).sum().reshape(p.shape) if ctx.needs_input_grad[1] else None
        grad_map = None
        if ctx.needs_input_grad[0]:
            grad_map = scaled.mul_(p).div_(clamped).masked_fill_(fmap < ctx.eps, 0.0).to(fmap.dtype)
        return grad_map, grad_p, None


class CSDN(PretrainedMixin, nn.Module):
    """CLIP-Driven Semantic Discovery Network for visible-infrared person re-identification.

    Build with random weights from a :class:`CSDNConfig`; load trained weights with
    :func:`csdn.load` (or :meth:`from_pretrained`), or start from CLIP with :func:`csdn.hub.clip.from_clip`.

    A backbone with another tensor layout subclasses this, builds its own ``stem_visible``,
    ``stem_infrared`` and ``trunk`` (:meth:`build_tower`) and declares its own ``layout`` (and
    ``int8_float_modules``, named in its own modules); code
    written for CLIP's ModifiedResNet (the folded fast path, the CLIP and official key maps)
    asks for :data:`csdn.config.CLIP_RESNET_LAYOUT` and steps aside or refuses otherwise.
    """

    layout: ClassVar[str] = CLIP_RESNET_LAYOUT
    # modules (names or name prefixes) an int8 export keeps in float32: the stems see raw pixels, and
    # the first block's rounding error travels through the whole trunk (csdn.export.quantize)
    int8_float_modules: ClassVar[tuple[str, ...]] = ("stem_visible", "stem_infrared", "trunk.layer1.0")

    def __init__(self, config: CSDNConfig | None = None):
        super().__init__()
        self.config = config = config or CSDNConfig()
        self.provenance = {}  # where the weights came from (PretrainedMixin); a new model has none
        self.stem_visible, self.stem_infrared, self.trunk = self.build_tower(config)
        self.attnpool = attention_pool(config)
        self.gem_head = GeMHead(config.feature_dim, config.num_classes, config.gem_p, config.gem_eps)
        self.proj_head = BNNeckHead(config.embed_dim, config.num_classes)

        tokens = tokenize(config.prompt_template, config.context_length)
        eot_index = max(range(len(tokens)), key=tokens.__getitem__)  # <eot> has the largest id
        learner = PromptLearner(config.num_classes, config.num_prompt_tokens, config.text_width, config.context_length)
        self.prompt_visible = learner
        self.prompt_infrared = copy.deepcopy(learner)
        self.text_encoder = TextEncoder(config, eot_index)
        self.fusion = SemanticFusion(config.embed_dim, config.fusion_dropout)
        self.reset_parameters()

    @staticmethod
    def build_tower(config: CSDNConfig) -> tuple[nn.Module, nn.Module, nn.Module]:
        """The visible stem, the infrared stem and the shared trunk: ``[N,3,H,W]`` -> stem map -> trunk map
        of ``config.feature_dim`` channels at stride ``config.downsample``. CLIP's ModifiedResNet here."""
        return Stem(config.vision_width), Stem(config.vision_width), Trunk(config)

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random initialisation following CLIP's recipe for the shared parts.

        Residual branches start as identities (zeroed last BatchNorm of each block),
        and the prompt template's token embeddings are drawn like a fresh CLIP
        token table, so a model trained from scratch has a usable text side.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for name, param in self.trunk.named_parameters():
            if name.endswith("bn3.weight"):  # CLIP's Bottleneck; another trunk has no such name
                nn.init.zeros_(param)
        pool: Any = self.attnpool  # CLIP's untyped AttentionPool2d
        std = pool.c_proj.in_features**-0.5
        nn.init.normal_(pool.positional_embedding, std=std)
        for proj in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
            nn.init.normal_(proj.weight, std=std)
            nn.init.zeros_(proj.bias)
        for head in (self.gem_head, self.proj_head):
            nn.init.normal_(head.classifier.weight, std=0.001)
        self.gem_head.gem.p.fill_(self.config.gem_p)

        width, layers = self.config.text_width, self.config.text_layers
        for learner in (self.prompt_visible, self.prompt_infrared):
            nn.init.normal_(learner.cls_ctx, std=0.02)
        nn.init.normal_(self.prompt_visible.token_prefix, std=0.02)
        nn.init.normal_(self.prompt_visible.token_suffix, std=0.02)
        self.prompt_infrared.token_prefix.copy_(self.prompt_visible.token_prefix)
        self.prompt_infrared.token_suffix.copy_(self.prompt_visible.token_suffix)
        text = self.text_encoder
        nn.init.normal_(text.positional_embedding, std=0.01)
        nn.init.normal_(text.text_projection, std=width**-0.5)
        for block in text.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width**-0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=(width**-0.5) * ((2 * layers) ** -0.5))
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=(width**-0.5) * ((2 * layers) ** -0.5))

    # ------------------------------------------------------------------ image side
    def check_images(self, x: torch.Tensor) -> None:
        """Refuse anything but finite float images ``[N,3,H,W]`` of the model's input size."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a preprocessed image tensor [N,3,H,W], got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(
                f"preprocessed images must be a float tensor, got {x.dtype}; "
                "pass raw images to embed_image() to have them decoded and normalised"
            )
        height, width = self.config.image_size
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (height, width):
            raise ImageTensorError(
                f"expected preprocessed images of shape [N,3,{height},{width}], got {list(x.shape)}; "
                "pass raw images to embed_image() to have them resized"
            )
        bad = nonfinite_rows(x)
        if bad:
            raise ImageTensorError(
                f"{bad[0]} of {x.shape[0]} preprocessed images hold NaN or infinite values (batch rows {bad[1]}); "
                "their features would be meaningless. Check the code that produced the tensor, "
                "or pass raw images to embed_image() to have them preprocessed"
            )

    def _stem(self, modality: str) -> nn.Module:
        return self.stem_visible if normalize_modality(modality) == "visible" else self.stem_infrared

    def feature_map(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """Trunk output ``[N, feature_dim, rows, cols]`` of preprocessed images of one modality."""
        self.check_images(x)
        return self.trunk(self._stem(modality)(x))

    def _project(self, fmap: torch.Tensor) -> torch.Tensor:
        """The attention-pool projection of a trunk map.

        Computed in the exact single-query form of CLIP's pool (:mod:`csdn.model.pool`):
        the same values and gradients to float rounding, ~70x less work, so one
        path serves inference and training alike.
        """
        return single_query_attention_pool(self.attnpool, fmap)

    def features_from_map(self, fmap: torch.Tensor) -> torch.Tensor:
        gem = self.gem_head.bn(self.gem_head.gem(fmap))
        projection = self._project(fmap)
        return torch.cat([F.normalize(gem, dim=1), F.normalize(projection, dim=1)], dim=1)

    def image_features(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """The test feature f(x) ``[N, feature_dim + embed_dim]``.

        ``concat(l2norm(BN(GeM(map))), l2norm(projection))``: each half has unit norm.
        Uses the module's mode, so call ``.eval()`` first for the inference feature.
        """
        return self.features_from_map(self.feature_map(x, modality))

    def image_projection(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """The attention-pool projection ``[N, embed_dim]`` (the image side of the text losses)."""
        return self._project(self.feature_map(x, modality))

    def forward_train(self, visible: torch.Tensor | None = None, infrared: torch.Tensor | None = None) -> TrainOutput:
        """One training pass over a visible and an infrared batch.

        Each batch goes through its own stem; the two are concatenated (visible
        rows first) before the shared trunk, so BatchNorm statistics are those of
        the mixed batch, as in the reference training.

        Same arithmetic as the plain modules, computed faster: the projection takes
        the single-query pool and GeM has a hand-written backward; only rounding
        changes. On CPUs the tower runs channels-last (oneDNN's convolutions train
        ~1.4x faster so), with :mod:`csdn.model.batchnorm` keeping BatchNorm's sums
        as accurate as in the default layout.
        """
        stems = []
        for x, modality in ((visible, "visible"), (infrared, "infrared")):
            if x is not None:
                self.check_images(x)
                if x.device.type == "cpu":
                    x = x.contiguous(memory_format=torch.channels_last)
                stems.append(self._stem(modality)(x))
        if not stems:
            raise ValueError("forward_train needs a visible batch, an infrared batch, or both")
        fmap = self.trunk(torch.cat(stems, dim=0))
        gem = self._train_gem(fmap)
        projection = self._project(fmap)
        return TrainOutput(
            gem=gem,
            gem_logits=self.gem_head.classifier(self.gem_head.bn(gem)),
            projection=projection,
            proj_logits=self.proj_head.classifier(self.proj_head.bn(projection)),
        )

    def _train_gem(self, fmap: torch.Tensor) -> torch.Tensor:
        """``self.gem_head.gem(fmap)`` with :class:`_MeanOfPowers`' cheaper backward."""
        gem = self.gem_head.gem
        return _MeanOfPowers.apply(fmap, gem.p, gem.eps).pow(1.0 / gem.p)

    # ------------------------------------------------------------------ text side
    def _check_labels(self, labels: torch.Tensor | Sequence[int]) -> torch.Tensor:
        device = self.prompt_visible.cls_ctx.device
        labels = torch.as_tensor(labels, device=device)
        if labels.dim() != 1 or labels.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"labels must be a 1-d integer tensor of identity indices, got {labels.dtype} {list(labels.shape)}"
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.config.num_classes):
            raise ValueError(
                f"identity labels must lie in [0, {self.config.num_classes}); "
                f"got values from {int(labels.min())} to {int(labels.max())}"
            )
        return labels.long()

    def text_features(self, labels: torch.Tensor | Sequence[int], modality: str) -> torch.Tensor:
        """Prompt text features ``[B, embed_dim]`` of identities ``labels`` in one modality."""
        labels = self._check_labels(labels)
        learner = self.prompt_visible if normalize_modality(modality) == "visible" else self.prompt_infrared
        return self.text_encoder(learner(labels))

    def fused_text_features(self, labels: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """SII fusion of the visible and infrared text features ``[B, embed_dim]``."""
        return self.fusion(self.text_features(labels, "visible"), self.text_features(labels, "infrared"))

    # ------------------------------------------------------------------ parameter groups
    def prompt_parameters(self) -> Iterator[nn.Parameter]:
        yield self.prompt_visible.cls_ctx
        yield self.prompt_infrared.cls_ctx

    def fusion_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.fusion.parameters()

    def text_encoder_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.text_encoder.parameters()

    def image_parameters(self) -> Iterator[nn.Parameter]:
        """Stems, trunk and attention pool."""
        for module in (self.stem_visible, self.stem_infrared, self.trunk, self.attnpool):
            yield from module.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Both BNNeck classifiers and the GeM exponent (trained at twice the base rate)."""
        yield from self.gem_head.parameters()
        yield from self.proj_head.parameters()

    # ------------------------------------------------------------------ inference and I/O
    def embed_image(self, images, modality: str, **options) -> torch.Tensor:
        """Modality-invariant, L2-normalised embeddings; see :func:`csdn.inference.embed.embed_images`."""
        from csdn.inference.embed import embed_images

        return embed_images(self, images, modality, **options)

    def extra_repr(self) -> str:
        cfg = self.config
        return f"image_size={cfg.image_size}, num_classes={cfg.num_classes}, embed_dim={cfg.embed_dim}"
