"""Draws a pedestrian's body as a part-label map (no colour yet).

The figure is drawn with PIL at twice the output resolution into two 8-bit maps:
``parts`` (which surface a pixel shows, one of the ``PART_*`` labels) and
``tone`` (255 for surfaces facing the camera, darker for the far arm/leg), so the
visible and the infrared renderers can colour the *same* geometry with their own
material properties.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from csdn.data.synthetic.identity import Identity

PART_BACKGROUND, PART_SKIN, PART_HAIR, PART_UPPER, PART_UPPER_PATTERN = 0, 1, 2, 3, 4
PART_LOWER, PART_SHOES, PART_BAG, PART_HAT = 5, 6, 7, 8
NUM_PARTS = 9

_NEAR, _FAR, _TORSO = 255, 175, 235


@dataclass(frozen=True)
class Pose:
    """Per-image geometry: viewpoint, gait and where the detector box put the person."""

    yaw: float  # 0 facing the camera, pi seen from the back, +-pi/2 walking right/left
    phase: float  # walking cycle phase in radians
    stride: float  # leg swing amplitude in radians (0 = standing)
    scale: float  # person size relative to the identity's nominal height (crop jitter)
    dx: float  # horizontal offset of the body centre, fraction of crop width
    dy: float  # vertical offset, fraction of crop height
    arm_lift: float = 0.0  # extra forward bend of the forearms (phone, carrying)


def sample_pose(rng: np.random.Generator) -> Pose:
    """Mostly front/back/side walking views, some standing, with detector-box jitter."""
    yaw = float(rng.choice([0.0, math.pi, math.pi / 2, -math.pi / 2]) + rng.normal(0, 0.35))
    walking = rng.random() < 0.8
    return Pose(
        yaw=yaw,
        phase=float(rng.uniform(0, 2 * math.pi)),
        stride=float(rng.uniform(0.2, 0.45)) if walking else float(rng.uniform(0.0, 0.06)),
        scale=float(rng.uniform(0.9, 1.06)),
        dx=float(rng.normal(0, 0.05)),
        dy=float(rng.normal(0, 0.025)),
        arm_lift=float(rng.uniform(0.6, 1.2)) if rng.random() < 0.1 else 0.0,
    )


class _Canvas:
    """Two PIL maps drawn in lock-step: part labels and tone."""

    def __init__(self, height: int, width: int):
        self.parts = Image.new("L", (width, height), PART_BACKGROUND)
        self.tone = Image.new("L", (width, height), _NEAR)
        self._p, self._t = ImageDraw.Draw(self.parts), ImageDraw.Draw(self.tone)

    def limb(self, a, b, width: float, part: int, tone: int = _NEAR) -> None:
        """A capsule from ``a`` to ``b`` (rounded ends, so joints look continuous)."""
        w = max(1, round(width))
        r = width / 2
        for draw, fill in ((self._p, part), (self._t, tone)):
            draw.line([a, b], fill=fill, width=w)
            for x, y in (a, b):
                draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)

    def polygon(self, points, part: int, tone: int = _TORSO) -> None:
        self._p.polygon(points, fill=part)
        self._t.polygon(points, fill=tone)

    def box(self, x0: float, y0: float, x1: float, y1: float, part: int, tone: int = _NEAR) -> None:
        self.polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], part, tone)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, part: int, tone: int = _NEAR) -> None:
        box = [cx - rx, cy - ry, cx + rx, cy + ry]
        self._p.ellipse(box, fill=part)
        self._t.ellipse(box, fill=tone)


@dataclass(frozen=True)
class Body:
    """The drawn figure: label/tone maps plus the anchors texture code needs."""

    parts: np.ndarray  # uint8 [H, W]
    tone: np.ndarray  # uint8 [H, W]
    unit: float  # body height in pixels
    shoulder_y: float
    centre_x: float
    feet_y: float


class _Figure:
    """Body geometry for one identity in one pose, and the drawing of each part."""

    def __init__(self, identity: Identity, pose: Pose, height: int, width: int):
        self.identity, self.pose = identity, pose
        self.canvas = _Canvas(height, width)
        u = self.u = height * identity.height * pose.scale
        self.top = (height - u) / 2 + pose.dy * height
        self.cx = width / 2 + pose.dx * width
        self.side, self.front = math.sin(pose.yaw), math.cos(pose.yaw)
        frontness = self.frontness = abs(self.front)
        b = self.b = identity.build
        self.head_ry = 0.064 * u * identity.head_size
        self.head_rx = (0.047 + 0.008 * (1 - frontness)) * u * identity.head_size
        self.head_cy = self.top + self.head_ry
        self.shoulder_y = self.top + 0.175 * u
        self.waist_y = self.top + 0.41 * u
        self.hip_y = self.top + 0.5 * u
        self.shoulder_hw = 0.125 * u * b * (0.5 + 0.5 * frontness)
        self.hip_hw = 0.087 * u * b * (0.55 + 0.45 * frontness)
        self.lean = 0.02 * u * pose.stride * self.side  # walkers lean slightly forward
        self.head_cx = self.cx + self.lean
        self.arm_w = (0.066 + 0.02 * identity.upper.thickness) * u * b
        self.thigh_w, self.shin_w = 0.098 * u * b, 0.076 * u * b
        self.near = 1.0 if self.side >= 0 else -1.0  # which body side (+x or -x) is nearer the camera
        self.phases = {1.0: pose.phase, -1.0: pose.phase + math.pi}

    def draw(self) -> Body:
        side_view = abs(self.side) > 0.5
        self.long_hair()
        self.back_bag(in_front_of_torso=False)
        if side_view:
            self.arm(-self.near, _FAR)
            self.leg(-self.near, _FAR)
            self.leg(self.near, _NEAR)
        else:
            self.leg(-1.0, _NEAR)
            self.leg(1.0, _NEAR)
        self.pelvis()
        self.torso()
        self.back_bag(in_front_of_torso=True)
        self.head()
        if self.front < -0.35:  # seen from behind, long hair falls over the back
            self.long_hair()
        for sign in (self.near,) if side_view else (-1.0, 1.0):
            self.arm(sign, _NEAR)
        return Body(
            parts=np.asarray(self.canvas.parts),
            tone=np.asarray(self.canvas.tone),
            unit=self.u,
            shoulder_y=self.shoulder_y,
            centre_x=self.cx,
            feet_y=self.top + self.u,
        )

    def leg(self, sign: float, tone: int) -> None:
        u, side, phase, stride = self.u, self.side, self.phases[sign], self.pose.stride
        hip = (self.cx + sign * (0.048 * u * self.b * self.frontness + 0.01 * u * (1 - self.frontness)), self.hip_y)
        thigh_a = stride * math.sin(phase)
        shin_a = thigh_a - 1.1 * stride * max(0.0, math.cos(phase))  # the swinging leg bends its knee
        knee = (hip[0] + 0.24 * u * math.sin(thigh_a) * side, hip[1] + 0.24 * u * math.cos(thigh_a))
        ankle = (knee[0] + 0.225 * u * math.sin(shin_a) * side, knee[1] + 0.225 * u * math.cos(shin_a))
        lower = self.identity.lower.kind
        part = PART_LOWER if lower == "trousers" else PART_SKIN
        self.canvas.limb(hip, knee, self.thigh_w, part, tone)
        self.canvas.limb(knee, ankle, self.shin_w, part, tone)
        if lower == "shorts":
            mid = (hip[0] + 0.75 * (knee[0] - hip[0]), hip[1] + 0.75 * (knee[1] - hip[1]))
            self.canvas.limb(hip, mid, self.thigh_w * 1.12, PART_LOWER, tone)
        toe = (ankle[0] + 0.05 * u * side, ankle[1] + 0.012 * u)
        self.canvas.limb((ankle[0], ankle[1] - 0.01 * u), toe, 0.05 * u, PART_SHOES, tone)

    def arm(self, sign: float, tone: int) -> None:
        u, side, phase, stride, arm_w = self.u, self.side, self.phases[sign], self.pose.stride, self.arm_w
        shoulder = (self.cx + sign * (self.shoulder_hw - 0.45 * arm_w) + self.lean, self.shoulder_y + 0.6 * arm_w)
        upper_a = -0.8 * stride * math.sin(phase)  # arms swing against the legs
        fore_a = upper_a + 0.2 + self.pose.arm_lift + 0.6 * stride * max(0.0, -math.sin(phase))
        out = sign * 0.02 * u * self.frontness
        elbow = (shoulder[0] + 0.17 * u * math.sin(upper_a) * side + out, shoulder[1] + 0.17 * u * math.cos(upper_a))
        wrist = (elbow[0] + 0.15 * u * math.sin(fore_a) * side + out, elbow[1] + 0.15 * u * math.cos(fore_a))
        long_sleeves = self.identity.upper.kind != "tshirt"
        self.canvas.limb(shoulder, elbow, arm_w, PART_UPPER if long_sleeves else PART_SKIN, tone)
        self.canvas.limb(elbow, wrist, arm_w * 0.85, PART_UPPER if long_sleeves else PART_SKIN, tone)
        if not long_sleeves:
            sleeve_end = (shoulder[0] + 0.5 * (elbow[0] - shoulder[0]), shoulder[1] + 0.5 * (elbow[1] - shoulder[1]))
            self.canvas.limb(shoulder, sleeve_end, arm_w * 1.1, PART_UPPER, tone)
        hand = (wrist[0] + 0.009 * u * side, wrist[1] + 0.025 * u)
        self.canvas.ellipse(hand[0], hand[1], 0.021 * u * self.b, 0.026 * u, PART_SKIN, tone)
        if self.identity.bag == "hand" and sign == self.near:
            top_y = hand[1] + 0.02 * u
            self.canvas.box(hand[0] - 0.035 * u, top_y, hand[0] + 0.035 * u, top_y + 0.09 * u, PART_BAG, tone)

    def pelvis(self) -> None:
        cx, hip_hw, waist_y = self.cx, self.hip_hw, self.waist_y
        if self.identity.lower.kind == "skirt":
            hem_y = self.hip_y + 0.2 * self.u
            hem_hw = hip_hw * 1.45 + 0.09 * self.u * self.pose.stride * abs(self.side)
            skirt = [(cx - hip_hw, waist_y), (cx + hip_hw, waist_y), (cx + hem_hw, hem_y), (cx - hem_hw, hem_y)]
            self.canvas.polygon(skirt, PART_LOWER)
        else:
            self.canvas.box(cx - hip_hw, waist_y, cx + hip_hw, self.hip_y + 0.05 * self.u, PART_LOWER, _TORSO)

    def torso(self) -> None:
        kind, u, cx, hip_hw = self.identity.upper.kind, self.u, self.cx, self.hip_hw
        hem_y = self.hip_y + {"tshirt": 0.01, "longsleeve": 0.01, "jacket": 0.04, "coat": 0.27}[kind] * u
        hem_hw = hip_hw * 1.08
        if kind == "coat":
            hem_hw = hip_hw * 1.5 + 0.06 * u * self.pose.stride * abs(self.side)
        waist_hw = hip_hw * 0.98 * (1.1 if kind in ("jacket", "coat") else 1.0)
        sx, shoulder_y, shoulder_hw = cx + self.lean, self.shoulder_y, self.shoulder_hw
        neck_y, arm_y = shoulder_y - 0.005 * u, shoulder_y + 0.035 * u  # sloping shoulders
        outline = [
            (sx - shoulder_hw, arm_y),
            (sx - 0.5 * shoulder_hw, neck_y),
            (sx + 0.5 * shoulder_hw, neck_y),
            (sx + shoulder_hw, arm_y),
            (cx + waist_hw, self.waist_y),
            (cx + hem_hw, hem_y),
            (cx - hem_hw, hem_y),
            (cx - waist_hw, self.waist_y),
        ]
        self.canvas.polygon(outline, PART_UPPER)
        for s in (-1, 1):  # rounded shoulder joints
            x = sx + s * (shoulder_hw - self.arm_w * 0.5)
            self.canvas.ellipse(
                x, shoulder_y + self.arm_w * 0.5, self.arm_w * 0.5, self.arm_w * 0.5, PART_UPPER, _TORSO
            )
        if self.identity.upper.pattern == "logo" and self.front > 0.4:
            r = 0.03 * u
            self.canvas.ellipse(sx, shoulder_y + 0.09 * u, r * 1.2, r, PART_UPPER_PATTERN, _TORSO)

    def head(self) -> None:
        u, side, cx, cy, rx, ry = self.u, self.side, self.head_cx, self.head_cy, self.head_rx, self.head_ry
        canvas, style = self.canvas, self.identity.hair_style
        canvas.limb(
            (cx, cy + ry * 0.6), (self.cx + self.lean, self.shoulder_y + 0.01 * u), 0.042 * u * self.b, PART_SKIN
        )
        if self.front < -0.35 and style != "cropped":  # back of the head
            canvas.ellipse(cx, cy, rx, ry, PART_HAIR)
        else:
            canvas.ellipse(cx, cy, rx, ry, PART_SKIN)
            # hair cap: a larger ellipse pushed up (and back in side view), face redrawn on top
            cap = 0.55 if style == "cropped" else 0.3
            canvas.ellipse(cx - 0.35 * rx * side, cy - cap * ry, rx * 1.06, ry * 0.85, PART_HAIR)
            canvas.ellipse(cx + 0.25 * rx * side, cy + 0.22 * ry, rx * (0.85 - 0.2 * abs(side)), ry * 0.72, PART_SKIN)
        if style == "ponytail" and self.front < 0.4:
            canvas.ellipse(cx - 0.9 * rx * side, cy + 0.5 * ry, rx * 0.35, ry * 0.6, PART_HAIR)
        if style == "cap":
            canvas.ellipse(cx, cy - 0.45 * ry, rx * 1.08, ry * 0.62, PART_HAT)
            brim = rx * (0.9 if self.frontness > 0.7 else 1.0)
            brim_y = cy - 0.2 * ry
            back, peak = cx - brim * 0.8 * self.frontness, cx + brim * (0.8 * self.frontness + 1.3 * side)
            canvas.limb((back, brim_y), (peak, brim_y), 0.018 * u, PART_HAT)

    def long_hair(self) -> None:
        if self.identity.hair_style != "long":
            return
        x0, cy, rx = self.head_cx - 0.3 * self.head_rx * self.side, self.head_cy, self.head_rx
        end = self.shoulder_y + 0.09 * self.u
        outline = [(x0 - rx * 1.05, cy), (x0 + rx * 1.05, cy), (x0 + rx * 1.2, end), (x0 - rx * 1.2, end)]
        self.canvas.polygon(outline, PART_HAIR, _NEAR)

    def back_bag(self, in_front_of_torso: bool) -> None:
        bag, u, cx, shoulder_y, shoulder_hw = self.identity.bag, self.u, self.cx, self.shoulder_y, self.shoulder_hw
        if bag == "backpack":
            if self.front < -0.35 and in_front_of_torso:  # seen from behind: the pack covers the back
                w = shoulder_hw * 0.8
                self.canvas.box(cx - w, shoulder_y + 0.03 * u, cx + w, self.waist_y + 0.03 * u, PART_BAG)
            elif self.front > 0.35 and in_front_of_torso:  # seen from the front: only the straps
                for strap in (-1.0, 1.0):
                    strap_end = (cx + strap * shoulder_hw * 0.55, self.waist_y - 0.04 * u)
                    self.canvas.limb((cx + strap * shoulder_hw * 0.6, shoulder_y), strap_end, 0.018 * u, PART_BAG)
            elif abs(self.side) > 0.35 and not in_front_of_torso:  # side view: sticks out behind
                depth = 0.07 * u
                bx = cx - self.near * (shoulder_hw + depth * 0.4)
                self.canvas.box(bx - depth, shoulder_y + 0.02 * u, bx + depth, self.waist_y + 0.02 * u, PART_BAG)
        elif bag == "shoulder" and in_front_of_torso:
            s = -self.near if self.frontness < 0.6 else 1.0
            by = self.hip_y - 0.02 * u
            self.canvas.limb((cx - s * shoulder_hw * 0.7, shoulder_y), (cx + s * self.hip_hw, by), 0.016 * u, PART_BAG)
            bx = cx + s * (self.hip_hw + 0.01 * u)
            self.canvas.box(bx - 0.05 * u, by, bx + 0.05 * u, by + 0.08 * u, PART_BAG, _TORSO)


def draw_body(identity: Identity, pose: Pose, height: int, width: int) -> Body:
    """Draw ``identity`` in ``pose`` on a ``height`` x ``width`` canvas (already supersampled)."""
    return _Figure(identity, pose, height, width).draw()
