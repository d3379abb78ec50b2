"""What inference needs of a model, as a structural type: the fast path and ``embed_images`` work
on anything with these members, so this package never imports the model it serves."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import nn

from csdn.config import CSDNConfig


class EmbeddingModel(Protocol):
    """The public surface of :class:`csdn.model.CSDN` that inference uses."""

    config: CSDNConfig
    training: bool

    # read-only members, so that a model whose stems are a subclass of Module still matches
    @property
    def layout(self) -> str: ...  # its tensor layout: csdn.config.CLIP_RESNET_LAYOUT folds

    @property
    def stem_visible(self) -> nn.Module: ...

    @property
    def stem_infrared(self) -> nn.Module: ...

    @property
    def trunk(self) -> nn.Module: ...

    def check_images(self, x: torch.Tensor) -> None: ...

    def features_from_map(self, fmap: torch.Tensor) -> torch.Tensor: ...

    def image_features(self, x: torch.Tensor, modality: str) -> torch.Tensor: ...

    def embed_image(self, images: Any, modality: str, **options: Any) -> torch.Tensor: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def train(self, mode: bool = True) -> nn.Module: ...

    def eval(self) -> nn.Module: ...
