"""Model cards: the README.md beside saved weights, with a Hub YAML header, what the model is,
how to use it, and what it scored where its config records that."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from csdn.config import CSDNConfig

AUTHORS_RELEASE = "https://github.com/nengdong96/CSDN"

_CITATION = """\
@article{yu2025csdn,
  title   = {CLIP-Driven Semantic Discovery Network for Visible-Infrared Person Re-Identification},
  author  = {Yu, Xiaoyan and Dong, Neng and Zhu, Liehuang and Peng, Hao and Tao, Dapeng},
  journal = {IEEE Transactions on Multimedia},
  year    = {2025},
  note    = {arXiv:2401.05806}
}"""


def _backbone_name(config: CSDNConfig) -> str:
    reference = CSDNConfig.rn50()
    if (config.vision_layers, config.vision_width) == (reference.vision_layers, reference.vision_width):
        return "CLIP RN50"
    return f"CLIP ModifiedResNet (blocks {list(config.vision_layers)}, width {config.vision_width})"


def _metrics_table(metrics: Any) -> list[str]:
    """``{"protocol": {"rank1": .., "mAP": ..}}`` or a flat ``{"rank1": ..}`` as a Markdown table."""
    if not isinstance(metrics, Mapping) or not metrics:
        return []
    rows = dict(metrics) if all(isinstance(v, Mapping) for v in metrics.values()) else {"": dict(metrics)}
    columns = list(dict.fromkeys(key for row in rows.values() for key in row))
    lines = ["| protocol | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for protocol, row in rows.items():
        cells = [f"{row[c]:.2f}" if isinstance(row.get(c), (int, float)) else str(row.get(c, "")) for c in columns]
        lines.append(f"| {protocol} | " + " | ".join(cells) + " |")
    return ["## Results", "", *lines, ""]


def describe_architecture(config: CSDNConfig, num_parameters: int) -> list[str]:
    """One line per architecture fact, for the model card and ``csdn info``."""
    height, width = config.image_size
    return [
        f"Backbone: {_backbone_name(config)}, a stem per modality and a shared trunk (layer4 stride "
        f"{config.last_stride}), attention pool to {config.embed_dim}-d",
        f"Input: {height}x{width} (HxW), ImageNet normalisation",
        f"Test feature: {config.test_feature_dim}-d (GeM half + projection half, each unit norm); "
        f"embedding with flip test-time augmentation: {2 * config.test_feature_dim}-d",
        f"Training identities: {config.num_classes}",
        f"Parameters: {num_parameters:,}",
    ]


def front_matter(license_name: str, tags: Sequence[str]) -> list[str]:
    """The YAML header the Hugging Face Hub reads (library, license, task, tags), then a blank line."""
    return ["---", "library_name: csdn-reid", f"license: {license_name}", "pipeline_tag: image-feature-extraction",
            f"tags: [{', '.join(tags)}]", "---", ""]


def usage_section(load_call: str) -> list[str]:
    """"## Usage": load with ``load_call``, embed both modalities, match."""
    return [
        "## Usage", "", "```python", "import csdn", "", f"model = {load_call}",
        'query = model.embed_image(["ir_0001.jpg"], modality="infrared")',
        'gallery = model.embed_image(["rgb_0001.jpg", "rgb_0002.jpg"], modality="visible")',
        "matches = csdn.match(query, gallery, topk=2)  # .indices, .scores (cosine, best first)",
        "```", "",
    ]


def render_model_card(config: CSDNConfig, num_parameters: int, *, repo_id: str | None = None) -> str:
    """The ``README.md`` of a saved model: what it is, how it was made, how to use and cite it."""
    meta = dict(config.meta)
    dataset = meta.get("dataset", "unspecified")
    load_target = f"hf-hub:{repo_id}" if repo_id else "path/to/this/folder"
    provenance = [f"- {key}: `{value}`" for key, value in meta.items() if key not in ("metrics", "license")]
    lines = [
        *front_matter(meta.get("license", "other"), ("person-reid", "visible-infrared", "cross-modality", "clip", "csdn")),
        f"# CSDN for visible-infrared person re-identification ({dataset})",
        "",
        f"Trained on: **{dataset}**. Maps visible (RGB) and infrared person crops into one embedding "
        "space, so the same person is close whatever the camera's modality.",
        "",
        "## Architecture",
        "",
        *(f"- {line}" for line in describe_architecture(config, num_parameters)),
        "",
        *_metrics_table(meta.get("metrics")),
        *usage_section(f'csdn.load("{load_target}")'),
        *(["## Provenance", "", *provenance, ""] if provenance else []),
        "## License and citation",
        "",
        "The csdn-reid code is MIT-licensed. Weights converted from the authors' release "
        f"({AUTHORS_RELEASE}) follow that release's terms. If you use this model, cite the CSDN paper:",
        "",
        "Yu, Dong, Zhu, Peng, Tao. *CLIP-Driven Semantic Discovery Network for Visible-Infrared Person "
        "Re-Identification.* IEEE Transactions on Multimedia, 2025. arXiv:2401.05806.",
        "",
        "```bibtex",
        _CITATION,
        "```",
        "",
    ]
    return "\n".join(lines)
