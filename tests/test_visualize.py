"""The ranked-results picture marks right and wrong matches."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from csdn.retrieval.visualize import GREEN, GREY, RED, draw_ranking


def _images(count, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40, 20, 3), dtype=np.uint8) for _ in range(count)]


def _border_colour(sheet, row, rank, cell=(32, 64)):
    border, gap, label_h = 4, 12, 16
    tile_w, tile_h = cell[0] + 2 * border, cell[1] + 2 * border + label_h
    x = gap + tile_w + 2 * gap + rank * (tile_w + gap)
    y = gap + row * (tile_h + gap)
    return sheet.getpixel((x + 1, y + cell[1] // 2))


def test_green_for_the_right_identity_red_otherwise(tmp_path):
    queries, gallery = _images(2, 0), _images(4, 1)
    indices = np.array([[2, 0, 1], [3, 1, 0]])
    out = tmp_path / "sub" / "ranked.png"
    sheet = draw_ranking(queries, gallery, indices, query_ids=[7, 9], gallery_ids=[9, 5, 7, 1],
                         scores=np.zeros((2, 3)), topk=3, cell=(32, 64), output=out)
    assert Image.open(out).size == sheet.size
    assert _border_colour(sheet, 0, 0) == GREEN  # gallery 2 is identity 7
    assert _border_colour(sheet, 0, 1) == RED
    assert _border_colour(sheet, 1, 0) == RED
    assert _border_colour(sheet, 1, 2) == GREEN  # gallery 0 is identity 9
    assert not list(out.parent.glob(".*.tmp"))


def test_without_identities_borders_are_neutral():
    sheet = draw_ranking(_images(1, 2), _images(3, 3), [[0, 1]], topk=2, cell=(32, 64))
    assert _border_colour(sheet, 0, 0) == GREY


def test_shape_and_identity_errors():
    with pytest.raises(ValueError, match="num_queries=2"):
        draw_ranking(_images(2, 0), _images(2, 1), [[0, 1]])
    with pytest.raises(ValueError, match="both query_ids and gallery_ids"):
        draw_ranking(_images(1, 0), _images(2, 1), [[0, 1]], query_ids=[1])
