"""Getting weights: the model registry, locating and verifying files (registry name, Hub repo,
local folder), ``load`` / ``push_to_hub``, CLIP weights, and the authors' released checkpoint.

The names are imported on first use, so the registry (:mod:`csdn.hub.registry`) loads without torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from csdn.system.lazy import lazy_attributes

if TYPE_CHECKING:
    from csdn.hub.loading import list_models, load, load_config, model_info, push_to_hub, save_pretrained

__all__ = ["load", "load_config", "push_to_hub", "save_pretrained", "list_models", "model_info"]

__getattr__ = lazy_attributes(__name__, globals(), dict.fromkeys(__all__, "csdn.hub.loading"))
