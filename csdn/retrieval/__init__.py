"""Retrieval: what happens to embeddings after the model made them - exact top-k matching (and a
faiss index for very large galleries), k-reciprocal re-ranking, the embeddings file that
``csdn embed`` writes and ``csdn match`` reads, and pictures of ranked results."""

from csdn.retrieval.embeddings import Embeddings, load_embeddings, save_embeddings
from csdn.retrieval.faiss_index import FaissIndex
from csdn.retrieval.matches import Matches
from csdn.retrieval.search import NamedMatches, match

__all__ = ["Embeddings", "FaissIndex", "Matches", "NamedMatches", "load_embeddings", "match", "save_embeddings"]
