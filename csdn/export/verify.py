"""Proof that an exported graph computes what the PyTorch model computes, in figures stored with it.

Two checks, on fixed synthetic pedestrians (:mod:`csdn.export.samples`):

* **parity**: the same preprocessed images, of both modalities, embedded (flip TTA on) by
  ``model.embed_image`` and by the artifact at several batch sizes; the figure is the largest
  absolute difference of any embedding value. A float32 graph must stay within
  :data:`FP32_TOLERANCE`.
* **agreement** (fp16 and int8): a synthetic query/gallery set, one render of each identity on
  each side, embedded both ways; the figures are the smallest cosine between an artifact
  embedding and its PyTorch twin, and the share of queries whose top-1 gallery match is the
  same. Each precision has a floor for both (:data:`FLOORS`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from csdn.errors import ArtifactError
from csdn.export.samples import synthetic_people
from csdn.export.settings import FLOORS, Floors
from csdn.images.decode import Preprocessing
from csdn.inference.contract import EmbeddingModel
from csdn.modality import MODALITIES
from csdn.runtime.embedder import ExportedGraph

FP32_TOLERANCE = 1e-5  # max |difference| of unit-norm embedding values, float32 graphs
PARITY_BATCH_SIZES = (1, 3, 8)
PARITY_PEOPLE = 4  # per modality
VERIFY_SEED = 20240
AGREEMENT_SEED = 20241


def preprocessed(model: EmbeddingModel, images) -> np.ndarray:
    """Images through the model's own test preprocessing, stacked ``[N, 3, H, W]``."""
    config = model.config
    prepare = Preprocessing(config.image_size, config.mean, config.std, config.interpolation)
    return np.stack([prepare(image) for image in images])


def _reference(model: EmbeddingModel, batch: np.ndarray, modality: str) -> np.ndarray:
    return model.embed_image(torch.from_numpy(batch), modality).numpy()


def parity(model: EmbeddingModel, graph: ExportedGraph) -> dict[str, object]:
    """Largest absolute embedding difference, artifact vs ``model.embed_image``, over both modalities' images."""
    size = model.config.image_size
    batch = preprocessed(
        model,
        [image for modality in MODALITIES for image in synthetic_people(PARITY_PEOPLE, modality, size, VERIFY_SEED)],
    )
    reference = _reference(model, batch, graph.meta.modality)
    worst = 0.0
    for batch_size in PARITY_BATCH_SIZES:
        ours = np.concatenate(
            [graph.embed(batch[i : i + batch_size], flip=True) for i in range(0, len(batch), batch_size)]
        )
        worst = max(worst, float(np.abs(ours - reference).max()))
    return {"max_abs_diff": worst, "images": len(batch), "batch_sizes": list(PARITY_BATCH_SIZES), "flip": True}


def embedding_agreement(
    reference: tuple[np.ndarray, np.ndarray], ours: tuple[np.ndarray, np.ndarray]
) -> dict[str, float]:
    """Cosines and top-1 agreement of ``ours`` against ``reference``, each a ``(query, gallery)`` pair."""
    cosine = np.concatenate([(a * b).sum(1) for a, b in zip(reference, ours)])
    scores = [query @ gallery.T for query, gallery in (reference, ours)]
    top1 = [s.argmax(1) for s in scores]
    truth = np.arange(len(reference[0]))  # query i shows gallery identity i
    best_two = -np.sort(-scores[0], axis=1)[:, :2]
    margin = best_two[:, 0] - best_two[:, 1] if best_two.shape[1] == 2 else np.zeros(len(best_two))
    changed = top1[0] != top1[1]
    return {
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "top1_agreement": float(1.0 - changed.mean()),
        "rank1_reference": float((top1[0] == truth).mean()),
        "rank1_artifact": float((top1[1] == truth).mean()),
        # how close to a tie (reference top-1 minus top-2 score) the queries were whose top-1 changed
        "changed_max_margin": float(margin[changed].max()) if changed.any() else 0.0,
        "median_margin": float(np.median(margin)),
    }


def agreement(model: EmbeddingModel, graph: ExportedGraph, identities: int, batch_size: int = 32) -> dict[str, Any]:
    """Cosine and top-1 agreement with ``model.embed_image`` on ``identities`` synthetic people."""
    modality = graph.meta.modality
    renders = synthetic_people(identities, modality, model.config.image_size, AGREEMENT_SEED, shots=2)
    batch = preprocessed(model, renders)
    query_rows, gallery_rows = slice(1, None, 2), slice(0, None, 2)
    reference = _reference(model, batch, modality)
    ours = np.concatenate([graph.embed(batch[i : i + batch_size], flip=True) for i in range(0, len(batch), batch_size)])
    figures = embedding_agreement(
        (reference[query_rows], reference[gallery_rows]), (ours[query_rows], ours[gallery_rows])
    )
    return {**figures, "identities": identities}


def verify(
    model: EmbeddingModel, graph: ExportedGraph, identities: int, floors: Floors | None = None
) -> dict[str, object]:
    """Measure the artifact and raise :class:`ArtifactError` if it misses its precision's bounds.

    ``floors`` replaces the precision's default :data:`FLOORS` (fp16/int8); the floors used
    are recorded with the figures.
    """
    precision = graph.meta.precision
    figures: dict[str, Any] = {"parity": parity(model, graph)}
    failures = []
    if precision == "fp32":
        figures["tolerance"] = FP32_TOLERANCE
        worst = figures["parity"]["max_abs_diff"]
        if worst > FP32_TOLERANCE:
            failures.append(f"max abs embedding difference {worst:.3g} > {FP32_TOLERANCE:g}")
    else:
        floors = floors or FLOORS[precision]
        figures["floors"] = {"cosine_min": floors.cosine, "top1_agreement": floors.top1}
        figures["agreement"] = measured = agreement(model, graph, identities)
        if measured["cosine_min"] < floors.cosine:
            failures.append(f"smallest cosine {measured['cosine_min']:.4f} < floor {floors.cosine}")
        if measured["top1_agreement"] < floors.top1:
            failures.append(f"top-1 agreement {measured['top1_agreement']:.1%} < floor {floors.top1:.0%}")
    figures["passed"] = not failures
    if failures:
        hint = (
            "export with --precision fp32, or for int8 calibrate on your own images (--calibration DIR)"
            if precision != "fp32"
            else "report this (with the model) as a bug; export another --opset meanwhile"
        )
        raise ArtifactError(
            f"the exported {modality_name(graph)} graph does not match the PyTorch model: "
            f"{'; '.join(failures)}. Nothing was written; {hint}"
        )
    return figures


def modality_name(graph: ExportedGraph) -> str:
    return f"{graph.meta.modality} {graph.meta.precision} {graph.meta.format}"
