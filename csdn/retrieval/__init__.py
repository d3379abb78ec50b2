"""Retrieval: what happens to embeddings after the model made them - exact top-k matching (and a
faiss index for very large galleries), k-reciprocal re-ranking, the embeddings file that
``csdn embed`` writes and ``csdn match`` reads, and pictures of ranked results.

``match`` and ``Matches`` need no torch (numpy arrays are searched in numpy where torch is not
installed); the rest is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from csdn.retrieval.matches import Matches
from csdn.retrieval.search import NamedMatches, match
from csdn.system.lazy import lazy_attributes

if TYPE_CHECKING:
    from csdn.retrieval.embeddings import Embeddings, load_embeddings, save_embeddings
    from csdn.retrieval.faiss_index import FaissIndex
    from csdn.retrieval.prepared import PreparedGallery

_LAZY = {
    "Embeddings": "csdn.retrieval.embeddings",
    "load_embeddings": "csdn.retrieval.embeddings",
    "save_embeddings": "csdn.retrieval.embeddings",
    "FaissIndex": "csdn.retrieval.faiss_index",
    "PreparedGallery": "csdn.retrieval.prepared",
}

__all__ = [
    "Embeddings",
    "FaissIndex",
    "Matches",
    "NamedMatches",
    "PreparedGallery",
    "load_embeddings",
    "match",
    "save_embeddings",
]


__getattr__ = lazy_attributes(__name__, globals(), _LAZY)
