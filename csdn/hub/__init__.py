"""Getting weights: the model registry, locating and verifying files (registry name, Hub repo,
local folder), ``load`` / ``push_to_hub``, CLIP weights, and the authors' released checkpoint."""

from csdn.hub import loading
from csdn.hub.loading import list_models, load, load_config, model_info, push_to_hub, save_pretrained
from csdn.io.pretrained import register_model_hub

register_model_hub(loading)  # what CSDN.from_pretrained / model.push_to_hub go through

__all__ = ["load", "load_config", "push_to_hub", "save_pretrained", "list_models", "model_info"]
