"""A procedural 3-D cartoon-head model and renderer: the embedded, file-free talking-head "dataset".

One small 3-D morphable model drives both the pixels and the labels, so the 68 landmarks are exact:

* a hand-made 3-D mean shape of the 68 iBUG points (:func:`mean_shape`; x right, y down, z towards the
  camera, unit = half the face width), deformed by an identity's geometry (face/jaw width, chin length,
  eye spacing and size, nose, mouth, brows: :func:`face_shape`) and by linear expression blendshapes
  (mouth open, smile, pucker, blink, brow raise: :func:`expression_blendshapes`);
* the head is rotated by the pose (yaw, pitch, roll), scaled, shifted and projected with a mild
  perspective camera; the face is then drawn from the projected points (silhouette = convex hull of
  the jaw and a 3-D hairline, eyes/brows/nose/lips as filled polygons, hair/hat/ears/neck/torso as
  convex hulls of projected 3-D point sets) at ``supersample`` x resolution with anti-aliased
  primitives, area-downsampled, and Lambert-shaded with an ellipsoid head normal field and a light
  direction that differs per video.

Identities differ in geometry, skin, hair colour and style, eye colour, brow thickness, beard, lips,
clothes, background and accessories (glasses, hat, earrings); the videos of an identity differ in light
direction, background shade and motion. Frame ``t`` of a video is a smooth deterministic function of
``t`` (any integer or float), so held-out frames are just other ``t``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = [
    "HeadPose",
    "Expression",
    "SyntheticHeads",
    "SyntheticHeadsError",
    "mean_shape",
    "face_shape",
    "expression_blendshapes",
    "EXPRESSION_NAMES",
    "iris_centres",
]

_SHIFT = 4
_FIX = float(1 << _SHIFT)
_CAMERA_DISTANCE = 10.0      # units; mild perspective
_PX_PER_UNIT = 0.25          # fraction of the image height per model unit at scale 1
_Y_CENTRE = 0.08             # model y that lands on the image centre at zero shift
_PIVOT = np.array([0.0, 0.2, -0.35])  # head rotates about the top of the neck


class SyntheticHeadsError(ValueError):
    """Bad arguments to the procedural head model."""


@dataclass(frozen=True)
class HeadPose:
    """Rigid head pose. Angles in degrees; ``tx``/``ty`` are fractions of the image width/height."""

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    tx: float = 0.0
    ty: float = 0.0
    scale: float = 1.0


@dataclass(frozen=True)
class Expression:
    """Expression coefficients; all in about [0, 1] (``smile`` may go slightly negative = frown).

    ``blink`` is eye closure (1 = closed); ``gaze_x``/``gaze_y`` move the irises (fraction of the eye
    half-width / half-height) and do not move landmarks.
    """

    mouth_open: float = 0.0
    smile: float = 0.0
    pucker: float = 0.0
    blink: float = 0.0
    brow_raise: float = 0.0
    gaze_x: float = 0.0
    gaze_y: float = 0.0

    def coefficients(self) -> np.ndarray:
        """``(5,)`` coefficients in :data:`EXPRESSION_NAMES` order."""
        return np.array([self.mouth_open, self.smile, self.pucker, self.blink, self.brow_raise])


EXPRESSION_NAMES: tuple[str, ...] = ("mouth_open", "smile", "pucker", "blink", "brow_raise")

# --------------------------------------------------------------------------------------------------
# 3-D shape model
# --------------------------------------------------------------------------------------------------

_DEFAULT_GEOMETRY: dict[str, float] = {
    "face_w": 1.0,     # half width of the face at the cheekbones
    "jaw_w": 0.92,     # relative width of the lower jaw (1 = square, <1 = narrow/pointed)
    "chin_y": 1.12,    # height of the chin below the eye line origin
    "eye_sep": 0.40,   # x of the eye centres
    "eye_y": -0.30,    # y of the eye centres
    "eye_w": 0.165,    # half width of an eye
    "eye_h": 0.075,    # half height of an open eye
    "brow_y": -0.56,   # y of the brows' middle
    "brow_arch": 0.07,
    "nose_y": 0.20,    # y of the nose tip (landmark 30)
    "nose_w": 0.19,    # half width of the nose base
    "nose_len": 0.42,  # protrusion of the tip
    "mouth_y": 0.56,   # y of the mouth corners
    "mouth_w": 0.33,   # half width of the mouth
    "lip_up": 0.085,   # upper lip thickness
    "lip_lo": 0.11,    # lower lip thickness
}


def _face_z(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Depth of the front of the face at ``(x, y)`` (a smooth cap; the nose and lips sit on top)."""
    return 0.42 - 0.42 * x**2 - 0.06 * (y - 0.1) ** 2


def face_shape(**geometry: float) -> np.ndarray:
    """Neutral 3-D iBUG-68 shape ``(68, 3)`` for the given geometry (defaults = the mean face).

    Keys: see ``_DEFAULT_GEOMETRY`` (face_w, jaw_w, chin_y, eye_sep, eye_y, eye_w, eye_h, brow_y,
    brow_arch, nose_y, nose_w, nose_len, mouth_y, mouth_w, lip_up, lip_lo).
    """
    unknown = set(geometry) - set(_DEFAULT_GEOMETRY)
    if unknown:
        raise SyntheticHeadsError(
            f"unknown face geometry keys {sorted(unknown)}; use {sorted(_DEFAULT_GEOMETRY)}")
    g = {**_DEFAULT_GEOMETRY, **geometry}
    p = np.zeros((68, 3))
    # jaw 0..16: from the right ear (image left) round the chin to the left ear
    phi = np.linspace(0.0, math.pi, 17)
    s, c = np.sin(phi), np.cos(phi)
    narrow = 1.0 + (g["jaw_w"] - 1.0) * s**2
    p[0:17, 0] = -g["face_w"] * np.sign(c) * np.abs(c) ** 0.85 * narrow
    top = -0.22
    p[0:17, 1] = top + (g["chin_y"] - top) * s**1.15
    p[0:17, 2] = -0.30 + 0.72 * s**2
    # brows: right 17..21 (outer -> inner), left 22..26 mirrored (inner -> outer)
    u = np.linspace(0.0, 1.0, 5)
    bx = -(g["eye_sep"] + 0.40) + u * (g["eye_sep"] + 0.40 - 0.12)
    by = g["brow_y"] + 0.02 - g["brow_arch"] * np.sin(math.pi * (0.15 + 0.75 * u)) + 0.03 * (1 - u)
    p[17:22, 0], p[17:22, 1] = bx, by
    p[22:27, 0], p[22:27, 1] = -bx[::-1], by[::-1]
    p[17:27, 2] = _face_z(p[17:27, 0], p[17:27, 1]) + 0.06
    # nose bridge 27..30 and base 31..35
    ny = np.linspace(g["eye_y"] + 0.02, g["nose_y"], 4)
    p[27:31, 1] = ny
    p[27:31, 2] = _face_z(0.0, ny) + np.linspace(0.08, g["nose_len"], 4)
    p[31:36, 0] = np.linspace(-g["nose_w"], g["nose_w"], 5)
    p[31:36, 1] = g["nose_y"] + 0.09 + np.array([0.0, 0.03, 0.045, 0.03, 0.0])
    p[31:36, 2] = _face_z(p[31:36, 0], p[31:36, 1]) + np.array([0.10, 0.20, 0.27, 0.20, 0.10]) * (
        g["nose_len"] / 0.42
    )
    # eyes: right 36..41 (outer corner, upper x2, inner corner, lower x2); left 42..47 mirrored
    cx, cy, ew, eh = -g["eye_sep"], g["eye_y"], g["eye_w"], g["eye_h"]
    right = np.array(
        [
            [cx - ew, cy + 0.01],
            [cx - ew / 3, cy - eh],
            [cx + ew / 3, cy - eh * 0.95],
            [cx + ew, cy + 0.015],
            [cx + ew / 3, cy + eh * 0.85],
            [cx - ew / 3, cy + eh * 0.9],
        ]
    )
    p[36:42, :2] = right
    mirror = [3, 2, 1, 0, 5, 4]
    p[42:48, 0] = -right[mirror, 0]
    p[42:48, 1] = right[mirror, 1]
    p[36:48, 2] = _face_z(p[36:48, 0], p[36:48, 1]) - 0.02
    # lips: outer 48..59 (right corner, upper to left corner, lower back), inner 60..67
    mw, my, lu, ll = g["mouth_w"], g["mouth_y"], g["lip_up"], g["lip_lo"]
    ox = np.array([-1.0, -0.6, -0.28, 0.0, 0.28, 0.6, 1.0, 0.6, 0.28, 0.0, -0.28, -0.6]) * mw
    oy = my + np.array([0.0, -0.6, -1.0, -0.82, -1.0, -0.6, 0.0, 0.75, 0.97, 1.0, 0.97, 0.75]) * np.array(
        [1, lu, lu, lu, lu, lu, 1, ll, ll, ll, ll, ll]
    )
    p[48:60, 0], p[48:60, 1] = ox, oy
    ix = np.array([-0.86, -0.4, 0.0, 0.4, 0.86, 0.4, 0.0, -0.4]) * mw
    iy = my + np.array([0.0, -0.12, -0.10, -0.12, 0.0, 0.10, 0.12, 0.10]) * lu
    p[60:68, 0], p[60:68, 1] = ix, iy
    p[48:68, 2] = _face_z(p[48:68, 0], p[48:68, 1]) + 0.08 + 0.05 * (1 - np.abs(p[48:68, 0]) / mw)
    return p


def mean_shape() -> np.ndarray:
    """The 3-D mean shape ``(68, 3)`` of the model (x right, y down, z towards the camera)."""
    return face_shape()


def expression_blendshapes(neutral: np.ndarray) -> np.ndarray:
    """Linear expression blendshapes ``(5, 68, 3)`` (order :data:`EXPRESSION_NAMES`) for a neutral shape."""
    n = neutral
    d = np.zeros((5, 68, 3))
    mw = n[54, 0]
    # mouth_open: lower lip and jaw drop (weighted towards the chin), corners a little
    jaw_phi = np.linspace(0.0, math.pi, 17)
    d[0, 0:17, 1] = 0.30 * np.sin(jaw_phi) ** 3
    d[0, 0:17, 0] = -0.03 * np.sin(jaw_phi) ** 3 * np.sign(n[0:17, 0])
    d[0, 55:60, 1] = 0.30 * np.array([0.8, 0.95, 1.0, 0.95, 0.8])
    d[0, 65:68, 1] = 0.30 * np.array([0.95, 1.0, 0.95])
    d[0, 61:64, 1] = -0.02
    d[0, [48, 54, 60, 64], 1] = 0.10
    d[0, [49, 53], 1] = -0.01
    d[0, 60, 0], d[0, 64, 0] = 0.02 * mw, -0.02 * mw
    # smile: corners out and up, lips stretch, eyes squint slightly
    sgn = np.sign(n[48:68, 0])
    corner = np.abs(n[48:68, 0]) / max(mw, 1e-6)
    d[1, 48:68, 0] = 0.08 * sgn * corner
    d[1, 48:68, 1] = -0.09 * corner**2
    d[1, [40, 41, 46, 47], 1] = -0.02
    # pucker: mouth narrows and protrudes
    d[2, 48:68, 0] = -0.35 * n[48:68, 0]
    d[2, 48:68, 2] = 0.06
    d[2, [50, 51, 52], 1] = -0.015
    d[2, [56, 57, 58], 1] = 0.015
    # blink: lids meet a little below the eye's middle
    for up, lo, c0, c1 in (((37, 38), (40, 41), 36, 39), ((43, 44), (46, 47), 42, 45)):
        meet = 0.5 * (n[c0, 1] + n[c1, 1]) + 0.35 * (n[lo[0], 1] - n[up[0], 1]) / 2
        d[3, list(up), 1] = meet - n[list(up), 1]
        d[3, list(lo), 1] = meet - n[list(lo), 1]
    # brow raise: brows up (inner ends a bit more), upper lids a touch
    d[4, 17:22, 1] = -np.array([0.08, 0.09, 0.10, 0.11, 0.12])
    d[4, 22:27, 1] = -np.array([0.12, 0.11, 0.10, 0.09, 0.08])
    d[4, [37, 38, 43, 44], 1] = -0.012
    return d


def _fibonacci_sphere(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    y = 1 - 2 * i / n
    r = np.sqrt(1 - y * y)
    th = math.pi * (3 - math.sqrt(5)) * i
    return np.stack([r * np.cos(th), y, r * np.sin(th)], axis=1)


_SPHERE = _fibonacci_sphere(160)
_CIRCLE16 = np.stack([np.cos(np.linspace(0, 2 * math.pi, 16, endpoint=False)),
                      np.sin(np.linspace(0, 2 * math.pi, 16, endpoint=False))], axis=1)


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-frame rotation ``Rz(roll) @ Rx(pitch) @ Ry(yaw)`` (degrees; yaw > 0 turns to image right)."""
    a, b, c = math.radians(yaw), math.radians(pitch), math.radians(roll)
    ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ rx @ ry


# --------------------------------------------------------------------------------------------------
# identities and videos
# --------------------------------------------------------------------------------------------------

_SKIN = np.array([[255, 226, 200], [244, 200, 168], [228, 178, 138], [206, 146, 104], [176, 116, 80],
                  [138, 90, 60], [104, 68, 46], [236, 196, 176]], dtype=float)
_HAIR = np.array([[28, 24, 24], [62, 40, 28], [104, 66, 38], [140, 70, 34], [214, 180, 110],
                  [232, 220, 190], [150, 150, 152], [186, 92, 44], [50, 80, 190], [220, 100, 160],
                  [90, 60, 110]], dtype=float)
_HAIR_P = np.array([0.2, 0.17, 0.15, 0.08, 0.11, 0.04, 0.1, 0.07, 0.03, 0.03, 0.02])
_IRIS = np.array([[92, 56, 30], [46, 30, 22], [70, 120, 190], [80, 130, 80], [120, 130, 142],
                  [134, 100, 52]], dtype=float)
_HAIR_STYLES = ("bald", "short", "medium", "long", "afro", "bun")
_HAIR_STYLE_P = np.array([0.08, 0.3, 0.2, 0.22, 0.1, 0.1])


def _hsv_colour(rng: np.random.Generator, s: tuple[float, float], v: tuple[float, float]) -> np.ndarray:
    h = rng.uniform(0, 180)
    hsv = np.uint8([[[h, rng.uniform(*s) * 255, rng.uniform(*v) * 255]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(float)


@dataclass
class _Identity:
    neutral: np.ndarray            # (68, 3)
    blend: np.ndarray              # (5, 68, 3)
    geom: dict[str, float]
    skin: np.ndarray
    hair: np.ndarray
    brow: np.ndarray
    iris: np.ndarray
    lip: np.ndarray
    clothes: np.ndarray
    bg: tuple[np.ndarray, np.ndarray]
    bg_kind: int
    hair_style: str
    fringe: bool
    hairline_y: float
    hairline_dip: float
    brow_thick: float
    beard: str                     # none / stubble / full / goatee / moustache
    glasses: str                   # none / round / square
    glasses_colour: np.ndarray
    hat: str                       # none / beanie / cap
    hat_colour: np.ndarray
    earrings: str                  # none / stud / hoop
    earring_colour: np.ndarray
    blush: bool
    static: dict[str, np.ndarray] = field(default_factory=dict)  # model-space point sets


@dataclass
class _Video:
    light: np.ndarray              # (3,) unit vector, camera frame
    ambient: float
    diffuse: float
    tint: np.ndarray               # (3,) light colour
    bg_gain: float
    motion: np.ndarray             # (n_channels, 3, 3): amplitude/period/phase triples
    bias: np.ndarray               # (n_channels,)
    blink_period: float
    blink_phase: float


def _make_identity(seed: int, identity: int) -> _Identity:
    rng = np.random.default_rng([seed, identity, 7])
    u = rng.uniform
    geom = {
        "face_w": u(0.88, 1.08), "jaw_w": u(0.74, 1.02), "chin_y": u(1.0, 1.24), "eye_sep": u(0.36, 0.45),
        "eye_y": u(-0.34, -0.26), "eye_w": u(0.14, 0.19), "eye_h": u(0.055, 0.095), "brow_y": u(-0.62, -0.52),
        "brow_arch": u(0.02, 0.11), "nose_y": u(0.14, 0.26), "nose_w": u(0.15, 0.24),
        "nose_len": u(0.3, 0.55),
        "mouth_y": u(0.52, 0.62), "mouth_w": u(0.26, 0.38), "lip_up": u(0.05, 0.11), "lip_lo": u(0.07, 0.14),
    }
    neutral = face_shape(**geom)
    skin = np.clip(_SKIN[rng.integers(len(_SKIN))] + rng.normal(0, 6, 3), 0, 255)
    hair = np.clip(_HAIR[rng.choice(len(_HAIR), p=_HAIR_P)] * u(0.85, 1.15), 0, 255)
    brow = hair * 0.75 if hair.mean() > 120 else hair * 0.9
    lipstick = rng.random() < 0.2
    lip = (np.array([[196, 40, 60], [130, 40, 84], [226, 104, 134]], float)[rng.integers(3)] if lipstick
           else skin * np.array([0.86, 0.6, 0.6]) + np.array([20, 0, 0]))
    style = _HAIR_STYLES[rng.choice(len(_HAIR_STYLES), p=_HAIR_STYLE_P)]
    bg0 = _hsv_colour(rng, (0.1, 0.6), (0.35, 0.95))
    bg1 = np.clip(bg0 * u(0.5, 1.2) + rng.normal(0, 25, 3), 0, 255)
    male_ish = rng.random() < 0.5
    beard = "none"
    if male_ish and style != "long":
        beard = str(rng.choice(["none", "stubble", "full", "goatee", "moustache"],
                               p=[0.4, 0.2, 0.2, 0.1, 0.1]))
    glasses = str(rng.choice(["none", "round", "square"], p=[0.65, 0.15, 0.2]))
    hat = str(rng.choice(["none", "beanie", "cap"], p=[0.8, 0.1, 0.1]))
    earrings = str(rng.choice(["none", "stud", "hoop"], p=[0.7, 0.15, 0.15]))
    ident = _Identity(
        neutral=neutral, blend=expression_blendshapes(neutral), geom=geom, skin=skin, hair=hair, brow=brow,
        iris=_IRIS[rng.integers(len(_IRIS))], lip=lip, clothes=_hsv_colour(rng, (0.3, 0.9), (0.3, 0.95)),
        bg=(bg0, bg1), bg_kind=int(rng.integers(3)), hair_style=style,
        fringe=bool(style in ("short", "medium", "long") and rng.random() < 0.35),
        hairline_y=u(-1.08, -0.9), hairline_dip=u(0.1, 0.35), brow_thick=u(0.03, 0.085), beard=beard,
        glasses=glasses, glasses_colour=np.array([[20, 20, 20], [90, 50, 30], [200, 170, 80], [160, 30, 40]],
                                                 float)[rng.integers(4)],
        hat=hat, hat_colour=_hsv_colour(rng, (0.4, 0.9), (0.3, 0.9)), earrings=earrings,
        earring_colour=np.array([[230, 190, 70], [210, 210, 220]], float)[rng.integers(2)],
        blush=bool(rng.random() < 0.4),
    )
    ident.static = _static_points(ident, rng)
    return ident


def _cranium(ident: _Identity) -> tuple[np.ndarray, np.ndarray]:
    """Centre and radii of the cranium ellipsoid in model space."""
    fw = ident.geom["face_w"]
    return np.array([0.0, -0.5, -0.32]), np.array([1.02 * fw, 1.18, 1.12])


def _static_points(ident: _Identity, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Model-space 3-D point sets that do not move with the expression (hair, ears, hat, glasses...)."""
    c, r = _cranium(ident)
    fw = ident.geom["face_w"]
    out: dict[str, np.ndarray] = {}
    # hairline: a curve on the cranium's front, lower at the temples
    th = np.radians(np.linspace(-80, 80, 11))
    hy = ident.hairline_y + ident.hairline_dip * np.sin(th) ** 2
    k = np.sqrt(np.clip(1 - ((hy - c[1]) / r[1]) ** 2, 0.05, 1))
    out["hairline"] = np.stack([r[0] * k * np.sin(th) * 0.9, hy, c[2] + r[2] * k * np.cos(th)], axis=1)
    # cranium hull points (bald head / skin under the hair)
    out["cranium"] = c + _SPHERE * r
    style = ident.hair_style
    vol = {"bald": 0.0, "short": 0.07, "medium": 0.12, "long": 0.1, "afro": 0.45, "bun": 0.06}[style]
    hr = r + vol
    sph = _SPHERE[_SPHERE[:, 1] < {"bald": 0.0, "short": 0.35, "medium": 0.62, "long": 0.6, "afro": 0.5,
                                   "bun": 0.3}[style]]
    hair = c + sph * hr + np.array([0, -0.04 if style == "afro" else 0.0, 0])
    if style == "long":
        length = rng.uniform(1.6, 2.8)
        xs = np.array([-1.0, 1.0]) * (r[0] + 0.12)
        curtain = np.array([[x, y, z] for x in xs for y in (0.0, length) for z in (-0.9, -0.05)])
        hair = np.concatenate([hair, curtain])
    if style == "bun":
        bun = c + np.array([0, -r[1] - 0.05, -0.35]) + _SPHERE * 0.35
        out["bun"] = bun
    out["hair"] = hair
    # ears: an ellipse in a plane facing sideways/forwards, an inner darker ellipse
    ear = []
    for side in (-1.0, 1.0):
        centre = np.array([side * (1.0 * fw + 0.03), -0.12, -0.42])
        t1 = np.array([side * 0.45, 0, -0.9])
        t1 /= np.linalg.norm(t1)
        pts = centre + 0.15 * _CIRCLE16[:, :1] * t1 + 0.27 * _CIRCLE16[:, 1:] * np.array([0, 1.0, 0])
        ear.append(pts)
    out["ears"] = np.stack(ear)  # (2, 16, 3)
    out["ear_lobes"] = np.array([[-(1.0 * fw + 0.06), 0.2, -0.36], [1.0 * fw + 0.06, 0.2, -0.36]])
    # neck (top ring moves with the head) and torso (does not)
    ring = np.stack([_CIRCLE16[:, 0] * 0.5 * fw, np.zeros(16), _CIRCLE16[:, 1] * 0.45 - 0.4], axis=1)
    out["neck_top"] = ring + np.array([0, 0.7, 0])
    out["neck_bottom"] = ring * np.array([1.1, 1, 1]) + np.array([0, 2.0, 0])
    out["torso"] = np.array([0, 2.6, -0.5]) + _SPHERE * np.array([2.3 * fw, 0.9, 0.9])
    # glasses: two frames in front of the eyes, bridge and temples
    if ident.glasses != "none":
        n = ident.neutral
        frames = []
        for eye in (range(36, 42), range(42, 48)):
            e = n[list(eye)]
            centre = e.mean(axis=0) + np.array([0, 0.01, 0.16])
            rx, ry = ident.geom["eye_w"] + 0.08, ident.geom["eye_h"] + 0.08
            if ident.glasses == "round":
                pts = np.stack([_CIRCLE16[:, 0] * rx, _CIRCLE16[:, 1] * ry * 1.15, np.zeros(16)], axis=1)
            else:
                sq = np.sign(_CIRCLE16) * np.abs(_CIRCLE16) ** 0.3
                pts = np.stack([sq[:, 0] * rx, sq[:, 1] * ry, np.zeros(16)], axis=1)
            pts[:, 2] = -0.25 * (pts[:, 0] * np.sign(centre[0])).clip(0) ** 2  # wrap round the face
            frames.append(centre + pts)
        out["glasses"] = np.stack(frames)  # (2, 16, 3)
        out["temples"] = np.array([[-(fw * 0.98), -0.2, -0.35], [fw * 0.98, -0.2, -0.35]])
    if ident.hat != "none":
        cut = -0.35 if ident.hat == "beanie" else -0.4
        hat = c + _SPHERE[_SPHERE[:, 1] < cut + 0.05] * (r + 0.1)
        hat = hat.copy()
        hat[:, 1] = np.minimum(hat[:, 1], c[1] + cut * (r[1] + 0.1) + 0.12)
        out["hat"] = hat
        if ident.hat == "cap":
            y0 = c[1] + cut * (r[1] + 0.1) + 0.1
            a = np.linspace(0, math.pi, 12)
            out["brim"] = np.stack([np.cos(a) * 0.95 * fw, np.full(12, y0), c[2] + 0.8 + np.sin(a) * 0.75],
                                   axis=1)
    if ident.fringe:
        tb = np.radians(np.linspace(-55, 55, 9))
        top = ident.hairline_y + 0.1 * np.sin(tb) ** 2
        bot = ident.geom["brow_y"] - rng.uniform(0.08, 0.2) + 0.12 * np.sin(tb) ** 2
        bot = bot + np.where(np.arange(9) % 2 == 0, 0.0, -0.05)
        def on_head(y: np.ndarray) -> np.ndarray:
            kk = np.sqrt(np.clip(1 - ((y - c[1]) / r[1]) ** 2, 0.05, 1))
            return np.stack([r[0] * kk * np.sin(tb) * 1.02, y, np.maximum(c[2] + r[2] * kk * np.cos(tb),
                             _face_z(r[0] * kk * np.sin(tb), y)) + 0.04], axis=1)
        out["fringe"] = np.concatenate([on_head(top - 0.1), on_head(bot)[::-1]])
    return out


_MOTION_CHANNELS = ("yaw", "pitch", "roll", "tx", "ty", "scale", "mouth", "smile", "pucker", "brow",
                    "gaze_x", "gaze_y")


def _make_video(seed: int, identity: int, video: int) -> _Video:
    rng = np.random.default_rng([seed, identity, video, 11])
    light = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.7, 0.0), 1.0])
    # amplitude, period (frames), phase for three sinusoids per channel
    amps = {"yaw": 24.0, "pitch": 10.0, "roll": 7.0, "tx": 0.035, "ty": 0.025, "scale": 0.06, "mouth": 0.5,
            "smile": 0.35, "pucker": 0.35, "brow": 0.45, "gaze_x": 0.35, "gaze_y": 0.2}
    periods = {"yaw": (40, 120), "pitch": (30, 100), "roll": (40, 120), "tx": (50, 150), "ty": (50, 150),
               "scale": (60, 160), "mouth": (5, 14), "smile": (30, 90), "pucker": (8, 30), "brow": (20, 60),
               "gaze_x": (15, 60), "gaze_y": (15, 60)}
    motion = np.zeros((len(_MOTION_CHANNELS), 3, 3))
    bias = np.zeros(len(_MOTION_CHANNELS))
    for i, ch in enumerate(_MOTION_CHANNELS):
        w = rng.dirichlet(np.ones(3)) * amps[ch] * rng.uniform(0.6, 1.2)
        motion[i, :, 0] = w
        motion[i, :, 1] = rng.uniform(*periods[ch], size=3)
        motion[i, :, 2] = rng.uniform(0, 2 * math.pi, size=3)
    bias[_MOTION_CHANNELS.index("yaw")] = rng.uniform(-8, 8)
    bias[_MOTION_CHANNELS.index("pitch")] = rng.uniform(-4, 4)
    bias[_MOTION_CHANNELS.index("mouth")] = rng.uniform(0.2, 0.45)
    bias[_MOTION_CHANNELS.index("smile")] = rng.uniform(-0.05, 0.45)
    bias[_MOTION_CHANNELS.index("brow")] = rng.uniform(0.0, 0.25)
    return _Video(
        light=light / np.linalg.norm(light), ambient=rng.uniform(0.42, 0.55), diffuse=rng.uniform(0.45, 0.6),
        tint=np.clip(1 + rng.normal(0, 0.04, 3), 0.9, 1.1), bg_gain=rng.uniform(0.82, 1.15), motion=motion,
        bias=bias, blink_period=rng.uniform(18, 45), blink_phase=rng.uniform(0, 45),
    )


def _motion_at(v: _Video, t: float) -> tuple[HeadPose, Expression]:
    m = v.motion
    vals = (m[:, :, 0] * np.sin(2 * math.pi * t / m[:, :, 1] + m[:, :, 2])).sum(axis=1) + v.bias
    yaw, pitch, roll, tx, ty, sc, mouth, smile, pucker, brow, gx, gy = vals.tolist()
    ph = (t + v.blink_phase) % v.blink_period
    blink = max(0.0, 1.0 - abs(ph - 2.0) / 2.0)
    pose = HeadPose(yaw=float(np.clip(yaw, -32, 32)), pitch=float(np.clip(pitch, -14, 14)),
                    roll=float(np.clip(roll, -10, 10)), tx=tx, ty=ty, scale=1.0 + sc)
    expr = Expression(mouth_open=float(np.clip(mouth, 0, 1)), smile=float(np.clip(smile, -0.2, 1)),
                      pucker=float(np.clip(pucker, 0, 0.8)), blink=blink,
                      brow_raise=float(np.clip(brow, 0, 1)),
                      gaze_x=float(np.clip(gx, -0.5, 0.5)), gaze_y=float(np.clip(gy, -0.3, 0.3)))
    return pose, expr


# --------------------------------------------------------------------------------------------------
# renderer
# --------------------------------------------------------------------------------------------------


class SyntheticHeads:
    """A seeded population of procedural talking heads.

    Args:
        num_identities: number of people.
        videos_per_identity: videos per person (different light, background shade, motion).
        seed: everything (appearance, motion) is a pure function of ``(seed, identity, video, t)``.
        supersample: internal resolution factor for anti-aliasing (2 is plenty with ``LINE_AA``).
        cache_mb: memory budget of the in-process LRU cache of rendered frames (0 disables it).
    """

    def __init__(self, num_identities: int, videos_per_identity: int, seed: int = 0, supersample: int = 2,
                 cache_mb: float = 256.0) -> None:
        if num_identities < 1 or videos_per_identity < 1:
            raise SyntheticHeadsError(
                f"need num_identities >= 1 and videos_per_identity >= 1, got {num_identities}, "
                f"{videos_per_identity}")
        if supersample < 1:
            raise SyntheticHeadsError(f"supersample must be >= 1, got {supersample}")
        self.num_identities = int(num_identities)
        self.videos_per_identity = int(videos_per_identity)
        self.seed = int(seed)
        self.supersample = int(supersample)
        self.cache_bytes = int(cache_mb * 2**20)
        self._identities: dict[int, _Identity] = {}
        self._videos: dict[tuple[int, int], _Video] = {}
        self._bg: dict[tuple[int, int, int], np.ndarray] = {}
        self._grid: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._cache: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cache_used = 0

    # -- parameters ------------------------------------------------------------------------------
    def _check(self, identity: int, video: int) -> None:
        if not 0 <= identity < self.num_identities:
            raise SyntheticHeadsError(f"identity {identity} out of range [0, {self.num_identities})")
        if not 0 <= video < self.videos_per_identity:
            raise SyntheticHeadsError(f"video {video} out of range [0, {self.videos_per_identity})")

    def _identity(self, identity: int) -> _Identity:
        if identity not in self._identities:
            self._identities[identity] = _make_identity(self.seed, identity)
        return self._identities[identity]

    def _video(self, identity: int, video: int) -> _Video:
        key = (identity, video)
        if key not in self._videos:
            self._videos[key] = _make_video(self.seed, identity, video)
        return self._videos[key]

    def motion(self, identity: int, video: int, t: float) -> tuple[HeadPose, Expression]:
        """Pose and expression of frame ``t`` of a video (smooth in ``t``)."""
        self._check(identity, video)
        return _motion_at(self._video(identity, video), float(t))

    # -- public rendering ------------------------------------------------------------------------
    def render(self, identity: int, video: int, t: float, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``t`` of ``video`` of ``identity`` at ``size x size``.

        Returns:
            ``(image, landmarks)``: uint8 ``(size, size, 3)`` RGB and float32 ``(68, 2)`` pixel (x, y).
            Cached arrays are read-only; copy before modifying.
        """
        self._check(identity, video)
        key = (identity, video, float(t), int(size))
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        pose, expr = _motion_at(self._video(identity, video), float(t))
        out = self.render_with(identity, pose, expr, size, video=video)
        if self.cache_bytes > 0:
            for a in out:
                a.setflags(write=False)
            self._cache[key] = out
            self._cache_used += out[0].nbytes + out[1].nbytes
            while self._cache_used > self.cache_bytes and self._cache:
                _, old = self._cache.popitem(last=False)
                self._cache_used -= old[0].nbytes + old[1].nbytes
        return out

    def render_with(self, identity: int, pose: HeadPose, expression: Expression, size: int, video: int = 0,
                    shape_of: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Render ``identity``'s appearance (and ``video``'s light/background) with an explicit pose and
        expression. ``shape_of`` borrows another identity's 3-D face geometry, so two identities can be
        rendered with exactly the same landmarks.

        Returns:
            ``(image uint8 (size, size, 3), landmarks float32 (68, 2))``.
        """
        self._check(identity, video)
        if int(size) < 16:
            raise SyntheticHeadsError(f"size must be >= 16 pixels, got {size}")
        size = int(size)
        ident = self._identity(identity)
        geo = ident if shape_of is None else self._identity(int(shape_of))
        return _render(ident, geo, self._video(identity, video), pose, expression, size, self.supersample,
                       self._background(identity, video, size), self._pixel_grid(size))

    def irises_with(self, identity: int, pose: HeadPose, expression: Expression, size: int,
                    shape_of: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`iris_centres` for :meth:`render_with`'s arguments (``shape_of``: whose face geometry)."""
        self._check(identity, 0)
        return iris_centres(self._identity(identity if shape_of is None else int(shape_of)), pose, expression,
                            int(size))

    def landmarks(self, identity: int, video: int, t: float, size: int) -> np.ndarray:
        """Only the ``(68, 2)`` landmarks of a frame (no rasterisation)."""
        self._check(identity, video)
        pose, expr = _motion_at(self._video(identity, video), float(t))
        ident = self._identity(identity)
        pts3 = ident.neutral + np.tensordot(expr.coefficients(), ident.blend, axes=1)
        cam = _Camera(pose, size, 1)
        return cam.project(pts3).astype(np.float32)

    def irises(self, identity: int, video: int, t: float, size: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The exact irises of frame ``t`` (see :func:`iris_centres`):
        ``(centres (2, 2), radii (2,), drawn (2,))``."""
        self._check(identity, video)
        pose, expr = _motion_at(self._video(identity, video), float(t))
        return iris_centres(self._identity(identity), pose, expr, size)

    # -- cached helpers --------------------------------------------------------------------------
    def _background(self, identity: int, video: int, size: int) -> np.ndarray:
        key = (identity, video, size)
        if key not in self._bg:
            ident, vid = self._identity(identity), self._video(identity, video)
            y, x = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
            if ident.bg_kind == 0:
                w = y
            elif ident.bg_kind == 1:
                w = x * 0.6 + y * 0.4
            else:
                w = np.clip(np.hypot(x - 0.5, y - 0.35) * 1.6, 0, 1)
            b0, b1 = ident.bg
            bg = b0[None, None] * (1 - w[..., None]) + b1[None, None] * w[..., None]
            self._bg[key] = (bg * vid.bg_gain * vid.tint).clip(0, 255).astype(np.float32)
        return self._bg[key]

    def _pixel_grid(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        if size not in self._grid:
            a = np.arange(size, dtype=np.float32)
            self._grid[size] = (a[None, :], a[:, None])
        return self._grid[size]

    def __getstate__(self) -> dict:
        # do not ship caches to DataLoader workers
        state = self.__dict__.copy()
        state["_cache"], state["_cache_used"], state["_bg"] = OrderedDict(), 0, {}
        return state


class _Camera:
    """Pose + weak-perspective camera: model space -> pixel coordinates at ``size * ss``."""

    def __init__(self, pose: HeadPose, size: int, ss: int) -> None:
        self.R = _rotation(pose.yaw, pose.pitch, pose.roll)
        self.R_torso = _rotation(0.25 * pose.yaw, 0.0, 0.2 * pose.roll)
        self.f = _PX_PER_UNIT * size * pose.scale * ss            # px per unit at the drawing resolution
        self.cx = (size * (0.5 + pose.tx)) * ss - 0.5            # image centre (pixel-centre convention)
        self.cy = (size * (0.5 + pose.ty)) * ss - 0.5
        self.ss = ss

    def project(self, p: np.ndarray, torso: bool = False) -> np.ndarray:
        """``(..., 3)`` model points -> ``(..., 2)`` pixels."""
        R = self.R_torso if torso else self.R
        q = (p - _PIVOT) @ R.T + _PIVOT
        k = self.f * _CAMERA_DISTANCE / (_CAMERA_DISTANCE - q[..., 2])
        return np.stack([self.cx + q[..., 0] * k, self.cy + (q[..., 1] - _Y_CENTRE) * k], axis=-1)


def _fix(p: np.ndarray) -> np.ndarray:
    return np.rint(p * _FIX).astype(np.int32)


def _hull(p: np.ndarray) -> np.ndarray:
    return cv2.convexHull(_fix(p.reshape(-1, 2)))


def _c(colour: np.ndarray) -> tuple[float, float, float, float]:
    return (float(colour[0]), float(colour[1]), float(colour[2]), 255.0)


def _eye_open(e2: np.ndarray) -> bool:
    """Whether the renderer draws an eye's sclera and iris: its lids ``(6, 2)`` are apart by more than 15 % of
    its half width."""
    ew = 0.5 * np.linalg.norm(e2[3] - e2[0])
    openness = np.linalg.norm(e2[1] - e2[5]) + np.linalg.norm(e2[2] - e2[4])
    return bool(openness > 0.15 * ew)


def _iris_centre3(e3: np.ndarray, geom: dict[str, float], expr: Expression) -> np.ndarray:
    """Model-space ``(3,)`` iris centre of an eye whose six lid points are ``e3 (6, 3)``, moved by the
    gaze."""
    return e3.mean(0) + np.array([expr.gaze_x * geom["eye_w"] * 0.6, expr.gaze_y * geom["eye_h"], 0.02])


def iris_centres(geo: _Identity, pose: HeadPose, expr: Expression, size: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exact irises the renderer draws for face geometry ``geo`` (``SyntheticHeads._identity(i)``) at
    ``size``.

    Returns ``(centres float64 (2, 2) pixel (x, y), radii float64 (2,) pixels, drawn bool (2,))`` for the
    image's left eye (points 36-41) then its right eye (42-47), in the convention of the rendered landmarks
    (pixel centres at integers). ``radii`` is the iris's vertical semi-axis (its horizontal one is shortened
    by cos(yaw)); ``drawn`` is False where the eye is shut (the renderer draws no iris there). The iris may
    still be partly covered by the lids.
    """
    cam = _Camera(pose, size, 1)
    L3 = geo.neutral + np.tensordot(expr.coefficients(), geo.blend, axes=1)
    L2 = cam.project(L3)
    c3 = np.stack([_iris_centre3(L3[s], geo.geom, expr) for s in (slice(36, 42), slice(42, 48))])
    drawn = np.array([_eye_open(L2[s]) for s in (slice(36, 42), slice(42, 48))])
    radii = np.full(2, 0.5 * geo.geom["eye_w"] * cam.f)
    return cam.project(c3), radii, drawn


def _render(ident: _Identity, geo: _Identity, vid: _Video, pose: HeadPose, expr: Expression, size: int,
            ss: int, bg: np.ndarray, grid: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    AA = cv2.LINE_AA
    cam = _Camera(pose, size, ss)
    L3 = geo.neutral + np.tensordot(expr.coefficients(), geo.blend, axes=1)   # (68, 3) deformed
    L2 = cam.project(L3)                                                        # (68, 2) at ss res
    st = ident.static if ident is geo else _restatic(ident, geo)
    P = cam.project
    px = cam.f                                                                  # px per unit
    canvas = np.zeros((size * ss, size * ss, 4), np.uint8)

    def poly(pts: np.ndarray, colour: np.ndarray) -> None:
        cv2.fillPoly(canvas, [_fix(pts)], _c(colour), AA, _SHIFT)

    def hull(pts: np.ndarray, colour: np.ndarray) -> None:
        cv2.fillConvexPoly(canvas, _hull(pts), _c(colour), AA, _SHIFT)

    def line(pts: np.ndarray, colour: np.ndarray, width_units: float, closed: bool = False) -> None:
        cv2.polylines(canvas, [_fix(pts)], closed, _c(colour), max(1, int(round(width_units * px))), AA,
                      _SHIFT)

    skin, hair = ident.skin, ident.hair
    bald = ident.hair_style == "bald"
    # torso, hair behind the head, neck, ears
    hull(P(st["torso"], torso=True), ident.clothes)
    if not bald:
        hull(P(st["hair"]), hair)
        if "bun" in st:
            hull(P(st["bun"]), hair)
    neck = np.concatenate([P(st["neck_top"]), P(st["neck_bottom"], torso=True)])
    hull(neck, skin * 0.88)
    ears = P(st["ears"])
    if ident.hair_style not in ("long", "afro"):
        for e in ears:
            hull(e, skin * 0.95)
            cv2.fillConvexPoly(canvas, _hull(e.mean(0) + 0.55 * (e - e.mean(0))), _c(skin * 0.78), AA, _SHIFT)
        if ident.earrings != "none":
            for lobe in P(st["ear_lobes"]):
                r = int(round(0.06 * px * _FIX))
                centre = tuple(_fix(lobe + np.array([0, 0.05 * px])).tolist())
                if ident.earrings == "hoop":
                    cv2.circle(canvas, centre, r, _c(ident.earring_colour), max(1, int(0.02 * px)), AA,
                               _SHIFT)
                else:
                    cv2.circle(canvas, centre, r // 2, _c(ident.earring_colour), -1, AA, _SHIFT)
    # bald heads: skin-coloured cranium
    if bald:
        hull(P(st["cranium"]), skin)
    # the face: convex hull of the jaw and the hairline
    face = np.concatenate([L2[0:17], P(st["hairline"])])
    hull(face, skin)
    if ident.blush:
        for i in (3, 13):
            centre = 0.45 * L2[i] + 0.55 * L2[31 if i == 3 else 35]
            ax = (int(0.17 * px * _FIX), int(0.1 * px * _FIX))
            cv2.ellipse(canvas, tuple(_fix(centre).tolist()), ax, 0, 0, 360,
                        _c(skin * np.array([1.0, 0.86, 0.86])), -1, AA, _SHIFT)
    # beard
    if ident.beard != "none":
        beard_col = hair * 0.9 if ident.beard != "stubble" else skin * 0.55 + hair * 0.35
        up = np.array([0, -0.05, 0.02])
        if ident.beard in ("full", "stubble"):
            pts = np.concatenate([L3[2:15], [L3[35] + np.array([0.18, 0.1, -0.05])], L3[[54, 53, 52]] + up,
                                  [L3[33] + np.array([0, 0.02, 0])], L3[[50, 49, 48]] + up,
                                  [L3[31] + np.array([-0.18, 0.1, -0.05])]])
            poly(P(pts), beard_col)
        if ident.beard == "goatee":
            pts = np.concatenate([L3[5:12], L3[[55, 56, 57, 58, 59]] + np.array([0, 0.03, 0])])
            hull(P(pts), beard_col)
        if ident.beard in ("goatee", "moustache"):
            pts = np.concatenate([L3[48:55] + np.array([0, -0.01, 0.02]),
                                  (L3[[54, 53, 52, 51, 50, 49, 48]] + np.array([0, -0.1, 0.01]))])
            pts[[0, 6, 7, 13], 0] *= 1.1
            poly(P(pts), beard_col)
    # eyes: sclera, iris (clipped by skin-coloured lids), lash line
    for eye, sgn in ((slice(36, 42), -1.0), (slice(42, 48), 1.0)):
        e3 = L3[eye]
        e2 = L2[eye]
        if _eye_open(e2):
            poly(e2, np.array([242, 240, 236.0]))
            c2 = P(_iris_centre3(e3, geo.geom, expr))
            rr = 0.5 * geo.geom["eye_w"] * px
            cyaw = abs(math.cos(math.radians(pose.yaw)))
            axes = (max(1, int(rr * cyaw * _FIX)), max(1, int(rr * _FIX)))
            cv2.ellipse(canvas, tuple(_fix(c2).tolist()), axes, pose.roll, 0, 360, _c(ident.iris), -1, AA,
                        _SHIFT)
            axes_p = (max(1, axes[0] * 45 // 100), max(1, axes[1] * 45 // 100))
            cv2.ellipse(canvas, tuple(_fix(c2).tolist()), axes_p, pose.roll, 0, 360, (12, 10, 10, 255), -1,
                        AA, _SHIFT)
            hl = c2 + np.array([-0.3, -0.35]) * rr
            cv2.circle(canvas, tuple(_fix(hl).tolist()), max(1, int(0.22 * rr * _FIX)), (255, 255, 255, 255),
                       -1, AA, _SHIFT)
            lift = np.array([0, 2.2 * geo.geom["eye_h"] + 0.04, 0])
            upper = e3[[0, 1, 2, 3]]
            lower = e3[[3, 4, 5, 0]]
            poly(P(np.concatenate([upper, (upper - lift)[::-1]])), skin)
            poly(P(np.concatenate([lower, (lower + lift)[::-1]])), skin)
            line(e2[[0, 1, 2, 3]], np.array([30, 22, 22.0]), 0.03)
            line(P(e3[[0, 1, 2, 3]] - np.array([0, 0.035, 0])), skin * 0.8, 0.015)
        else:
            line(e2[[0, 1, 2, 3]], np.array([40, 28, 28.0]), 0.03)
            line(e2[[0, 1, 2, 3]] + np.array([0, 0.02 * px]), skin * 0.8, 0.015)
    # brows: tapered polygons around the brow curve
    for brow, prof in ((slice(17, 22), [0.5, 0.8, 1.0, 1.0, 0.9]),
                       (slice(22, 27), [0.9, 1.0, 1.0, 0.8, 0.5])):
        b = L3[brow]
        d = np.gradient(b[:, :2], axis=0)
        nrm = np.stack([-d[:, 1], d[:, 0]], axis=1)
        nrm /= np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-9
        off = np.zeros_like(b)
        off[:, :2] = nrm * (np.array(prof)[:, None] * ident.brow_thick * 0.5)
        poly(P(np.concatenate([b + off, (b - off)[::-1]])), ident.brow)
    # nose: shadow on the side away from the light, nostrils, base line
    lx = vid.light[0]
    side = 35 if lx < 0 else 31
    shade_pts = np.concatenate([L2[[28, 29, 30, 33, side]], [0.6 * L2[side] + 0.4 * L2[29]]])
    poly(shade_pts, skin * (0.95 - 0.08 * abs(lx)))
    for a, b in ((31, 32), (35, 34)):
        nc = 0.5 * (L2[a] + L2[b]) + (L2[30] - L2[33]) * 0.25
        ax = (max(1, int(0.045 * px * _FIX)), max(1, int(0.025 * px * _FIX)))
        cv2.ellipse(canvas, tuple(_fix(nc).tolist()), ax, pose.roll, 0, 360, _c(skin * 0.45), -1, AA, _SHIFT)
    line(L2[31:36], skin * 0.7, 0.018)
    # mouth: lips, dark interior, teeth
    poly(L2[48:60], ident.lip)
    poly(np.concatenate([L2[48:55], L2[[64, 63, 62, 61, 60]]]), ident.lip * 0.82)
    inner = L2[60:68]
    gap = np.linalg.norm(inner[6] - inner[2])
    if gap > 0.02 * px:
        poly(inner, np.array([70, 20, 28.0]))
        down = np.array([0.0, min(0.4 * gap, 0.07 * px)])
        teeth = np.concatenate([inner[[0, 1, 2, 3, 4]], (inner[[3, 2, 1]] + down)])
        poly(teeth, np.array([244, 240, 228.0]))
    line(inner, ident.lip * 0.45, 0.014, closed=True)
    # hair over the forehead, glasses, hat
    if ident.fringe:
        poly(P(st["fringe"]), hair * 1.05)
    if ident.glasses != "none":
        g = P(st["glasses"])
        gc = ident.glasses_colour
        for frame in g:
            line(frame, gc, 0.035, closed=True)
        inner_l, inner_r = g[0][np.argmax(g[0][:, 0])], g[1][np.argmin(g[1][:, 0])]
        line(np.stack([inner_l, inner_r]), gc, 0.03)
        t2 = P(st["temples"])
        line(np.stack([g[0][np.argmin(g[0][:, 0])], t2[0]]), gc, 0.03)
        line(np.stack([g[1][np.argmax(g[1][:, 0])], t2[1]]), gc, 0.03)
    if "hat" in st:
        hull(P(st["hat"]), ident.hat_colour)
        if "brim" in st:
            hull(P(st["brim"]), ident.hat_colour * 0.8)
    # downsample, shade, composite over the background
    small = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA) if ss > 1 else canvas
    rgba = small.astype(np.float32) * (1.0 / 255.0)
    alpha = rgba[..., 3:4]
    shade = _shading(cam, geo, vid, size, grid)
    img = bg * (1.0 - alpha) + (rgba[..., :3] * 255.0) * shade[..., None] * vid.tint
    img = np.clip(img, 0, 255).astype(np.uint8)
    lm = ((L2 + 0.5) / ss - 0.5).astype(np.float32)
    return img, lm


def _restatic(ident: _Identity, geo: _Identity) -> dict[str, np.ndarray]:
    """Appearance points of ``ident`` but with glasses placed on ``geo``'s eyes (used by ``shape_of``)."""
    st = dict(ident.static)
    if "glasses" in ident.static:
        shift = geo.neutral[36:48].reshape(2, 6, 3).mean(1) - ident.neutral[36:48].reshape(2, 6, 3).mean(1)
        st["glasses"] = ident.static["glasses"] + shift[:, None, :]
    return st


def _shading(cam: _Camera, ident: _Identity, vid: _Video, size: int, grid: tuple[np.ndarray, np.ndarray]
             ) -> np.ndarray:
    """Lambert shading ``(size, size)`` from the normals of a rotated head ellipsoid (orthographic)."""
    fw = ident.geom["face_w"]
    centre = np.array([0.0, -0.25, -0.25])
    radii = np.array([1.1 * fw, 1.55, 1.05])
    R = cam.R
    A = R @ np.diag(1.0 / radii**2) @ R.T
    c = (centre - _PIVOT) @ R.T + _PIVOT
    f = cam.f / cam.ss
    gx, gy = grid
    u = ((gx + 0.5) * cam.ss - 0.5 - cam.cx) / cam.ss / f - c[0]
    v = ((gy + 0.5) * cam.ss - 0.5 - cam.cy) / cam.ss / f + _Y_CENTRE - c[1]
    a = A[2, 2]
    b = A[2, 0] * u + A[2, 1] * v
    q = A[0, 0] * u * u + 2 * A[0, 1] * u * v + A[1, 1] * v * v - 1.0
    dz = (-b + np.sqrt(np.maximum(b * b - a * q, 0.0))) / a
    nx = A[0, 0] * u + A[0, 1] * v + A[0, 2] * dz
    ny = A[1, 0] * u + A[1, 1] * v + A[1, 2] * dz
    nz = A[2, 0] * u + A[2, 1] * v + A[2, 2] * dz
    lx, ly, lz = vid.light
    lam = (nx * lx + ny * ly + nz * lz) / np.sqrt(nx * nx + ny * ny + nz * nz + 1e-12)
    wrap = 0.3
    return (vid.ambient + vid.diffuse * np.maximum((lam + wrap) / (1 + wrap), 0.0)).astype(np.float32)
