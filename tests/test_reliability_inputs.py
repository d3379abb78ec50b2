"""Reliability of what enters the model (issue "Reliability"): non-finite values, stated bit
depths for thermal sequences, extreme-scale embeddings in ``match``, file-like inputs and
the errors for inputs that cannot be used."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

import csdn
from csdn.config import CSDNConfig
from csdn.errors import CSDNError, ImageDecodeError, ImageTensorError, SettingError, UnsupportedInputError
from csdn.images.transforms import TestTransform, load_image

H, W = 64, 32


@pytest.fixture
def rgb_array():
    return np.random.default_rng(3).integers(0, 256, size=(H, W, 3), dtype=np.uint8)


# ---------------------------------------------------------------- non-finite values


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_tensor_is_rejected_by_embed_image_naming_the_image(tiny_model, value):
    batch = torch.randn(5, 3, H, W)
    batch[3, 1, 10, 5] = value
    with pytest.raises(
        ImageTensorError, match=r"1 preprocessed image\(s\) hold NaN or infinite values \(image 3 of this call"
    ):
        tiny_model.embed_image(batch, "visible", batch_size=2)
    with pytest.raises(ImageTensorError, match=r"\(image 0 of this call"):
        tiny_model.embed_image(batch[3], "infrared")


def test_non_finite_tensor_is_rejected_by_image_features_naming_the_rows(tiny_model):
    batch = torch.randn(4, 3, H, W)
    batch[1, 0, 0, 0] = float("nan")
    batch[2, 2, 5, 5] = float("inf")
    tiny_model.eval()
    with pytest.raises(
        ImageTensorError, match=r"2 of 4 preprocessed images hold NaN or infinite values \(batch rows 1, 2\)"
    ):
        tiny_model.image_features(batch, "visible")
    assert isinstance(ImageTensorError("x"), (CSDNError, ValueError))


def test_nan_in_a_decoded_float_array_is_rejected_naming_the_image(tiny_model, rgb_array):
    bad = rgb_array.astype(np.float32) / 255
    bad[2, 3, 1] = np.nan
    with pytest.raises(ImageDecodeError, match=r"image 1 of this call: image array holds 1 NaN or infinite"):
        tiny_model.embed_image([rgb_array, bad], "visible")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"std": (0.229, 0.0, 0.225)}, "std .* must be positive"),
        ({"std": (0.229, -0.1, 0.225)}, "std .* must be positive"),
        ({"std": (0.229, math.inf, 0.225)}, "std .* NaN or infinite"),
        ({"mean": (math.nan, 0.456, 0.406)}, "mean .* NaN or infinite"),
        ({"mean": (0.5, 0.5)}, "mean needs one value per RGB channel"),
        ({"context_length": 0}, "context_length must be at least 1"),
        ({"embed_dim": 0}, "embed_dim must be at least 1"),
    ],
)
def test_config_rejects_unusable_statistics_and_sizes(overrides, message):
    with pytest.raises(SettingError, match=message):
        CSDNConfig.tiny(**overrides)
    with pytest.raises(ValueError):  # also a ValueError, as config errors were before
        CSDNConfig.from_dict({**CSDNConfig.tiny().to_dict(), **overrides})


# ---------------------------------------------------------------- bit depth


def _ten_bit_sequence() -> list[np.ndarray]:
    """Dim night frames from a 10-bit camera (counts 20..250); frames 1 and 2 catch a hot pixel at 1023."""
    rng = np.random.default_rng(7)
    frames = [rng.integers(20, 250, size=(H, W), dtype=np.uint16) for _ in range(3)]
    frames[1][0, 0] = 1023
    frames[2][0, 0] = 1023
    return frames


def test_stated_bit_depth_scales_every_frame_of_a_sequence_alike(tiny_model):
    frames = _ten_bit_sequence()
    # Frame 2 without its hot pixel: the per-frame guess calls it 8-bit (4x brighter than frame 1).
    cold = frames[2].copy()
    cold[0, 0] = frames[0][0, 0]
    guessed_hot, guessed_cold = np.asarray(load_image(frames[2])), np.asarray(load_image(cold))
    assert not np.array_equal(guessed_hot[1:, 1:], guessed_cold[1:, 1:])  # what bit_depth=None does

    stated_hot = np.asarray(load_image(frames[2], bit_depth=10))
    stated_cold = np.asarray(load_image(cold, bit_depth=10))
    np.testing.assert_array_equal(stated_hot[1:, 1:], stated_cold[1:, 1:])
    np.testing.assert_array_equal(stated_cold[:, :, 0], np.rint(cold * (255 / 1023)).astype(np.uint8))

    # The same in embed_image: one scaling for the call, so frame 0's embedding does not depend
    # on hot pixels elsewhere in the sequence, and equals the embedding of its own 8-bit scaling.
    together = tiny_model.embed_image(frames, "infrared", bit_depth=10)
    alone = tiny_model.embed_image(frames[0], "infrared", bit_depth=10)
    torch.testing.assert_close(together[0], alone)
    as_8bit = tiny_model.embed_image(np.rint(frames[0] * (255 / 1023)).astype(np.uint8), "infrared")
    torch.testing.assert_close(alone, as_8bit)
    transform = TestTransform(tiny_model.config)
    torch.testing.assert_close(
        transform(load_image(frames[2], bit_depth=10))[:, 1:, 1:],
        transform(load_image(cold, bit_depth=10))[:, 1:, 1:],
        atol=0.1,
        rtol=0,
    )


def test_values_above_the_stated_bit_depth_are_an_error_naming_the_image_and_maximum(tiny_model, tmp_path):
    frames = _ten_bit_sequence()
    frames[2][9, 9] = 1500
    with pytest.raises(ImageDecodeError, match=r"image 2 of this call: image values reach 1500, beyond the 10-bit"):
        tiny_model.embed_image(frames, "infrared", bit_depth=10)
    path = tmp_path / "hot.png"
    Image.fromarray(frames[2]).save(path)
    with pytest.raises(ImageDecodeError, match=r"hot\.png.*reach 1500.*maximum 1023"):
        tiny_model.embed_image([path], "infrared", bit_depth=10)
    with pytest.raises(SettingError, match="bit_depth must be None .* or one of 8, 10, 12, 14, 16"):
        load_image(frames[0], bit_depth=11)
    with pytest.raises(SettingError, match="bit_depth"):
        tiny_model.embed_image(frames, "infrared", bit_depth=9)


# ---------------------------------------------------------------- match at extreme scales


def test_match_is_scale_safe_and_still_refuses_bad_rows():
    rng = np.random.default_rng(11)
    query, gallery = rng.standard_normal((5, 24)), rng.standard_normal((40, 24))
    reference = csdn.match(query.astype(np.float32), gallery.astype(np.float32), topk=7)
    for q, g in [
        ((query * 1e-30).astype(np.float32), (gallery * 1e-30).astype(np.float32)),
        (torch.from_numpy(query * 1e-30).float(), torch.from_numpy(gallery * 1e-30).float()),
        (query * 1e300, gallery * 1e300),
        (torch.from_numpy(query * 1e300), torch.from_numpy(gallery * 1e300)),
        (query * 1e-200, gallery * 1e-200),
    ]:
        found = csdn.match(q, g, topk=7, chunk_size=16)
        torch.testing.assert_close(found.indices, reference.indices)
        torch.testing.assert_close(found.scores, reference.scores, atol=1e-6, rtol=0)
    mixed = gallery.copy()
    mixed[::2] *= 1e300
    torch.testing.assert_close(csdn.match(query, mixed, topk=7).indices, reference.indices)
    for value, message in [
        (np.nan, "gallery row 9 contains NaN"),
        (np.inf, "gallery row 9 contains NaN"),
        (0.0, "gallery row 9 is all zeros"),
    ]:
        bad = gallery * 1e300
        bad[9] = 0.0 if value == 0.0 else bad[9]
        bad[9, 3] = value
        with pytest.raises(ValueError, match=message):
            csdn.match(query, bad)
    assert not np.isnan(gallery).any()  # inputs are never written to


# ---------------------------------------------------------------- file-like and unsupported inputs


def test_bytes_and_file_objects_decode_like_the_file(tiny_model, rgb_array, tmp_path):
    path = tmp_path / "person.png"
    Image.fromarray(rgb_array).save(path)
    data = path.read_bytes()
    expected = tiny_model.embed_image(path, "visible")
    for source in (data, bytearray(data), io.BytesIO(data)):
        torch.testing.assert_close(tiny_model.embed_image(source, "visible"), expected)
    with open(path, "rb") as handle:
        torch.testing.assert_close(tiny_model.embed_image(handle, "visible"), expected)
    many = tiny_model.embed_image([data, io.BytesIO(data), path], "visible")
    torch.testing.assert_close(many, expected.expand(3, -1))
    with pytest.raises(ImageDecodeError, match="cannot read image <5 bytes>"):
        tiny_model.embed_image(b"hello", "visible")


@pytest.mark.parametrize(
    "bad",
    [{"a": 1}, (np.zeros((H, W, 3), np.uint8) for _ in range(2)), 42, 3.5, None, {1, 2}],
    ids=["dict", "generator", "int", "float", "None", "set"],
)
def test_unsupported_inputs_get_one_type_error_listing_what_is_accepted(tiny_model, bad):
    with pytest.raises(UnsupportedInputError) as caught:
        tiny_model.embed_image(bad, "visible")
    message = str(caught.value)
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, CSDNError)
    for accepted in ("file path", "PIL image", "numpy array", "bytes", "file object", "tensor", "list"):
        assert accepted in message, accepted


def test_unsupported_list_item_is_named(tiny_model, rgb_array):
    with pytest.raises(UnsupportedInputError, match=r"item 1 of the list is a dict.*file path.*bytes"):
        tiny_model.embed_image([rgb_array, {"path": "x.jpg"}], "visible")
    with pytest.raises(UnsupportedInputError, match="cannot read an image from int"):
        load_image(7)


def test_size_errors_report_the_users_own_shape(tiny_model):
    with pytest.raises(ImageTensorError, match=r"shape \[3, 128, 64\] but this model needs \[3,64,32\]") as caught:
        tiny_model.embed_image(torch.zeros(3, 128, 64), "visible")
    assert "[2," not in str(caught.value) and "[1," not in str(caught.value)
    with pytest.raises(ImageTensorError, match=r"shape \[5, 3, 128, 64\]"):
        tiny_model.embed_image(torch.zeros(5, 3, 128, 64), "visible", batch_size=2)
    with pytest.raises(ImageTensorError, match=r"\[3, 128, 64\] but this model needs \[3,64,32\]"):
        tiny_model.embed_image([torch.zeros(3, 128, 64)], "visible")


def test_mixed_size_tensor_list_names_the_sizes(tiny_model):
    items = [torch.zeros(3, H, W), torch.zeros(3, H, W), torch.zeros(3, 128, 64)]
    with pytest.raises(
        ImageTensorError, match=r"\[3, 64, 32\] \(first at item 0\); \[3, 128, 64\] \(first at item 2\)"
    ):
        tiny_model.embed_image(items, "visible")
