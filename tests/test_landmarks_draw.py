"""talkinghead.landmarks.draw: the paper's coloured landmark images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.landmarks.draw import (
    PART_COLOURS,
    PARTS,
    LandmarkValueError,
    draw_landmarks,
    landmark_image_tensor,
    line_width_for,
)

# a segment that belongs to exactly one part, per part
_PROBE = {"jaw": (7, 8), "right_brow": (18, 19), "left_brow": (23, 24), "nose_bridge": (27, 28),
          "nose_base": (32, 33), "right_eye": (37, 38), "left_eye": (43, 44), "outer_lip": (50, 51),
          "inner_lip": (61, 62)}


def _rows_layout(size: int = 256) -> tuple[np.ndarray, dict[str, int]]:
    """Each part's points on its own horizontal row (point 30 on the nose-bridge row)."""
    pts = np.zeros((68, 2))
    rows: dict[str, int] = {}
    for k, (name, (idx, _)) in enumerate(PARTS.items()):
        y = 16 + 26 * k
        rows[name] = y
        own = [i for i in idx if not (name == "nose_base" and i == 30)]
        pts[own, 0] = np.linspace(20, size - 21, len(own))
        pts[own, 1] = y
    return pts, rows


def _face_like(size: int) -> np.ndarray:
    """A rough frontal face in a unit box, scaled to ``size``."""
    p = np.zeros((68, 2))
    a = np.linspace(0, np.pi, 17)
    p[0:17] = np.stack([0.5 - 0.38 * np.cos(a), 0.45 + 0.42 * np.sin(a)], 1)
    p[17:22] = np.stack([np.linspace(0.2, 0.42, 5), np.full(5, 0.32)], 1)
    p[22:27] = np.stack([np.linspace(0.58, 0.8, 5), np.full(5, 0.32)], 1)
    p[27:31] = np.stack([np.full(4, 0.5), np.linspace(0.4, 0.6, 4)], 1)
    p[31:36] = np.stack([np.linspace(0.42, 0.58, 5), np.full(5, 0.64)], 1)
    for s, c in ((36, 0.33), (42, 0.67)):
        t = np.linspace(0, 2 * np.pi, 6, endpoint=False)
        p[s:s + 6] = np.stack([c - 0.07 * np.cos(t), 0.42 + 0.03 * np.sin(t)], 1)
    t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    p[48:60] = np.stack([0.5 - 0.15 * np.cos(t), 0.75 - 0.05 * np.sin(t)], 1)
    t = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    p[60:68] = np.stack([0.5 - 0.1 * np.cos(t), 0.75 - 0.02 * np.sin(t)], 1)
    return p * (size - 1)


def test_shape_dtype_and_black_background() -> None:
    img = draw_landmarks(_face_like(128), 128)
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    assert (img[0, 0] == 0).all() and (img[-1, -1] == 0).all()  # corners far from every part
    assert (img.sum(-1) > 0).mean() > 0.02                       # something was drawn
    rect = draw_landmarks(_face_like(96) * [1.5, 1.0], (96, 144))
    assert rect.shape == (96, 144, 3)


def test_constants_are_consistent() -> None:
    assert set(PARTS) == set(PART_COLOURS)
    assert len(set(PART_COLOURS.values())) == len(PART_COLOURS)        # distinct colours
    covered = sorted({i for idx, _ in PARTS.values() for i in idx})
    assert covered == list(range(68))
    closed = {n for n, (_, c) in PARTS.items() if c}
    assert closed == {"right_eye", "left_eye", "outer_lip", "inner_lip"}


@pytest.mark.parametrize("part", list(PARTS))
def test_each_part_has_its_colour_where_expected(part: str) -> None:
    pts, rows = _rows_layout()
    img = draw_landmarks(pts, 256, line_width=3)
    a, b = _PROBE[part]
    x, y = np.rint((pts[a] + pts[b]) / 2).astype(int)
    np.testing.assert_allclose(img[y, x], PART_COLOURS[part], atol=2)
    # and the colour is on the part's own row only (the nose base also joins the tip 30 on the bridge's row)
    colour = np.array(PART_COLOURS[part])
    hits = np.flatnonzero((np.abs(img.astype(int) - colour).max(-1) <= 2).any(1))
    top = rows["nose_bridge"] if part == "nose_base" else rows[part]
    assert hits.min() >= top - 2 and hits.max() <= rows[part] + 2


def test_eyes_and_lips_are_closed_polylines() -> None:
    pts, _ = _rows_layout()
    # move the right eye into a triangle-ish ring: the closing segment 41->36 must be drawn
    pts[36:42] = [[100, 200], [120, 190], [140, 190], [160, 200], [140, 230], [120, 230]]
    img = draw_landmarks(pts, 256, line_width=3)
    mid = np.rint((pts[41] + pts[36]) / 2).astype(int)
    np.testing.assert_allclose(img[mid[1], mid[0]], PART_COLOURS["right_eye"], atol=40)


def _thickness(size: int) -> int:
    pts = _face_like(size)
    img = draw_landmarks(pts, size)
    col = int(round(pts[8, 0]))  # the column through the chin, which is a horizontal-ish segment
    lit = img[:, col].max(-1) > 127
    return int(lit[int(size * 0.75):].sum())


def test_line_width_grows_with_size() -> None:
    assert line_width_for(64) == 1 and line_width_for(256) == 2 and line_width_for(512) == 4
    assert line_width_for((512, 1024)) == line_width_for(512)
    assert _thickness(512) > _thickness(128)
    assert _thickness(1024) > _thickness(512)


def test_out_of_range_points_do_not_crash() -> None:
    pts = _face_like(64)
    pts[0] = [-1e9, 1e12]
    pts[40] = [5e3, -7e3]
    img = draw_landmarks(pts, 64)
    assert img.shape == (64, 64, 3)
    everything_outside = _face_like(64) + 10_000
    assert draw_landmarks(everything_outside, 64).max() == 0


def test_partly_outside_segment_is_still_drawn() -> None:
    pts, _ = _rows_layout()
    pts[7] = [-500.0, pts[7, 1]]  # jaw 7-8 now enters from far outside the left border
    img = draw_landmarks(pts, 256, line_width=3)
    y = int(pts[8, 1])
    np.testing.assert_allclose(img[y, 2], PART_COLOURS["jaw"], atol=2)


def test_nan_raises() -> None:
    pts = _face_like(64)
    pts[12, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        draw_landmarks(pts, 64)
    with pytest.raises(LandmarkValueError, match=r"\[12\]"):
        landmark_image_tensor(pts, 64)


def test_bad_shape_raises() -> None:
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        draw_landmarks(np.zeros((5, 2)), 64)
    with pytest.raises(ValueError, match="positive"):
        draw_landmarks(np.zeros((68, 2)), 0)


def test_tensor_matches_image() -> None:
    pts = _face_like(64)
    t = landmark_image_tensor(pts, 64)
    assert t.shape == (3, 64, 64) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1 and t.min() == -1
    img = draw_landmarks(pts, 64)
    torch.testing.assert_close(t, torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1)
