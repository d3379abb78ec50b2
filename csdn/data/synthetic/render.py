"""Turns a drawn body plus a camera into a visible or infrared pedestrian crop.

Both modalities colour the same part map; only the per-surface values differ:
visible albedo (with white balance, exposure and directional light), NIR
reflectance (with the active illuminator's fall-off) or thermal brightness
(heat: skin hottest, clothing by thickness, cold background). Infrared output is
grey, written as three identical channels like SYSU-MM01's infrared frames.
Everything is drawn at twice the output size and box-downsampled (anti-aliasing).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from csdn.data.synthetic.body import (
    NUM_PARTS,
    PART_BAG,
    PART_HAIR,
    PART_HAT,
    PART_LOWER,
    PART_SHOES,
    PART_SKIN,
    PART_UPPER,
    PART_UPPER_PATTERN,
    Body,
    Pose,
    draw_body,
    sample_pose,
)
from csdn.data.synthetic.identity import Identity, Material
from csdn.data.synthetic.scene import CameraStyle, build_place
from csdn.errors import SettingError, setting_name
from csdn.modality import normalize_modality

_SUPERSAMPLE = 2  # _finish's box filter assumes 2


def default_camera(modality: str) -> CameraStyle:
    """A plain camera for ``modality``; ``"thermal"`` gives a far-infrared one, other IR names NIR."""
    if normalize_modality(modality) == "visible":
        return CameraStyle("visible", "indoor", scene_seed=0)
    if modality.strip().lower() == "thermal":
        return CameraStyle("thermal", "outdoor", scene_seed=0, noise=0.03, blur=0.8)
    return CameraStyle("nir", "indoor", scene_seed=0, noise=0.035, blur=0.5)


# Drawing takes about 1.1 KB of memory per output pixel (float maps at twice the size): about 1.2 GB and
# 15 s for this many pixels; real re-id crops are at most a few hundred pixels high.
MAX_PIXELS = 1024 * 1024
_BYTES_PER_PIXEL = 1.1e3


def check_size(size) -> tuple[int, int]:
    """Validate an output ``(height, width)`` before any drawing: a clear error instead of a broken
    drawing, or of a process killed for memory (``(100000, 100000)`` would need some 11 TB)."""
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise SettingError(f"{setting_name('size')} must be (height, width), e.g. (128, 64); got {size!r}") from None
    if height < 16 or width < 8:
        raise SettingError(
            f"{setting_name('size')} {height} {width} is too small to draw a person; use at least 16 8, e.g. 128 64"
        )
    if height * width > MAX_PIXELS:
        raise SettingError(
            f"{setting_name('size')} {height} {width} is too large: {height * width:,} pixels, over the limit of "
            f"{MAX_PIXELS:,} (1024 x 1024), since drawing needs about 1.1 KB of memory per pixel "
            f"({height * width * _BYTES_PER_PIXEL / 1e9:,.0f} GB for this size); person crops are rarely over 512 "
            "high: e.g. 288 144 (the models' input) or 128 64"
        )
    return height, width


def _material_table(identity: Identity) -> list[Material | None]:
    table: list[Material | None] = [None] * NUM_PARTS
    table[PART_SKIN] = identity.skin
    table[PART_HAIR] = identity.hair
    table[PART_UPPER] = identity.upper.material
    table[PART_UPPER_PATTERN] = identity.upper.pattern_material or identity.upper.material
    table[PART_LOWER] = identity.lower.material
    table[PART_SHOES] = identity.shoes
    table[PART_BAG] = identity.bag_material or identity.upper.material
    table[PART_HAT] = identity.hat or identity.hair
    return table


def _surface_values(identity: Identity, sensor: str) -> np.ndarray:
    """Per-part value table: [NUM_PARTS, 3] visible albedo or [NUM_PARTS] IR brightness."""
    table = _material_table(identity)
    if sensor == "visible":
        return np.array([m.rgb if m else (0, 0, 0) for m in table], np.float32)
    return np.array([getattr(m, sensor) if m else 0.0 for m in table], np.float32)


def _apply_pattern(parts: np.ndarray, identity: Identity, body: Body) -> np.ndarray:
    """Stripes/checks in body coordinates, so they move with the person."""
    garment = identity.upper
    if garment.pattern not in ("stripes", "checks"):
        return parts
    period = garment.pattern_scale * body.unit
    ys = (np.arange(parts.shape[0], dtype=np.float32) - body.shoulder_y) / period
    mask = np.broadcast_to(((ys % 1.0) < 0.45)[:, None], parts.shape)
    if garment.pattern == "checks":
        xs = (np.arange(parts.shape[1], dtype=np.float32) - body.centre_x) / period
        mask = mask ^ ((xs % 1.0) < 0.45)[None, :]
    out = parts.copy()
    out[(parts == PART_UPPER) & mask] = PART_UPPER_PATTERN
    return out


def _window(rng: np.random.Generator, shape: tuple[int, ...], height: int, width: int) -> tuple[slice, slice]:
    """A random ``height`` x ``width`` window inside an array of ``shape``."""
    y = int(rng.integers(0, shape[0] - height + 1))
    x = int(rng.integers(0, shape[1] - width + 1))
    return slice(y, y + height), slice(x, x + width)


def _volume(mask: np.ndarray, radius: float) -> np.ndarray:
    """~1 deep inside the silhouette, ~0.5 at its rim: cheap rounded-body shading."""
    blurred = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(blurred, np.float32) / 255.0


def _finish(image: np.ndarray, camera: CameraStyle, rng: np.random.Generator) -> Image.Image:
    """Downsample, blur and add sensor noise; infrared becomes three identical channels."""
    small = 0.25 * (image[0::2, 0::2] + image[1::2, 0::2] + image[0::2, 1::2] + image[1::2, 1::2])  # 2x2 box filter
    pil = Image.fromarray(np.clip(small * 255 + 0.5, 0, 255).astype(np.uint8))
    radius = camera.blur * float(rng.uniform(0.5, 1.5))
    if radius > 0.05:
        pil = pil.filter(ImageFilter.GaussianBlur(radius))
    noisy = np.asarray(pil, np.float32) + rng.normal(0, 255 * camera.noise * float(rng.uniform(0.7, 1.3)), small.shape)
    out = Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))
    return out if camera.sensor == "visible" else out.convert("RGB")


def render_person_with_parts(
    identity: Identity,
    modality: str = "visible",
    rng: np.random.Generator | int | None = None,
    size: tuple[int, int] = (128, 64),
    *,
    camera: CameraStyle | None = None,
    pose: Pose | None = None,
) -> tuple[Image.Image, np.ndarray]:
    """Like :func:`render_person`, also returning the part-label map (``PART_*``, [H, W] uint8)."""
    if camera is None:
        camera = default_camera(modality)
    elif camera.modality != normalize_modality(modality):
        raise ValueError(
            f"camera sensor {camera.sensor!r} does not record {modality!r} images; pass a matching CameraStyle"
        )
    height, width = check_size(size)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    pose = pose if pose is not None else sample_pose(rng)
    hs, ws = height * _SUPERSAMPLE, width * _SUPERSAMPLE
    body = draw_body(identity, pose, hs, ws)
    parts = _apply_pattern(body.parts, identity, body)
    mask = parts > 0
    place = build_place(camera.scene, camera.scene_seed, int(hs * 1.3), ws * 4)
    window = _window(rng, place.grain.shape, hs, ws)  # this shot's view of the place
    folds = place.grain[_window(rng, place.grain.shape, hs, ws)]  # reused as fabric wrinkles
    tone = body.tone.astype(np.float32) / 255.0
    volume = _volume(mask, 0.05 * body.unit)
    ys, xs = np.mgrid[0:hs, 0:ws].astype(np.float32)
    values = _surface_values(identity, camera.sensor)
    gain = camera.light * float(rng.lognormal(0.0, 0.15))

    if camera.sensor == "visible":
        tilt = float(rng.uniform(-0.25, 0.25))
        light = (tone * (0.6 + 0.4 * volume) * (1 + tilt * (xs - body.centre_x) / ws) * (1 + 0.6 * folds))[..., None]
        person = values[parts] * light
        feet = ((xs - body.centre_x) / (0.22 * body.unit)) ** 2 + ((ys - body.feet_y) / (0.025 * body.unit)) ** 2
        shadow = 1 - 0.45 * np.exp(-feet)
        scene = place.rgb[window] * shadow[..., None]
        cast = np.asarray(camera.cast, np.float32) * (1 + rng.normal(0, 0.04, 3)).astype(np.float32)
        image = np.where(mask[..., None], person, scene) * gain * cast
    elif camera.sensor == "nir":
        # the camera's own illuminator lights the nearby person far more than the scene behind
        person = 1.35 * values[parts] * tone * (0.7 + 0.3 * volume) * (1 + 0.5 * folds)
        scene = place.nir[window] * float(rng.uniform(0.4, 0.7))
        radius2 = ((xs - ws / 2) / ws) ** 2 + ((ys - hs / 2) / hs) ** 2
        image = np.where(mask, person, scene) * (1 - 0.8 * radius2) * gain
    else:
        person = values[parts] * (0.85 + 0.15 * volume)
        scene = place.thermal[window]
        image = (np.where(mask, person, scene) - 0.3) * gain + 0.3 + float(rng.normal(0, 0.03))
    small_parts = parts[::_SUPERSAMPLE, ::_SUPERSAMPLE]
    return _finish(image.astype(np.float32), camera, rng), np.ascontiguousarray(small_parts)


def render_person(
    identity: Identity,
    modality: str = "visible",
    rng: np.random.Generator | int | None = None,
    size: tuple[int, int] = (128, 64),
    *,
    camera: CameraStyle | None = None,
    pose: Pose | None = None,
) -> Image.Image:
    """Render one RGB crop of ``identity`` (``size`` = (H, W)); infrared has three equal channels.

    ``rng`` decides everything per image (pose unless given, background window,
    lighting, blur, noise); pass a seeded generator for reproducible output.
    ``camera`` fixes the sensor and place; by default a plain camera of ``modality``.
    """
    return render_person_with_parts(identity, modality, rng, size, camera=camera, pose=pose)[0]
