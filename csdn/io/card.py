"""Model cards: the README.md beside saved weights, with a Hub YAML header, what the model is,
how to use it, and what it scored where its config records that.

The header is what the Hugging Face Hub indexes: library, license, task, tags, training
datasets, the model it was fine-tuned from (``base_model``) and a ``model-index`` holding every
evaluation result recorded in the config (``meta["evaluation"]``), so the Hub can show the
metrics and the lineage. It is written by huggingface_hub's own ``ModelCardData``, so it is in
the form the Hub parses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from csdn.config import CSDNConfig, read_preset
from csdn.io.provenance import CONVERTED, SELF_TRAINED, TRIAL_KEY, WEIGHTS_KEY

AUTHORS_RELEASE = "https://github.com/nengdong96/CSDN"
LIBRARY_NAME = "csdn-reid"
PIPELINE_TAG = "image-feature-extraction"  # the Hub task: images in, embeddings out
TASK_NAME = "Visible-infrared person re-identification"
BASE_TAGS = ("person-reid", "visible-infrared", "cross-modality", "csdn")
EVALUATION_KEY = "evaluation"  # model.provenance[EVALUATION_KEY]: the records the model-index is made of
# a record's score -> (model-index metric type, displayed name); values are fractions, shown as %
METRICS = {"rank1": ("rank-1", "Rank-1"), "mAP": ("map", "mAP"), "mINP": ("minp", "mINP")}
# dataset names as users type them -> the benchmark's own spelling
_DATASET_TITLES = {
    "sysu": "SYSU-MM01",
    "sysu-mm01": "SYSU-MM01",
    "sysumm01": "SYSU-MM01",
    "regdb": "RegDB",
    "llcm": "LLCM",
}
_RECORD_FIELDS = ("dataset", "protocol", "direction", "trials", *METRICS)

_CITATION = """\
@article{yu2025csdn,
  title   = {CLIP-Driven Semantic Discovery Network for Visible-Infrared Person Re-Identification},
  author  = {Yu, Xiaoyan and Dong, Neng and Zhu, Liehuang and Peng, Hao and Tao, Dapeng},
  journal = {IEEE Transactions on Multimedia},
  year    = {2025},
  note    = {arXiv:2401.05806}
}"""


def dataset_title(name: str) -> str:
    """``"sysu"`` -> ``"SYSU-MM01"``; names of other datasets are kept as given."""
    return _DATASET_TITLES.get(str(name).strip().lower(), str(name).strip())


def dataset_id(name: str) -> str:
    """The identifier used in the card's ``datasets`` list and model-index (``"sysu-mm01"``)."""
    return "-".join(dataset_title(name).lower().replace("_", " ").split())


def protocol_label(settings: Mapping[str, Any]) -> str:
    """The evaluation settings that change the numbers, in words: ``"all-search single-shot"``."""
    parts = []
    if settings.get("mode"):
        parts.append(f"{settings['mode']}-search")
    if settings.get("shots"):
        parts.append("single-shot" if settings["shots"] == 1 else f"{settings['shots']}-shot")
    if "trials" in settings and "mode" not in settings and "shots" not in settings:  # RegDB: the split is the protocol
        parts.append("trial " + ",".join(str(t) for t in settings["trials"]))
    if settings.get("rerank"):
        parts.append("re-ranked")
    if settings.get("flip") is False:
        parts.append("no flip")
    return " ".join(parts) or "standard"


def _check_record(record: Mapping[str, Any]) -> dict[str, Any]:
    missing = [key for key in _RECORD_FIELDS if key not in record]
    if missing:
        raise ValueError(
            f"an evaluation record needs {', '.join(_RECORD_FIELDS)}; this one lacks "
            f"{', '.join(missing)}: pass csdn.evaluate(...) results, which have them all"
        )
    for key in METRICS:
        value = record[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not 0 <= value <= 1
        ):
            raise ValueError(
                f"evaluation {key} must be a fraction in [0, 1] (as csdn.evaluate returns it), got {value!r}"
            )
    return {key: record[key] for key in _RECORD_FIELDS}


def evaluation_records(results: Any) -> list[dict[str, Any]]:
    """JSON records, one per search direction, from ``csdn.evaluate(...)`` results.

    ``results``: one result or a list; each a result of :func:`csdn.evaluate` (anything with
    its ``to_dict()``), its ``to_dict()`` itself, or records this function returned earlier.
    """
    if results is None:
        return []
    items = results if isinstance(results, (list, tuple)) else [results]
    records = []
    for item in items:
        data = item.to_dict() if hasattr(item, "to_dict") else item
        if not isinstance(data, Mapping):
            raise TypeError(
                f"cannot read evaluation results from {type(item).__name__}; pass csdn.evaluate(...) results"
            )
        if "searches" not in data:
            records.append(_check_record(data))
            continue
        settings = dict(data.get("settings") or {})
        for search in data["searches"]:
            mean = search["mean"]
            records.append(
                _check_record(
                    {
                        "dataset": dataset_title(data["dataset"]),
                        "protocol": protocol_label(settings),
                        "direction": search["direction"],
                        "trials": len(search.get("trials") or []) or 1,
                        **{key: round(float(mean[key]), 6) for key in METRICS},
                    }
                )
            )
    return records


def merge_records(old: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``old`` with ``new`` added; a new record replaces an old one of the same dataset, protocol and direction."""

    def key(record: Mapping[str, Any]) -> tuple:
        return (record["dataset"], record["protocol"], record["direction"])

    merged = {key(r): dict(r) for r in old}
    merged.update({key(r): dict(r) for r in new})
    return list(merged.values())


def _eval_results(records: Sequence[Mapping[str, Any]]) -> list[EvalResult]:
    results = []
    for record in records:
        for key, (metric_type, metric_name) in METRICS.items():
            results.append(
                EvalResult(
                    task_type=PIPELINE_TAG,
                    task_name=TASK_NAME,
                    dataset_type=dataset_id(record["dataset"]),
                    dataset_name=record["dataset"],
                    dataset_config=f"{record['protocol']}, {record['direction']}",
                    dataset_split="test",
                    metric_type=metric_type,
                    metric_name=metric_name,
                    metric_value=round(100 * float(record[key]), 2),
                )
            )
    return results


def front_matter(
    *,
    license_name: str,
    tags: Sequence[str] = (),
    datasets: Sequence[str] = (),
    base_model: str | None = None,
    model_name: str | None = None,
    evaluation: Sequence[Mapping[str, Any]] = (),
) -> list[str]:
    """The YAML header the Hub reads, then a blank line.

    ``evaluation``: records from :func:`evaluation_records`; they become the ``model-index``
    (metrics in percent), which names the model ``model_name``.
    """
    data = ModelCardData(
        library_name=LIBRARY_NAME,
        license=license_name,
        pipeline_tag=PIPELINE_TAG,
        tags=list(dict.fromkeys([*BASE_TAGS, *tags])),
        datasets=[dataset_id(d) for d in datasets] or None,
        base_model=base_model,
        model_name=(model_name or "csdn") if evaluation else None,
        eval_results=_eval_results(evaluation) or None,
    )
    return ["---", data.to_yaml(), "---", ""]


def _preset_text(config: CSDNConfig, key: str) -> str | None:
    """The config's architecture preset's ``key``, a template over the config's fields, filled in; None when
    the preset has none (or is not installed here)."""
    try:
        template = read_preset(config.architecture).get(key)
    except ValueError:  # an architecture installed elsewhere, whose preset is not here
        template = None
    if not template:
        return None
    fields = {name: list(value) if isinstance(value, tuple) else value for name, value in vars(config).items()}
    return str(template).format(**fields)


def backbone_name(config: CSDNConfig) -> str:
    """What the config's architecture calls its backbone: its preset's ``backbone``
    (``"CLIP RN50"``; ``"CLIP ModifiedResNet (blocks {vision_layers}, ...)"``)."""
    return _preset_text(config, "backbone") or f"the {config.architecture} backbone"


def structure_text(config: CSDNConfig) -> str:
    """How the architecture's image side is built, as its preset's ``structure`` says (e.g. CSDN's stem per
    modality, shared trunk and attention pool); otherwise only the embedding size, which every one has."""
    return _preset_text(config, "structure") or f"image features to {config.embed_dim}-d"


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
        f"Backbone: {backbone_name(config)}, {structure_text(config)}",
        f"Input: {height}x{width} (HxW), ImageNet normalisation",
        f"Test feature: {config.test_feature_dim}-d (GeM half + projection half, each unit norm); "
        f"embedding with flip test-time augmentation: {2 * config.test_feature_dim}-d",
        f"Training identities: {config.num_classes}",
        f"Parameters: {num_parameters:,}",
    ]


def usage_section(load_call: str) -> list[str]:
    """ "## Usage": load with ``load_call``, embed both modalities, match."""
    return [
        "## Usage",
        "",
        "```python",
        "import csdn",
        "",
        f"model = {load_call}",
        'query = model.embed_image(["ir_0001.jpg"], modality="infrared")',
        'gallery = model.embed_image(["rgb_0001.jpg", "rgb_0002.jpg"], modality="visible")',
        "matches = csdn.match(query, gallery, topk=2)  # .indices, .scores (cosine, best first)",
        "```",
        "",
    ]


def evaluation_table(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The recorded evaluation results as Markdown table lines (percentages, mean over the trials)."""
    lines = ["| dataset | protocol | search | trials | rank-1 | mAP | mINP |", "|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(
            f"| {r['dataset']} | {r['protocol']} | {r['direction']} | {r['trials']} | "
            f"{100 * r['rank1']:.2f} | {100 * r['mAP']:.2f} | {100 * r['mINP']:.2f} |"
        )
    return lines


def _evaluation_section(records: Sequence[Mapping[str, Any]]) -> list[str]:
    if not records:
        return []
    return [
        "## Evaluation",
        "",
        *evaluation_table(records),
        "",
        "Percentages, mean over the trials; the same numbers are in this card's `model-index`.",
        "",
    ]


def _trial_note(meta: dict[str, Any]) -> str:
    return f" (trial {meta[TRIAL_KEY]})" if meta.get(TRIAL_KEY) is not None else ""


def _weights_note(meta: dict[str, Any]) -> str:
    """Whose weights these are: trained with csdn train, or converted from the authors' release."""
    origin = meta.get(WEIGHTS_KEY)
    if origin == SELF_TRAINED:
        return "Self-trained with `csdn train` (not the authors' released weights). "
    if origin == CONVERTED:
        return f"Weights converted from the authors' release ({AUTHORS_RELEASE}). "
    return ""


def render_model_card(
    config: CSDNConfig,
    num_parameters: int,
    *,
    provenance: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
) -> str:
    """The ``README.md`` of a saved model: what it is (``config``), how it was made (``provenance``, the
    model's record), how to use and cite it."""
    meta = dict(provenance or {})
    dataset = meta.get("dataset", "unspecified")
    records = evaluation_records(meta.get(EVALUATION_KEY))
    load_target = f"hf-hub:{repo_id}" if repo_id else "path/to/this/folder"
    hidden = ("metrics", "license", EVALUATION_KEY)
    recorded = [f"- {key}: `{value}`" for key, value in meta.items() if key not in hidden]
    lines = [
        *front_matter(
            license_name=meta.get("license", "other"),
            tags=("clip",),
            datasets=[] if dataset == "unspecified" else [dataset],
            base_model=meta.get("base_model"),
            model_name=repo_id.split("/")[-1] if repo_id else f"csdn-{dataset_id(dataset)}",
            evaluation=records,
        ),
        f"# CSDN for visible-infrared person re-identification ({dataset_title(dataset)})",
        "",
        f"Trained on: **{dataset_title(dataset)}**{_trial_note(meta)}. {_weights_note(meta)}Maps visible (RGB) and infrared person crops into one "
        "embedding space, so the same person is close whatever the camera's modality.",
        "",
        "## Architecture",
        "",
        *(f"- {line}" for line in describe_architecture(config, num_parameters)),
        "",
        *_evaluation_section(records),
        *_metrics_table(meta.get("metrics")),
        *usage_section(f'csdn.load("{load_target}")'),
        *(["## Provenance", "", *recorded, ""] if recorded else []),
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
