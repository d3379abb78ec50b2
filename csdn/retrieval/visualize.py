"""Ranked-results pictures: each query beside its top-k gallery images.

Drawn with PIL alone. When identities are known, a gallery image gets a green
border if it shows the query's identity and a red one if not; without
identities the borders are neutral grey. Under a query: its file name, its
identity and camera when known, and, when its true match is not among the
top k, the rank it came at (or that the gallery has none); under a match its
rank and, on a line of its own, its score, so the two never read as one number.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from csdn.errors import OutputExistsError
from csdn.images.transforms import load_image
from csdn.system.fileio import atomic_write

GREEN = (40, 170, 60)
RED = (210, 40, 40)
GREY = (150, 150, 150)
BACKGROUND = (255, 255, 255)
TEXT = (30, 30, 30)
BORDER, GAP, LINE_H = 4, 12, 12  # tile border, space between tiles, one caption line (pixels)
LABEL_H = 3 * LINE_H + 4  # the caption band under a tile: up to three lines (a query's name, id/camera, true rank)
# the largest picture drawn: 40 megapixels is 120 MB of RGB in memory (and more while PNG-encoding it)
MAX_SHEET_PIXELS = 40_000_000
DEFAULT_CELL = (64, 128)


def sheet_size(num_queries: int, k: int, cell: tuple[int, int] = DEFAULT_CELL) -> tuple[int, int]:
    """(width, height) of the picture of ``num_queries`` rows, each a query and ``k`` matches."""
    tile_w, tile_h = cell[0] + 2 * BORDER, cell[1] + 2 * BORDER + LABEL_H
    return GAP + (k + 1) * (tile_w + GAP) + GAP, GAP + num_queries * (tile_h + GAP)


def check_sheet_size(num_queries: int, k: int, cell: tuple[int, int] = DEFAULT_CELL) -> None:
    """Refuse, before any work, a picture too large to hold in memory."""
    width, height = sheet_size(num_queries, k, cell)
    if width * height > MAX_SHEET_PIXELS:
        raise ValueError(
            f"a ranking picture of {num_queries} queries x top {k} would be {width} x {height} pixels, over the "
            f"{MAX_SHEET_PIXELS // 1_000_000} megapixels drawn at most: draw fewer queries (--visualize-queries) or "
            "fewer matches per query (--topk)"
        )


def _thumbnail(image: Any, size: tuple[int, int]) -> Image.Image:
    """Fit ``image`` into ``size`` (width, height) without distortion, centred on white."""
    picture = load_image(image).copy()
    picture.thumbnail(size, Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", size, BACKGROUND)
    canvas.paste(picture, ((size[0] - picture.width) // 2, (size[1] - picture.height) // 2))
    return canvas


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    """``text``, shortened from the left with "..." until it fits ``width`` pixels (file names end usefully)."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("..." + text, font=font) > width:
        text = text[1:]
    return "..." + text


def printable(text: str) -> str:
    """``text`` with every character PIL cannot lay out on one line (newlines, undecodable bytes) as ``?``."""
    return "".join(char if char.isprintable() else "?" for char in text)


def query_caption(query: Any, identity: Any | None) -> str:
    """A query's first caption line: its file name when it has one, else its identity, else "query"."""
    if isinstance(query, (str, os.PathLike)):
        return printable(Path(query).name)
    if identity is not None:
        return printable(f"query {identity}")
    return "query"


def query_details(identity: Any | None, camera: Any | None, true_rank: int | None, shown: int) -> list[str]:
    """The caption lines after the name: ``id 7 cam 3``, and ``true: rank 12`` when the true match
    ranked below the ``shown`` matches (``true: none`` when ``true_rank`` is 0: the gallery has none)."""
    parts = [f"id {identity}" if identity is not None else "", f"cam {camera}" if camera is not None else ""]
    lines = [printable(" ".join(part for part in parts if part))] if any(parts) else []
    if true_rank == 0:
        lines.append("true: none")
    elif true_rank is not None and true_rank > shown:
        lines.append(f"true: rank {true_rank}")
    return lines


def true_match_ranks(scores: Any, query_ids: Sequence[Any], gallery_ids: Sequence[Any]) -> list[int]:
    """For each query row of ``scores`` ``[Q, G]`` (higher is closer), the 1-based rank of its best-scoring
    gallery item of the same identity among all ``G``; 0 where the gallery has none of that identity."""
    scores = np.asarray(scores, dtype=np.float64)
    gallery = np.asarray(gallery_ids)
    ranks = []
    for row, identity in enumerate(query_ids):
        same = gallery == identity
        if not same.any():
            ranks.append(0)
            continue
        best = scores[row][same].max()
        ranks.append(1 + int((scores[row] > best).sum()))
    return ranks


def refuse_drawn_image(output: str | os.PathLike, images: Sequence[Any], what: str = "--visualize") -> None:
    """:class:`csdn.errors.OutputExistsError` if ``output`` is (or links to) one of the image files drawn.

    The picture must never replace a user's photo, whatever ``overwrite`` says: the images a
    ranking shows are inputs of the run.
    """
    target = Path(output).resolve()
    for image in images:
        if isinstance(image, (str, os.PathLike)) and Path(image).resolve() == target:
            raise OutputExistsError(
                f"{what} {output} is one of the images drawn ({image}), an input image of this run; "
                "write the picture under another name (--overwrite never replaces an input)"
            )


def draw_ranking(
    queries: Sequence[Any],
    gallery: Sequence[Any],
    indices: Any,
    *,
    scores: Any = None,
    query_ids: Sequence[Any] | None = None,
    gallery_ids: Sequence[Any] | None = None,
    query_cameras: Sequence[Any] | None = None,
    true_ranks: Sequence[int] | None = None,
    topk: int = 5,
    cell: tuple[int, int] = DEFAULT_CELL,
    output: str | os.PathLike | None = None,
) -> Image.Image:
    """Draw one row per query: the query, then its ``topk`` ranked gallery images.

    Args:
        queries, gallery: images in any form :func:`csdn.images.transforms.load_image` accepts.
        indices: ``[Q, k]`` gallery indices, best first (e.g. ``csdn.match(...).indices``).
        scores: optional ``[Q, k]`` similarities printed under each gallery image.
        query_ids, gallery_ids: identities; when both are given, borders are green
            for a correct match and red for a wrong one.
        query_cameras: optional camera of each query, written under it with its identity.
        true_ranks: optional rank of each query's true match in the whole gallery
            (:func:`true_match_ranks`; 0: none there), written under the query when it is
            below the ``topk`` drawn.
        cell: (width, height) of each thumbnail.
        output: optional PNG path; written atomically.
    """
    if output is not None:
        refuse_drawn_image(output, [*queries, *gallery], "output")
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.shape[0] != len(queries):
        raise ValueError(f"indices must be [num_queries={len(queries)}, k], got shape {tuple(indices.shape)}")
    if (query_ids is None) != (gallery_ids is None):
        raise ValueError("pass both query_ids and gallery_ids to colour matches, or neither")
    for name, values in (("query_cameras", query_cameras), ("true_ranks", true_ranks)):
        if values is not None and len(values) != len(queries):
            raise ValueError(f"{name} has {len(values)} entries for {len(queries)} queries: give one per query")
    score_rows = None if scores is None else np.asarray(scores)
    k = min(topk, indices.shape[1])
    check_sheet_size(len(queries), k, cell)
    border, gap = BORDER, GAP
    tile_w, tile_h = cell[0] + 2 * border, cell[1] + 2 * border + LABEL_H
    width, height = sheet_size(len(queries), k, cell)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()

    for row, query in enumerate(queries):
        top = gap + row * (tile_h + gap)
        text_top = top + cell[1] + 2 * border + 2  # the caption band under this row's tiles
        left = gap
        sheet.paste(_thumbnail(query, cell), (left + border, top + border))
        draw.rectangle(
            [left, top, left + tile_w - 1, top + cell[1] + 2 * border - 1], outline=(60, 90, 200), width=border
        )
        identity = None if query_ids is None else query_ids[row]
        camera = None if query_cameras is None else query_cameras[row]
        true_rank = None if true_ranks is None else int(true_ranks[row])
        named = isinstance(query, (str, os.PathLike))  # else the identity is already in the first line
        lines = [query_caption(query, identity), *query_details(identity if named else None, camera, true_rank, k)]
        for number, line in enumerate(lines):
            draw.text(
                (left + border, text_top + number * LINE_H), _fit(draw, line, font, cell[0]), fill=TEXT, font=font
            )
        left += tile_w + 2 * gap
        for rank in range(k):
            index = int(indices[row, rank])
            colour = GREY
            if query_ids is not None and gallery_ids is not None:
                colour = GREEN if gallery_ids[index] == query_ids[row] else RED
            x = left + rank * (tile_w + gap)
            sheet.paste(_thumbnail(gallery[index], cell), (x + border, top + border))
            draw.rectangle([x, top, x + tile_w - 1, top + cell[1] + 2 * border - 1], outline=colour, width=border)
            draw.text((x + border, text_top), f"rank {rank + 1}", fill=TEXT, font=font)
            if score_rows is not None:
                draw.text(
                    (x + border, text_top + LINE_H), f"score {float(score_rows[row, rank]):.2f}", fill=TEXT, font=font
                )

    if output is not None:
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(output, lambda temp: sheet.save(temp, format="PNG"))
    return sheet
