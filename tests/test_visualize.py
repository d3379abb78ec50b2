"""The ranked-results picture marks right and wrong matches."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from csdn.retrieval.visualize import BORDER, GAP, GREEN, GREY, LABEL_H, LINE_H, RED, draw_ranking, query_caption


def _images(count, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40, 20, 3), dtype=np.uint8) for _ in range(count)]


def _tile_origin(row, rank, cell=(32, 64)):
    """Top-left corner of a ranked tile (rank 0 = best match)."""
    tile_w, tile_h = cell[0] + 2 * BORDER, cell[1] + 2 * BORDER + LABEL_H
    return GAP + tile_w + 2 * GAP + rank * (tile_w + GAP), GAP + row * (tile_h + GAP)


def _border_colour(sheet, row, rank, cell=(32, 64)):
    x, y = _tile_origin(row, rank, cell)
    return sheet.getpixel((x + 1, y + cell[1] // 2))


def _inked_caption_lines(sheet, row, rank, cell=(32, 64)) -> list[bool]:
    """Whether each of the two caption lines under a ranked tile holds any text."""
    x, y = _tile_origin(row, rank, cell)
    top = y + cell[1] + 2 * BORDER + 2
    band = np.asarray(sheet.convert("L"))[:, x : x + cell[0] + 2 * BORDER]
    return [bool((band[top + i * LINE_H : top + (i + 1) * LINE_H] < 128).any()) for i in range(2)]


def test_green_for_the_right_identity_red_otherwise(tmp_path):
    queries, gallery = _images(2, 0), _images(4, 1)
    indices = np.array([[2, 0, 1], [3, 1, 0]])
    out = tmp_path / "sub" / "ranked.png"
    sheet = draw_ranking(
        queries,
        gallery,
        indices,
        query_ids=[7, 9],
        gallery_ids=[9, 5, 7, 1],
        scores=np.zeros((2, 3)),
        topk=3,
        cell=(32, 64),
        output=out,
    )
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


def test_rank_and_score_are_written_on_separate_lines():
    queries, gallery = _images(1, 0), _images(3, 1)
    with_scores = draw_ranking(queries, gallery, [[0, 1, 2]], scores=[[0.25, 0.2, 0.1]], topk=3, cell=(32, 64))
    without = draw_ranking(queries, gallery, [[0, 1, 2]], topk=3, cell=(32, 64))
    assert _inked_caption_lines(with_scores, 0, 2) == [True, True]  # "rank 3" above "score 0.10"
    assert _inked_caption_lines(without, 0, 2) == [True, False]


def test_query_caption_is_the_file_name_else_the_identity(tmp_path):
    assert query_caption(tmp_path / "cam3" / "0007" / "0001.jpg", None) == "0001.jpg"
    assert query_caption(str(tmp_path / "ir_17.png"), None) == "ir_17.png"
    assert query_caption(tmp_path / "ir_17.png", 17) == "ir_17.png"  # the identity goes on the next line
    assert query_caption(np.zeros((4, 2, 3), np.uint8), 17) == "query 17"
    assert query_caption(np.zeros((4, 2, 3), np.uint8), None) == "query"


def test_a_picture_too_large_to_hold_is_refused_before_drawing():
    tiny = np.zeros((8, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="draw fewer queries"):
        draw_ranking([tiny] * 5000, [tiny] * 60, np.zeros((5000, 60), np.int64), topk=60)
    sheet = draw_ranking([tiny] * 2, [tiny] * 3, np.zeros((2, 3), np.int64), topk=3)  # small ones still draw
    assert sheet.size[1] > 0


def test_the_cli_refuses_an_oversized_ranking_picture_before_any_work(tmp_path, capsys):
    from csdn import cli

    picture, ranking = tmp_path / "ranking.png", tmp_path / "ranking.csv"
    argv = ["match", str(tmp_path / "q"), str(tmp_path / "g"), "--output", str(ranking), "--visualize", str(picture)]
    assert cli.main([*argv, "--visualize-queries", "100000", "--topk", "50"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--visualize-queries" in lines[0] and "megapixels" in lines[0]
    assert not picture.exists() and not ranking.exists()
