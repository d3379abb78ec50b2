"""The embedding front end (csdn.images.embedding) on an engine of its own: a torch-free stand-in model.

What PyTorch and the exported runtime share is shown here once, on a third engine: a new backend
that supplies only ``batch`` and ``run`` gets the input kinds, folders, batching, flip, skip-or-raise,
the NaN checks and the report without writing any of them. That the front end needs no torch is
shown with the runtime it serves (tests/test_export.py, a subprocess where torch cannot be imported).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from csdn.errors import (
    ImageDecodeError,
    ImageTensorError,
    NonFiniteEmbeddingError,
    SkippedImagesWarning,
    UnsupportedInputError,
)
from csdn.images.decode import Preprocessing
from csdn.images.embedding import EmbeddingReport, Inputs, embed_inputs, read_inputs

H, W = 16, 8


class LinearEngine:
    """A fixed random projection of the pixels; counts the batches it runs."""

    feature_dim = 5

    def __init__(self, broken: bool = False):
        self.preprocessing = Preprocessing((H, W), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bilinear")
        self.weights = np.random.default_rng(0).standard_normal((3 * H * W, self.feature_dim)).astype(np.float32)
        self.rows_run: list[int] = []
        self.broken = broken

    def inputs(self, images):
        return read_inputs(images)

    def batch(self, images, flip):
        batch = np.stack(images) if isinstance(images, list) else images
        return np.concatenate([batch, batch[..., ::-1]]) if flip else batch

    def run(self, batch):
        self.rows_run.append(len(batch))
        features = batch.reshape(len(batch), -1) @ self.weights
        return features * np.inf if self.broken else features

    def finite(self, batch):
        return np.isfinite(batch).reshape(len(batch), -1).all(axis=1).tolist()

    def reference(self, image: np.ndarray) -> np.ndarray:
        """f(x) for one HxWx3 uint8 image, by hand."""
        x = self.preprocessing(Image.fromarray(image))
        return x.reshape(-1) @ self.weights


@pytest.fixture
def people(tmp_path) -> dict[str, object]:
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8) for _ in range(3)]
    folder = tmp_path / "people"
    (folder / "deeper").mkdir(parents=True)
    Image.fromarray(arrays[0]).save(folder / "a.png")
    Image.fromarray(arrays[1]).save(folder / "deeper" / "b.png")
    (folder / ".hidden.png").write_bytes(b"not an image")
    return {"arrays": arrays, "folder": folder}


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def test_flip_is_the_image_and_its_mirror_side_by_side_at_unit_norm(people):
    engine = LinearEngine()
    image = people["arrays"][0]
    expected = _unit(np.concatenate([engine.reference(image), engine.reference(image[:, ::-1].copy())]))
    report = embed_inputs(engine, image, "visible")
    assert report.single and report.embeddings.dtype == np.float32
    np.testing.assert_allclose(report.result(), expected, atol=1e-5, rtol=0)
    plain = embed_inputs(engine, image, "visible", flip=False).result()
    np.testing.assert_allclose(plain, _unit(engine.reference(image)), atol=1e-5, rtol=0)
    assert engine.rows_run == [2, 1]  # the mirror ran in the same call as the original


def test_every_input_kind_gives_the_same_rows_and_batching_is_by_batch_size(people):
    engine = LinearEngine()
    arrays = people["arrays"]
    expected = embed_inputs(engine, arrays[0], "visible").result()
    path = people["folder"] / "a.png"
    for item in (str(path), path, Image.fromarray(arrays[0]), path.read_bytes(), open(path, "rb")):
        np.testing.assert_allclose(embed_inputs(engine, item, "visible").result(), expected, atol=1e-6, rtol=0)
    engine.rows_run.clear()
    batch = embed_inputs(engine, np.stack(arrays * 3), "visible", batch_size=4).result()
    assert batch.shape == (9, 2 * engine.feature_dim)
    assert engine.rows_run == [8, 8, 2]  # 4 + 4 + 1 images, each with its mirror
    np.testing.assert_allclose(batch[3], expected, atol=1e-6, rtol=0)
    assert embed_inputs(engine, [], "visible").result().shape == (0, 2 * engine.feature_dim)


def test_a_folder_stands_for_its_images_and_the_report_names_them(people):
    engine = LinearEngine()
    folder = people["folder"]
    report = embed_inputs(engine, folder, "infrared")
    assert report.sources == [str(folder / "a.png"), str(folder / "deeper" / "b.png")]
    assert report.kept == [0, 1] and report.skipped == [] and not report.single
    one = embed_inputs(engine, folder / "deeper" / "b.png", "infrared").result()
    np.testing.assert_allclose(report.embeddings[1], one, atol=1e-6, rtol=0)


def test_unreadable_images_raise_by_name_or_are_skipped_and_reported(people):
    engine = LinearEngine()
    folder = people["folder"]
    (folder / "broken.png").write_bytes(b"junk")
    with pytest.raises(ImageDecodeError, match="broken.png"):
        embed_inputs(engine, folder, "visible")
    report = embed_inputs(engine, folder, "visible", on_error="skip", batch_size=1)
    assert [s.source for s in report.skipped] == [str(folder / "broken.png")]
    assert report.kept == [0, 2] and len(report.embeddings) == 2
    with pytest.warns(SkippedImagesWarning, match="broken.png"):
        report.result()
    with pytest.raises(ImageDecodeError, match="none of the 1 images could be read"):
        embed_inputs(engine, [folder / "broken.png"], "visible", on_error="skip")
    with pytest.raises(ImageDecodeError, match="image 1 of this call"):
        embed_inputs(engine, [people["arrays"][0], b"junk"], "visible")


def test_bad_inputs_and_settings_are_refused_before_the_model_runs(people):
    engine = LinearEngine()
    with pytest.raises(UnsupportedInputError, match="cannot read images from dict; pass .*a folder of images"):
        embed_inputs(engine, {"a": 1}, "visible")
    with pytest.raises(UnsupportedInputError, match="item 1 of the list is a int"):
        embed_inputs(engine, [people["arrays"][0], 7], "visible")
    with pytest.raises(ValueError, match="batch_size"):
        embed_inputs(engine, people["arrays"][0], "visible", batch_size=0)
    with pytest.raises(ValueError, match="bit_depth"):
        embed_inputs(engine, people["arrays"][0], "visible", bit_depth=7)
    with pytest.raises(ImageDecodeError, match=r"reach 5000, beyond the 12-bit range"):
        embed_inputs(engine, np.full((H, W), 5000, np.uint16), "visible", bit_depth=12)
    assert engine.rows_run == []


def test_nan_in_preprocessed_input_and_in_the_output_is_named(tmp_path):
    engine = LinearEngine()
    batch = np.random.default_rng(2).standard_normal((5, 3, H, W)).astype(np.float32)
    batch[3, 0, 0, 0] = np.nan
    with pytest.raises(ImageTensorError, match=r"1 preprocessed image\(s\) hold NaN.*image 3 of this call"):
        embed_inputs(engine, Inputs(single=False, batch=batch), "visible", batch_size=2)
    ok = embed_inputs(engine, Inputs(single=False, batch=batch[:3]), "visible", batch_size=2)
    assert isinstance(ok, EmbeddingReport) and ok.sources == [0, 1, 2]
    for name in ("a.png", "b.png"):
        Image.new("RGB", (W, H), (10, 20, 30)).save(tmp_path / name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused by name, not with a numpy RuntimeWarning
        with pytest.raises(NonFiniteEmbeddingError, match=r"2 of 2 image\(s\): .*a\.png.*image 0, 1 of this call"):
            embed_inputs(LinearEngine(broken=True), tmp_path, "visible")
