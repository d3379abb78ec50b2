"""Turning images into embeddings fast and exactly: the single-query attention pool, the folded
convolution tower with its cache, and ``embed_images``, written against
:class:`csdn.inference.contract.EmbeddingModel` so that no model is imported here."""

from csdn.inference.embed import embed_images

__all__ = ["embed_images"]
