"""csdn-reid: CSDN models for visible-infrared person re-identification.

    import csdn
    model = csdn.load("synthetic-tiny")                    # or "sysu", "hf-hub:org/repo", a local dir
    query = model.embed_image(ir_images, modality="infrared")
    gallery = model.embed_image(rgb_images, modality="visible")
    ranked = csdn.match(query, gallery, topk=10)

Submodules that pull in more code (the model, training, evaluation, datasets,
conversion) are imported on first use, so ``import csdn`` stays quick and needs no
torch: the exported-model runtime (``csdn.runtime``) works where torch is not installed,
and so does ``csdn.match`` on its numpy arrays (searched in numpy there).
"""

from __future__ import annotations

from csdn.config import CSDNConfig
from csdn.system.lazy import lazy_attributes
from csdn.version import __version__

# public name -> module that defines it (loaded on first access)
_LAZY_ATTRIBUTES = {
    "CSDN": "csdn.model",
    "load": "csdn.hub",
    "create_model": "csdn.hub.factory",
    "DEFAULT_MODEL": "csdn.hub.registry",
    "list_models": "csdn.hub",
    "save_pretrained": "csdn.hub",
    "push_to_hub": "csdn.hub",
    "model_info": "csdn.hub",
    "load_config": "csdn.hub",
    "match": "csdn.retrieval",
    "Matches": "csdn.retrieval",
    "evaluate": "csdn.evaluation",
    "from_clip": "csdn.hub.clip",
}
_LAZY_MODULES = (
    "convert",
    "train",
    "data",
    "losses",
    "evaluation",
    "hub",
    "retrieval",
    "images",
    "inference",
    "io",
    "model",
    "errors",
    "export",
    "runtime",
)

__all__ = ["CSDNConfig", "__version__", *_LAZY_ATTRIBUTES, *_LAZY_MODULES]


__getattr__ = lazy_attributes(__name__, globals(), _LAZY_ATTRIBUTES, _LAZY_MODULES)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
