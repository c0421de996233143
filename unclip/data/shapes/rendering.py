"""Shapes rendering: signed distance functions of the shapes -> anti-aliased RGB images and object masks
at any resolution, from the same scene description."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .scenes import SHAPES, Background, Scene, ShapeObject

_CIRCLE_SCALE = 0.85  # circle radius / nominal radius (similar area to the other shapes)


def _regular_polygon(n: int, radius: float, phase: float) -> np.ndarray:
    angles = phase + 2 * math.pi * np.arange(n) / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int, outer: float, inner: float) -> np.ndarray:
    angles = -math.pi / 2 + math.pi * np.arange(2 * points) / points
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _cross(arm: float, half_width: float) -> np.ndarray:
    a, w = arm, half_width
    return np.array([(w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a),
                     (-w, a), (-w, w), (-a, w), (-a, -w), (-w, -w), (-w, -a)], dtype=np.float64)


def shape_outline(shape: str, r: float) -> np.ndarray | None:
    """Polygon vertices (local coords, y down) scaled to nominal radius `r`; None for a circle.
    Factors give the shapes similar visual weight at the same size."""
    if shape == "circle":
        return None
    if shape == "square":
        return _regular_polygon(4, 0.8 * r * math.sqrt(2), math.pi / 4)
    if shape == "diamond":
        return _regular_polygon(4, 1.05 * r, -math.pi / 2)
    if shape == "triangle":  # apex up; centroid at the centre
        return _regular_polygon(3, 1.1 * r, -math.pi / 2) + np.array([0.0, 0.1 * r])
    if shape == "hexagon":
        return _regular_polygon(6, 0.95 * r, 0.0)
    if shape == "star":
        return _star(5, 1.1 * r, 0.5 * r)
    if shape == "cross":
        return _cross(0.95 * r, 0.34 * r)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def shape_extent(shape: str, r: float) -> float:
    """Radius of the smallest centred disk holding the shape (any rotation)."""
    verts = shape_outline(shape, r)
    return _CIRCLE_SCALE * r if verts is None else float(np.max(np.linalg.norm(verts, axis=1)))


def polygon_sdf(x: np.ndarray, y: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Signed distance from points (x, y) to a simple polygon (negative inside): the distance to
    the nearest edge, signed by the even-odd crossing rule of a ray towards +x."""
    dist2 = np.full(np.broadcast(x, y).shape, np.inf, dtype=x.dtype)
    inside = np.zeros(dist2.shape, dtype=bool)
    for i in range(len(verts)):
        ax, ay = verts[i]
        bx, by = verts[i - 1]
        ex, ey = bx - ax, by - ay
        wx, wy = x - ax, y - ay
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        dist2 = np.minimum(dist2, (wx - ex * t) ** 2 + (wy - ey * t) ** 2)
        crosses = (ay > y) != (by > y)
        x_at = ax + (y - ay) * ex / (ey if ey != 0 else 1.0)
        inside ^= crosses & (x < x_at)
    return np.where(inside, -1.0, 1.0).astype(x.dtype) * np.sqrt(dist2)


def _pixel_centres(lo: int, hi: int, resolution: int) -> np.ndarray:
    return (np.arange(lo, hi, dtype=np.float32) + 0.5) / resolution


def _render_background(bg: Background, resolution: int) -> np.ndarray:
    c = _pixel_centres(0, resolution, resolution)
    x, y = c[None, :], c[:, None]
    rgb = np.asarray(bg.rgb, dtype=np.float32)
    if bg.kind == "plain":
        return np.broadcast_to(rgb, (resolution, resolution, 3)).copy()
    if bg.kind == "gradient":
        a = math.radians(bg.angle)
        # t runs 0 -> 1 across the image along direction a (projection of the centred square)
        span = abs(math.cos(a)) + abs(math.sin(a))
        t = np.clip(0.5 + ((x - 0.5) * math.cos(a) + (y - 0.5) * math.sin(a)) / span, 0.0, 1.0)
        rgb2 = np.asarray(bg.rgb2, dtype=np.float32)
        return rgb + t[..., None] * (rgb2 - rgb)
    shade = np.ones((resolution, resolution), dtype=np.float32)
    for fx, fy, phase, amp in bg.waves:
        shade += np.float32(amp) * np.sin(np.float32(2 * math.pi) * (fx * x + fy * y) + np.float32(phase))
    return np.clip(rgb * shade[..., None], 0.0, 255.0)


def _object_alpha(obj: ShapeObject, resolution: int) -> tuple[int, int, int, int, np.ndarray] | None:
    """Anti-aliased coverage of `obj` inside its bounding box: (y0, y1, x0, x1, alpha [h, w, 1])."""
    r = obj.radius
    verts = shape_outline(obj.shape, r)
    extent = shape_extent(obj.shape, r)
    cx, cy = obj.center
    x0 = max(0, int(math.floor((cx - extent) * resolution)) - 1)
    x1 = min(resolution, int(math.ceil((cx + extent) * resolution)) + 1)
    y0 = max(0, int(math.floor((cy - extent) * resolution)) - 1)
    y1 = min(resolution, int(math.ceil((cy + extent) * resolution)) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    dx = _pixel_centres(x0, x1, resolution)[None, :] - np.float32(cx)
    dy = _pixel_centres(y0, y1, resolution)[:, None] - np.float32(cy)
    if verts is None:
        sdf = np.sqrt(dx * dx + dy * dy) - np.float32(_CIRCLE_SCALE * r)
    else:  # rotate the pixel grid into the object's frame instead of the polygon into the image's
        a = math.radians(obj.rotation)
        ca, sa = np.float32(math.cos(a)), np.float32(math.sin(a))
        lx, ly = ca * dx - sa * dy, sa * dx + ca * dy
        sdf = polygon_sdf(lx, ly, verts.astype(np.float32))
    return y0, y1, x0, x1, np.clip(np.float32(0.5) - sdf * np.float32(resolution), 0.0, 1.0)[..., None]


def _paint_object(img: np.ndarray, obj: ShapeObject, resolution: int) -> None:
    box = _object_alpha(obj, resolution)
    if box is None:
        return
    y0, y1, x0, x1, alpha = box
    patch = img[y0:y1, x0:x1]
    patch += alpha * (np.asarray(obj.rgb, dtype=np.float32) - patch)


def object_mask(scene: Scene, resolution: int) -> np.ndarray:
    """Coverage of the scene's objects [resolution, resolution] in [0, 1] (anti-aliased as rendered):
    where the image shows an object rather than the background."""
    mask = np.zeros((int(resolution), int(resolution), 1), dtype=np.float32)
    for obj in scene.objects:
        box = _object_alpha(obj, int(resolution))
        if box is not None:
            y0, y1, x0, x1, alpha = box
            patch = mask[y0:y1, x0:x1]
            patch += alpha * (1.0 - patch)
    return mask[..., 0]


def render(scene: Scene, resolution: int) -> Image.Image:
    """Render `scene` at resolution × resolution px (RGB), anti-aliased: pixel (i, j) covers
    [j/R, (j+1)/R) × [i/R, (i+1)/R), coverage = clip(0.5 − sdf·R, 0, 1)."""
    resolution = int(resolution)
    if resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution}")
    img = _render_background(scene.background, resolution)
    for obj in scene.objects:
        _paint_object(img, obj, resolution)
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")
