"""Ranked-results pictures: each query beside its top-k gallery images.

Drawn with PIL alone. When identities are known, a gallery image gets a green
border if it shows the query's identity and a red one if not; without
identities the borders are neutral grey.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from csdn.fileio import atomic_write
from csdn.preprocess import load_image

GREEN = (40, 170, 60)
RED = (210, 40, 40)
GREY = (150, 150, 150)
BACKGROUND = (255, 255, 255)
TEXT = (30, 30, 30)


def _thumbnail(image: Any, size: tuple[int, int]) -> Image.Image:
    """Fit ``image`` into ``size`` (width, height) without distortion, centred on white."""
    picture = load_image(image).copy()
    picture.thumbnail(size, Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", size, BACKGROUND)
    canvas.paste(picture, ((size[0] - picture.width) // 2, (size[1] - picture.height) // 2))
    return canvas


def draw_ranking(
    queries: Sequence[Any],
    gallery: Sequence[Any],
    indices: Any,
    *,
    scores: Any = None,
    query_ids: Sequence[Any] | None = None,
    gallery_ids: Sequence[Any] | None = None,
    topk: int = 5,
    cell: tuple[int, int] = (64, 128),
    output: str | os.PathLike | None = None,
) -> Image.Image:
    """Draw one row per query: the query, then its ``topk`` ranked gallery images.

    Args:
        queries, gallery: images in any form :func:`csdn.preprocess.load_image` accepts.
        indices: ``[Q, k]`` gallery indices, best first (e.g. ``csdn.match(...).indices``).
        scores: optional ``[Q, k]`` similarities printed under each gallery image.
        query_ids, gallery_ids: identities; when both are given, borders are green
            for a correct match and red for a wrong one.
        cell: (width, height) of each thumbnail.
        output: optional PNG path; written atomically.
    """
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.shape[0] != len(queries):
        raise ValueError(f"indices must be [num_queries={len(queries)}, k], got shape {tuple(indices.shape)}")
    if (query_ids is None) != (gallery_ids is None):
        raise ValueError("pass both query_ids and gallery_ids to colour matches, or neither")
    score_rows = None if scores is None else np.asarray(scores)
    k = min(topk, indices.shape[1])
    border, gap, label_h = 4, 12, 16
    tile_w, tile_h = cell[0] + 2 * border, cell[1] + 2 * border + label_h
    width = gap + (k + 1) * (tile_w + gap) + gap
    height = gap + len(queries) * (tile_h + gap)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()

    for row, query in enumerate(queries):
        top = gap + row * (tile_h + gap)
        left = gap
        sheet.paste(_thumbnail(query, cell), (left + border, top + border))
        draw.rectangle([left, top, left + tile_w - 1, top + cell[1] + 2 * border - 1], outline=(60, 90, 200), width=border)
        caption = "query" if query_ids is None else f"query {query_ids[row]}"
        draw.text((left + border, top + cell[1] + 2 * border + 2), caption, fill=TEXT, font=font)
        left += tile_w + 2 * gap
        for rank in range(k):
            index = int(indices[row, rank])
            colour = GREY
            if query_ids is not None and gallery_ids is not None:
                colour = GREEN if gallery_ids[index] == query_ids[row] else RED
            x = left + rank * (tile_w + gap)
            sheet.paste(_thumbnail(gallery[index], cell), (x + border, top + border))
            draw.rectangle([x, top, x + tile_w - 1, top + cell[1] + 2 * border - 1], outline=colour, width=border)
            caption = f"#{rank + 1}" + ("" if score_rows is None else f" {float(score_rows[row, rank]):.2f}")
            draw.text((x + border, top + cell[1] + 2 * border + 2), caption, fill=TEXT, font=font)

    if output is not None:
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(output, lambda temp: sheet.save(temp, format="PNG"))
    return sheet
