"""Building blocks of CSDN: stems, trunk, pooling heads, prompt learners, text encoder, SII fusion.

The image tower reuses OpenAI's CLIP ``Bottleneck`` and ``AttentionPool2d`` and the
text tower its ``Transformer`` and ``LayerNorm``, so CLIP checkpoints load into
these modules by name and the arithmetic is CLIP's own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from csdn.config import CSDNConfig
from csdn.model.batchnorm import BatchNorm2d, use_accurate_batchnorm
from csdn.model.clip_code import clip_model


class Stem(nn.Module):
    """CLIP's three-convolution stem with CSDN's activation pattern.

    CLIP applies a ReLU after each of its three BatchNorms; the CSDN stem runs
    conv1, bn1, conv2, bn2, conv3, bn3 back to back and applies a single ReLU
    before the 2x2 average pool. Reproduced as is, since trained weights depend on it.
    """

    def __init__(self, width: int):
        super().__init__()
        half = width // 2
        self.conv1 = nn.Conv2d(3, half, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, kernel_size=3, padding=1, bias=False)
        self.bn2 = BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = BatchNorm2d(width)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1(x))
        x = self.bn2(self.conv2(x))
        x = self.bn3(self.conv3(x))
        return self.pool(F.relu(x))


class Trunk(nn.Module):
    """CLIP's residual layers 1-4, with layer4's stride configurable (1 for ReID)."""

    layer1: nn.Sequential  # set by name in __init__ (CLIP's state-dict keys)
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, config: CSDNConfig):
        super().__init__()
        bottleneck = clip_model().Bottleneck
        width = config.vision_width
        strides = (1, 2, 2, config.last_stride)
        inplanes = width
        for index, (blocks, stride) in enumerate(zip(config.vision_layers, strides)):
            planes = width * (2**index)
            layer = [bottleneck(inplanes, planes, stride)]
            inplanes = planes * bottleneck.expansion
            layer += [bottleneck(inplanes, planes) for _ in range(1, blocks)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*layer))
        use_accurate_batchnorm(self)  # CLIP's blocks build plain ones

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def attention_pool(config: CSDNConfig) -> nn.Module:
    """CLIP's attention pool with a positional embedding sized for the trunk's feature grid."""
    pool = clip_model().AttentionPool2d(1, config.feature_dim, config.vision_heads, config.embed_dim)
    rows, cols = config.feature_grid
    pool.positional_embedding = nn.Parameter(torch.empty(rows * cols + 1, config.feature_dim))
    return pool


def resize_positional_embedding(embedding: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a square CLIP attention-pool embedding (1 + s*s tokens) to a ``grid`` of rows x cols.

    The first (mean) token is kept; the spatial tokens are bilinearly resized
    (``align_corners=False``) and flattened row-major.
    """
    tokens, channels = embedding.shape
    side = math.isqrt(tokens - 1)
    if side * side != tokens - 1:
        raise ValueError(f"positional embedding with {tokens} tokens is not 1 + a square grid")
    spatial = embedding[1:].reshape(1, side, side, channels).permute(0, 3, 1, 2)
    spatial = F.interpolate(spatial.float(), size=grid, mode="bilinear", align_corners=False)
    spatial = spatial.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], channels)
    return torch.cat([embedding[:1].float(), spatial], dim=0).to(embedding.dtype)


class GeM(nn.Module):
    """Generalised-mean pooling with a learnable exponent ``p``."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.full((1,), float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(self.p), 1)
        return pooled.pow(1.0 / self.p).flatten(1)


class BNNeckHead(nn.Module):
    """BatchNorm then a bias-free identity classifier (the ReID "BNNeck").

    Whether the BatchNorm bias trains is the training recipe's decision: the
    authors' code trains it, the AGW habit (``recipe="clean"``) keeps it at zero.
    """

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.classifier = nn.Linear(dim, num_classes, bias=False)


class GeMHead(BNNeckHead):
    """GeM pooling of the trunk's map, then the BNNeck classifier."""

    def __init__(self, dim: int, num_classes: int, p: float, eps: float):
        super().__init__(dim, num_classes)
        self.gem = GeM(p, eps)


class PromptLearner(nn.Module):
    """Per-identity learnable tokens spliced into the fixed prompt template.

    ``token_prefix`` and ``token_suffix`` hold the template's token embeddings
    around the identity slots ("<sot> A photo of a" and "person. <eot> <pad>...").
    """

    token_prefix: torch.Tensor  # buffers, registered in __init__
    token_suffix: torch.Tensor

    def __init__(self, num_classes: int, num_tokens: int, width: int, context_length: int):
        super().__init__()
        prefix_len = 5  # <sot> "a" "photo" "of" "a" precede the identity tokens
        self.cls_ctx = nn.Parameter(torch.empty(num_classes, num_tokens, width))
        self.register_buffer("token_prefix", torch.zeros(1, prefix_len, width))
        self.register_buffer("token_suffix", torch.zeros(1, context_length - prefix_len - num_tokens, width))

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        count = labels.shape[0]
        return torch.cat(
            [
                self.token_prefix.expand(count, -1, -1),
                self.cls_ctx[labels],
                self.token_suffix.expand(count, -1, -1),
            ],
            dim=1,
        )


class TextEncoder(nn.Module):
    """CLIP's causal text transformer applied to prompt embeddings.

    The feature is read at the template's end-of-text position and projected; it
    is never L2-normalised.
    """

    def __init__(self, config: CSDNConfig, eot_index: int):
        super().__init__()
        clip = clip_model()
        length, width = config.context_length, config.text_width
        causal = torch.full((length, length), float("-inf")).triu_(1)
        self.transformer = clip.Transformer(width, config.text_layers, config.text_heads, attn_mask=causal)
        self.positional_embedding = nn.Parameter(torch.empty(length, width))
        self.ln_final = clip.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, config.embed_dim))
        self.eot_index = eot_index

    def forward(self, prompts: torch.Tensor) -> torch.Tensor:
        x = prompts + self.positional_embedding.to(prompts.dtype)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[:, self.eot_index] @ self.text_projection


def _gated_linear(dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Dropout(dropout))


class SemanticFusion(nn.Module):
    """SII: attention fusion of the visible and infrared text features.

    The visible feature gives the query, the infrared feature the key and value.
    Attention runs over a single key, so its softmax weight is exactly 1 and the
    output reduces to ``out_proj(value) + visible``; q and k are kept because the
    released weights hold them and training matches the reference only with them.
    """

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.q_proj = _gated_linear(dim, dropout)
        self.k_proj = _gated_linear(dim, dropout)
        self.v_proj = _gated_linear(dim, dropout)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, visible: torch.Tensor, infrared: torch.Tensor) -> torch.Tensor:
        query = self.q_proj(visible).unsqueeze(1)
        key = self.k_proj(infrared).unsqueeze(1)
        value = self.v_proj(infrared).unsqueeze(1)
        weights = torch.softmax(query @ key.transpose(1, 2) / math.sqrt(query.shape[-1]), dim=-1)
        return self.out_proj((weights @ value).squeeze(1)) + visible
