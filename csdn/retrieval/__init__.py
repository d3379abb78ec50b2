"""Retrieval: what happens to embeddings after the model made them. For now the embeddings file
(``save_embeddings`` / ``load_embeddings``, the format ``csdn embed`` writes and ``csdn match`` reads)."""

from csdn.retrieval.embeddings import Embeddings, load_embeddings, save_embeddings

__all__ = ["Embeddings", "load_embeddings", "save_embeddings"]
