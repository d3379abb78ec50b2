"""embed_image on every input kind and image mode, and the decoding rules behind it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from csdn.images.transforms import ImageDecodeError, TestTransform, load_image

H, W = 64, 32


@pytest.fixture
def rgb_array():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(80, 40, 3), dtype=np.uint8)


def _embed(model, images, **kw):
    return model.embed_image(images, "visible", **kw)


def test_single_image_gives_a_vector_and_lists_give_rows(tiny_model, rgb_array):
    d = 2 * tiny_model.config.test_feature_dim
    one = _embed(tiny_model, Image.fromarray(rgb_array))
    assert one.shape == (d,) and one.dtype == torch.float32
    many = _embed(tiny_model, [Image.fromarray(rgb_array), rgb_array, rgb_array[::-1].copy()])
    assert many.shape == (3, d)
    torch.testing.assert_close(many.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(many[0], one)
    torch.testing.assert_close(many[1], one)
    assert _embed(tiny_model, []).shape == (0, d)


def test_every_input_kind_agrees(tiny_model, rgb_array, tmp_path):
    path = tmp_path / "person.png"
    Image.fromarray(rgb_array).save(path)
    reference = _embed(tiny_model, Image.fromarray(rgb_array))
    preprocessed = TestTransform(tiny_model.config)(Image.fromarray(rgb_array))
    inputs = {
        "str path": str(path),
        "Path": path,
        "numpy uint8": rgb_array,
        "numpy float [0,1]": rgb_array.astype(np.float32) / 255.0,
        "numpy float [0,255]": rgb_array.astype(np.float64),
        "numpy uint16 (16-bit)": rgb_array.astype(np.uint16) * 257,
        "tensor [3,H,W]": preprocessed,
    }
    for name, item in inputs.items():
        torch.testing.assert_close(_embed(tiny_model, item), reference, msg=name)
    batch = _embed(tiny_model, preprocessed.unsqueeze(0).repeat(2, 1, 1, 1))
    torch.testing.assert_close(batch, reference.expand(2, -1))
    numpy_batch = _embed(tiny_model, np.stack([rgb_array, rgb_array]))
    torch.testing.assert_close(numpy_batch, reference.expand(2, -1))


def test_image_modes_decode_to_the_equivalent_rgb(tiny_model):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, size=(50, 25), dtype=np.uint8)
    as_rgb = np.repeat(gray[:, :, None], 3, axis=2)
    reference = np.asarray(load_image(as_rgb))
    cases = {
        "L": Image.fromarray(gray, mode="L"),
        "I;16 full range": Image.fromarray(gray.astype(np.uint16) * 257),
        "numpy HxW": gray,
        "numpy HxWx1": gray[:, :, None],
        "LA": Image.fromarray(np.stack([gray, np.zeros_like(gray)], axis=2), mode="LA"),
        "RGBA": Image.fromarray(np.concatenate([as_rgb, np.full((50, 25, 1), 7, np.uint8)], axis=2), mode="RGBA"),
        "numpy HxWx4": np.concatenate([as_rgb, np.zeros((50, 25, 1), np.uint8)], axis=2),
    }
    for name, image in cases.items():
        decoded = load_image(image)
        assert decoded.mode == "RGB", name
        np.testing.assert_array_equal(np.asarray(decoded), reference, err_msg=name)
    palette = Image.fromarray(as_rgb).convert("P")
    np.testing.assert_array_equal(np.asarray(load_image(palette)), np.asarray(palette.convert("RGB")))
    emb_l = tiny_model.embed_image(cases["L"], "infrared")
    emb_rgb = tiny_model.embed_image(as_rgb, "infrared")
    torch.testing.assert_close(emb_l, emb_rgb)


def test_sixteen_bit_thermal_frames_scale_by_their_bit_depth(tmp_path):
    ramp = np.linspace(0, 1, 64 * 32).reshape(64, 32)
    expected = np.rint(ramp * 255).astype(np.uint8)
    for bits in (10, 12, 14, 16):
        counts = np.rint(ramp * ((1 << bits) - 1)).astype(np.uint16)
        path = tmp_path / f"thermal{bits}.png"
        Image.fromarray(counts).save(path)  # stored as a 16-bit PNG
        for source in (counts, Image.fromarray(counts), path):
            decoded = np.asarray(load_image(source))
            assert decoded.shape == (64, 32, 3)
            assert np.array_equal(decoded[:, :, 0], decoded[:, :, 2])
            assert np.abs(decoded[:, :, 0].astype(int) - expected).max() <= 1, (bits, type(source))
    # a dim 16-bit frame is not blown out to white as PIL's own 8-bit conversion would
    dim = np.full((8, 4), 1000, dtype=np.uint16)
    assert np.asarray(load_image(dim)).max() < 255
    forced = np.asarray(load_image(dim, bit_depth=16))
    assert forced.max() == round(1000 * 255 / 65535)


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (np.zeros((4, 4, 2), np.uint8), ImageDecodeError, "C in 1, 3 or 4"),
        (np.full((4, 4), -1.0), ImageDecodeError, ">= 0"),
        (np.full((4, 4), 300.0), ImageDecodeError, r"\[0, 1\] or \[0, 255\]"),
        (np.array([[np.nan]]), ImageDecodeError, "NaN"),
        (np.zeros((0, 4), np.uint8), ImageDecodeError, "no pixels"),
        (12345, TypeError, "cannot read an image from int"),
    ],
)
def test_bad_arrays_are_named(bad, error, message):
    with pytest.raises(error, match=message):
        load_image(bad)


def test_unreadable_files_are_named(tiny_model, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"definitely not a jpeg")
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        tiny_model.embed_image(str(broken), "visible")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        tiny_model.embed_image([str(tmp_path / "missing.png")], "visible")


def test_ambiguous_array_and_bad_tensors_are_rejected(tiny_model):
    with pytest.raises(ValueError, match="cannot tell images apart"):
        tiny_model.embed_image(np.zeros((10, 64, 32), np.uint8), "visible")
    with pytest.raises(ValueError, match=r"\[N,3,64,32\]"):
        tiny_model.embed_image(torch.zeros(2, 3, 60, 30), "visible")
    with pytest.raises(ValueError, match="batch_size"):
        tiny_model.embed_image(torch.zeros(1, 3, H, W), "visible", batch_size=0)
    with pytest.raises(ValueError, match="precision"):
        tiny_model.embed_image(torch.zeros(1, 3, H, W), "visible", precision="fp8")


@pytest.mark.parametrize(
    "alias, canonical",
    [
        ("rgb", "visible"),
        ("VIS", "visible"),
        ("ir", "infrared"),
        ("thermal", "infrared"),
        ("nir", "infrared"),
        (" Infrared ", "infrared"),
    ],
)
def test_modality_aliases(tiny_model, alias, canonical):
    x = torch.randn(2, 3, H, W)
    torch.testing.assert_close(tiny_model.embed_image(x, alias), tiny_model.embed_image(x, canonical))


def test_unknown_modality_error_lists_choices(tiny_model):
    with pytest.raises(ValueError, match=r"unknown modality 'color'; choose one of .*'rgb'.*'thermal'"):
        tiny_model.embed_image(torch.randn(1, 3, H, W), "color")


def test_flip_augmentation_definition(tiny_model):
    x = torch.randn(3, 3, H, W)
    with torch.inference_mode():
        f = tiny_model.image_features(x, "infrared")
        f_flip = tiny_model.image_features(x.flip(3), "infrared")
    with_flip = tiny_model.embed_image(x, "infrared", batch_size=2)
    without = tiny_model.embed_image(x, "infrared", flip=False)
    torch.testing.assert_close(with_flip, F.normalize(torch.cat([f, f_flip], dim=1), dim=1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(without, F.normalize(f, dim=1), atol=1e-5, rtol=1e-5)


def test_embedding_restores_training_mode_and_uses_running_statistics(tiny_model):
    x = torch.randn(4, 3, H, W)
    expected = tiny_model.embed_image(x, "visible")
    tiny_model.train()
    again = tiny_model.embed_image(x, "visible")
    assert tiny_model.training
    torch.testing.assert_close(again, expected)


def test_progress_bar_is_optional(tiny_model, capsys):
    tiny_model.embed_image(torch.randn(3, 3, H, W), "visible", progress=True, batch_size=2)
    assert "embed visible" in capsys.readouterr().err
