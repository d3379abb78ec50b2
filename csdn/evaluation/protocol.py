"""``evaluate``: a model on a benchmark's standard protocol, every trial, each image embedded once.

The reference evaluation scripts re-extract the gallery for every trial; here all
trials and search directions share one table of embeddings keyed by image, so a
SYSU-MM01 10-trial run embeds the 3803 queries and the union of the ten galleries
once. With ``cache_dir`` the table also persists on disk, keyed by the model's
weights and the embedding settings, so a second evaluation embeds nothing.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from csdn.config import join_provenance
from csdn.data.catalog import DATASET_NAMES, reader_for
from csdn.data.direction import parse_direction
from csdn.data.samples import Sample, sample_arrays
from csdn.evaluation.metrics import METRICS
from csdn.evaluation.results import EvaluationResult, SearchResult, TrialResult
from csdn.evaluation.tables import ProtocolTable
from csdn.io.provenance import check_trial_overlap, trained_on
from csdn.retrieval.reranking import rerank_embeddings

__all__ = ["SETTING_VALUES", "evaluate", "evaluate_table", "EmbeddingTable", "weights_fingerprint"]

MAX_RANK = 20
_DEFAULTS = {"mode": "all", "shots": 1}
# every value of each protocol setting, the default first: the rows of evaluate_table
SETTING_VALUES: dict[str, tuple[Any, ...]] = {"mode": ("all", "indoor"), "shots": (1, 10)}
_CHOICES = ", ".join(map(repr, DATASET_NAMES))


def _metric(reader: Any, dist: np.ndarray, query: Sequence[Sample], gallery: Sequence[Sample]):
    (q_pids, q_cams), (g_pids, g_cams) = sample_arrays(query), sample_arrays(gallery)
    return METRICS[reader.metric](dist, q_pids, g_pids, q_cams, g_cams, MAX_RANK)


# ---------------------------------------------------------------------------- embeddings
def weights_fingerprint(model: Any) -> str:
    """A hash of a model's class, config and every tensor of its state dict (names, shapes, bytes)."""
    if not callable(getattr(model, "state_dict", None)):
        raise TypeError(
            f"cache_dir needs a model with a state_dict() to key its cache by the weights; "
            f"{type(model).__name__} has none (pass cache_dir=None)"
        )
    digest = hashlib.blake2b(digest_size=16)
    digest.update(type(model).__qualname__.encode())
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):  # with the provenance, as when the config held it
        document = join_provenance(config, getattr(model, "provenance", None) or {})
        digest.update(json.dumps(document, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _cache_key(sample: Sample) -> str:
    """What identifies an image's pixels: modality, absolute path, and for files their size and mtime."""
    path = os.path.abspath(sample.path)
    try:
        stat = os.stat(path)
        return f"{sample.modality}|{path}|{stat.st_size}|{stat.st_mtime_ns}"
    except OSError:  # in-memory rows ("<file.npy>#<row>")
        return f"{sample.modality}|{path}"


class EmbeddingTable:
    """Embeddings of dataset images, each computed once, optionally persisted in ``cache_dir``.

    ``model.embed_image(sources, modality, batch_size=..., flip=..., progress=...)`` is
    called once per modality with every image not yet in the table.
    """

    def __init__(self, model: Any, *, batch_size: int = 64, flip: bool = True, progress: bool = True, cache_dir=None):
        if not callable(getattr(model, "embed_image", None)):
            raise TypeError(f"model must have an embed_image(images, modality, ...) method; got {type(model).__name__}")
        self.model, self.batch_size, self.flip, self.progress = model, batch_size, flip, progress
        self.rows: dict[str, np.ndarray] = {}
        self._keys: dict[Sample, str] = {}
        self.cache_file: Path | None = None
        if cache_dir is not None:
            settings = json.dumps({"flip": flip, "weights": weights_fingerprint(model)}, sort_keys=True)
            name = hashlib.blake2b(settings.encode(), digest_size=12).hexdigest()
            self.cache_file = Path(cache_dir) / f"embeddings-{name}.npz"
            self.rows.update(self._read_cache())

    def _read_cache(self) -> dict[str, np.ndarray]:
        if self.cache_file is None or not self.cache_file.is_file():
            return {}
        try:
            with np.load(self.cache_file, allow_pickle=False) as data:
                keys, vectors = data["keys"], data["vectors"]
            if vectors.ndim != 2 or len(keys) != len(vectors):
                raise ValueError("keys and vectors disagree")
        except (OSError, ValueError, KeyError) as err:
            tqdm.write(f"csdn: ignoring unreadable embedding cache {self.cache_file} ({err}); it will be rewritten")
            return {}
        return dict(zip(keys.tolist(), vectors))

    def _write_cache(self) -> None:
        from csdn.system.fileio import atomic_write

        assert self.cache_file is not None
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self.rows), dtype=str)
        vectors = np.stack(list(self.rows.values()))

        def write(temp: Path) -> None:
            with open(temp, "wb") as handle:
                np.savez(handle, keys=keys, vectors=vectors)

        atomic_write(self.cache_file, write)

    def _key(self, sample: Sample) -> str:
        if sample not in self._keys:
            self._keys[sample] = _cache_key(sample)
        return self._keys[sample]

    def add(self, samples: Iterable[Sample]) -> int:
        """Embed the images of ``samples`` not in the table yet; returns how many were embedded."""
        missing: dict[str, dict[str, Sample]] = {}
        for sample in samples:
            key = self._key(sample)
            if key not in self.rows:
                missing.setdefault(sample.modality, {})[key] = sample
        for modality, todo in missing.items():
            embedded = self.model.embed_image(
                [s.source for s in todo.values()],
                modality,
                batch_size=self.batch_size,
                flip=self.flip,
                progress=self.progress,
            )
            vectors = np.asarray(
                embedded.detach().cpu().float() if hasattr(embedded, "detach") else embedded, np.float32
            )
            if vectors.shape[:1] != (len(todo),) or vectors.ndim != 2:
                raise ValueError(f"embed_image returned shape {vectors.shape} for {len(todo)} images; expected [N, D]")
            self.rows.update(zip(todo, vectors))
        if missing and self.cache_file is not None:
            self._write_cache()
        return sum(len(todo) for todo in missing.values())

    def matrix(self, samples: Sequence[Sample]) -> np.ndarray:
        """``[len(samples), D]`` embeddings, in order (all must have been added)."""
        return np.stack([self.rows[self._key(s)] for s in samples])


# ---------------------------------------------------------------------------- protocol
def _reader(dataset: Any, root: Any, trials: Sequence[int] | None) -> Any:
    if not isinstance(dataset, str):
        if not callable(getattr(dataset, "search", None)) or getattr(dataset, "metric", None) not in METRICS:
            raise TypeError(f"dataset must be one of {_CHOICES} or one of their readers, got {dataset!r}")
        if root is not None:
            raise ValueError(f"root= goes with a dataset name; the reader {dataset!r} already has its folder")
        return dataset
    kind = reader_for(dataset)
    if kind is None:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {_CHOICES}")
    if root is None:
        raise ValueError(f"evaluate(..., {dataset!r}) needs root=, the folder that holds the dataset")
    if kind.trial_bound:
        return kind(root, trial=trials[0] if trials else 1)
    return kind(root)


def _directions(reader: Any, direction: str | Sequence[str] | None) -> list[str]:
    if direction is None or direction == "both":
        return list(reader.directions)
    chosen = [direction] if isinstance(direction, str) else list(direction)
    if chosen == ["both"]:
        return list(reader.directions)
    parsed = list(dict.fromkeys(parse_direction(d) for d in chosen))
    unsupported = [d for d in parsed if d not in reader.directions]
    if unsupported:
        raise ValueError(
            f"the {reader.title} protocol searches {', '.join(reader.directions)}, not {', '.join(unsupported)}"
        )
    return parsed


def _model(model: Any) -> Any:
    """A model object as it is; a registry name, ``hf-hub:`` id or local path loaded with :func:`csdn.load`."""
    if isinstance(model, (str, os.PathLike)):
        from csdn.hub.loading import load

        return load(model)
    if not callable(getattr(model, "embed_image", None)):
        raise TypeError(
            f"model must be a csdn model, a model name ('synthetic-tiny', 'hf-hub:org/repo') or a local model "
            f"path; got a {type(model).__name__}, which has no embed_image()"
        )
    return model


def evaluate(
    model: Any,
    dataset: Any,
    root: str | os.PathLike | None = None,
    *,
    mode: str | None = None,
    shots: int | None = None,
    trials: Sequence[int] | None = None,
    direction: str | Sequence[str] | None = None,
    rerank: bool = False,
    batch_size: int = 64,
    flip: bool = True,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
    allow_overlap: bool = False,
) -> EvaluationResult:
    """Score ``model`` on a benchmark's standard protocol and return an :class:`EvaluationResult`.

    Args:
        model: a :class:`csdn.CSDN`, a name :func:`csdn.load` takes (``"synthetic-tiny"``,
            ``"hf-hub:org/repo"``, a local folder or ``.safetensors`` file; loaded on the CPU),
            or anything with ``embed_image(images, modality, batch_size=, flip=, progress=)``
            returning unit-norm rows.
        dataset: ``"sysu"``, ``"regdb"``, ``"llcm"``, ``"folder"`` (read from ``root``) or a
            reader (:class:`csdn.data.SYSUMM01`, :class:`~csdn.data.RegDB`, :class:`~csdn.data.LLCM`,
            :class:`~csdn.data.ImageFolder`). ``"folder"`` is a user's own
            ``root/visible/<pid>/*`` and ``root/infrared/<pid>/*``: one trial, every image of
            the query modality against every image of the other, scored like RegDB.
        mode: SYSU-MM01 ``"all"`` (default) or ``"indoor"`` search.
        shots: images drawn per identity and camera, SYSU-MM01 and LLCM: 1 (default) or 10
            (the gallery; for LLCM visible->infrared, the infrared probes).
        trials: which trials; default all ten (SYSU 0-9, LLCM 0-9), for RegDB only the
            reader's split (``trials[0]`` when reading from ``root``, else 1): a RegDB model
            is trained on one split, and the others' test halves overlap its training set.
        direction: ``"infrared->visible"``, ``"visible->infrared"`` (aliases such as
            ``"thermal->visible"``, ``"v2t"``), a list, or ``None``/``"both"`` = every
            direction the protocol reports (RegDB, LLCM, folder: both; SYSU-MM01: infrared->visible).
            A result of two directions gives each its own scores (``result["v2i"].rank1``).
            Probes and gallery are the reference code's: the named query modality probes the
            other, except LLCM ``visible->infrared``, where the infrared images drawn per trial
            probe every visible test image (:meth:`csdn.data.LLCM.search`).
        rerank: apply k-reciprocal re-ranking (:mod:`csdn.retrieval.reranking`); not the paper's protocol.
        flip: flip test-time augmentation (the paper's protocol).
        cache_dir: keep embeddings on disk here, keyed by the model's weights and ``flip``.
        allow_overlap: score a RegDB trial whose test identities the model was trained on
            (its ``provenance`` names its trial; by default that is refused, and with
            ``trials=None`` the model's own trial is scored).

    Distances are ``-(probes @ gallery.T)`` of the unit-norm embeddings (ranking by cosine
    similarity); ``num_query`` / ``num_gallery`` of each trial count probes / gallery images.
    """
    model, reader, trials = _setup(model, dataset, root, trials, allow_overlap)
    options: dict[str, Any] = {k: v for k, v in (("mode", mode), ("shots", shots)) if v is not None}
    extra = sorted(set(options) - set(reader.settings))
    if extra:
        takes = ", ".join(reader.settings) or "no options"
        raise ValueError(f"the {reader.title} protocol has no {', '.join(extra)} setting (it takes {takes})")
    options = {**{k: _DEFAULTS[k] for k in reader.settings}, **options}
    table = EmbeddingTable(model, batch_size=batch_size, flip=flip, progress=progress, cache_dir=cache_dir)
    return _score(reader, table, _directions(reader, direction), trials, [options], rerank, progress)[0]


def evaluate_table(
    model: Any,
    dataset: Any,
    root: str | os.PathLike | None = None,
    *,
    trials: Sequence[int] | None = None,
    direction: str | Sequence[str] | None = None,
    rerank: bool = False,
    batch_size: int = 64,
    flip: bool = True,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
    allow_overlap: bool = False,
) -> ProtocolTable:
    """:func:`evaluate` under every setting of the protocol at once, as the literature's table.

    SYSU-MM01: all-search and indoor-search, each single-shot and multi-shot (10 gallery images
    per identity and camera), the four cells papers report; LLCM: single- and multi-shot. Each
    image is embedded once for all of them. Arguments are :func:`evaluate`'s (``mode`` and
    ``shots`` are what varies); RegDB and folders have one setting, so :func:`evaluate` is theirs.
    """
    model, reader, trials = _setup(model, dataset, root, trials, allow_overlap)
    if not reader.settings:
        raise ValueError(
            f"the {reader.title} protocol has a single setting, so there is no table of settings to fill: "
            "evaluate it without --table (a RegDB average over its ten splits comes from csdn train --trials 1-10)"
        )
    grid = [
        dict(zip(reader.settings, values))
        for values in itertools.product(*(SETTING_VALUES[name] for name in reader.settings))
    ]
    table = EmbeddingTable(model, batch_size=batch_size, flip=flip, progress=progress, cache_dir=cache_dir)
    results = _score(reader, table, _directions(reader, direction), trials, grid, rerank, progress)
    return ProtocolTable.from_results(reader.title, list(zip(grid, results)), len(reader.directions) > 1)


def _setup(
    model: Any, dataset: Any, root: Any, trials: Sequence[int] | None, allow_overlap: bool
) -> tuple[Any, Any, list[int]]:
    """``(model, reader, trials)``: the model loaded, the trials defaulted (a RegDB model: its own
    split) and checked against what the model was trained on."""
    chosen = None if trials is None else list(trials)
    model = _model(model)
    origin = trained_on(getattr(model, "provenance", None))
    named = reader_for(dataset) if isinstance(dataset, str) else None
    if chosen is None and origin.trial is not None and origin.dataset == getattr(named, "name", None):
        chosen = [origin.trial]  # a RegDB model is scored on its own split
    reader = _reader(dataset, root, chosen)
    chosen = list(reader.trials) if chosen is None else chosen
    if not chosen:
        raise ValueError("trials is empty; pass None for the protocol's default trials")
    if origin.trial is not None and getattr(reader, "trial_bound", False) and origin.dataset == reader.name:
        check_trial_overlap(reader, origin.trial, chosen, allow_overlap)
    return model, reader, chosen


def _score(
    reader: Any,
    table: EmbeddingTable,
    directions: list[str],
    trials: list[int],
    grid: list[dict[str, Any]],
    rerank: bool,
    progress: bool,
) -> list[EvaluationResult]:
    """One result per protocol setting in ``grid``, every image of every search embedded in one pass."""
    plans = [[(d, t, *reader.search(d, t, **options)) for d in directions for t in trials] for options in grid]
    table.add(sample for plan in plans for _, _, query, gallery in plan for sample in (*query, *gallery))
    results = []
    for options, plan in zip(grid, plans):
        searches = {d: SearchResult(d, []) for d in directions}
        for d, trial, query, gallery in tqdm(plan, desc=f"{reader.name} trials", disable=not progress):
            q, g = table.matrix(query), table.matrix(gallery)
            dist = rerank_embeddings(q, g) if rerank else -(q @ g.T)
            cmc, mean_ap, minp = _metric(reader, dist, query, gallery)
            searches[d].trials.append(TrialResult(trial, cmc, mean_ap, minp, len(query), len(gallery)))
        settings = {**options, "trials": trials, "flip": table.flip, "rerank": rerank}
        results.append(EvaluationResult(reader.title, settings, list(searches.values())))
    return results
