"""Shapes: the embedded procedural dataset — exact, captioned scenes at any resolution.

A scene is a background plus one or two objects. Every object has a shape, a colour, a size
and a cell of a 3×3 grid (with a small jitter inside the cell); two objects also carry a
relation ("left of", "right of", "above", "below") of the first to the second that is true of
their cells. Everything is described in continuous [0, 1]² coordinates (x right, y down) and
rendered anti-aliased from signed distance functions, so the same scene renders at 64, 256 or
1024 px and a box-downsampled 256 render closely equals the 64 render — exact ground truth for
the upsamplers.

Splits are disjoint on discrete attribute combinations: a scene's discrete signature (shapes,
colours, sizes, positions, relation; object order canonicalised) is hashed into a bucket, and
`sample_scene` rejects and resamples until the bucket matches the requested split, so no val
combination ever appears in train. Held-out attribute combinations (e.g.
``[{"shape": "star", "color": "red"}]``) never appear in train; the "heldout" split forces one
object to match one of them (compositional tests).

Sample dict (one webdataset sample, as `ShapesDataset.sample` returns and shards store it)::

    {"__key__": "train-0-00000042",   # f"{split}-{seed}-{index:08d}", no dots
     "png":  PNG bytes at the main resolution,
     "txt":  caption (str),
     "json": scene JSON (str; `Scene.from_json` rebuilds the scene, `render` re-renders it),
     "256.png": PNG bytes at 256 px, ... one f"{r}.png" per extra resolution r}
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

# ---------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------

# Saturated object colours: far from each other (≥ ~80 per channel somewhere) and from every
# muted background colour below.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 40),
    "orange": (245, 130, 20),
    "yellow": (245, 215, 30),
    "green": (40, 170, 60),
    "cyan": (30, 200, 215),
    "blue": (35, 70, 225),
    "purple": (135, 50, 200),
    "pink": (245, 110, 185),
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "diamond", "cross")

# Size name -> nominal radius in image widths (a large object with its jitter stays in its cell).
SIZES: dict[str, float] = {"small": 0.09, "large": 0.13}

# Position name -> (row, col) of the 3×3 grid.
POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (0, 0), "top": (0, 1), "top right": (0, 2),
    "left": (1, 0), "center": (1, 1), "right": (1, 2),
    "bottom left": (2, 0), "bottom": (2, 1), "bottom right": (2, 2),
}

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
INVERSE_RELATION = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

# Muted backgrounds: name -> (RGB, words a caption may use for it).
BACKGROUNDS: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {
    "grey": ((128, 128, 128), ("grey", "gray")),
    "light grey": ((196, 196, 196), ("light grey", "pale grey")),
    "dark": ((40, 40, 46), ("dark", "dark grey")),
    "beige": ((205, 190, 160), ("beige", "sandy")),
    "slate": ((85, 95, 112), ("slate", "slate grey")),
    "white": ((236, 233, 225), ("white", "off-white")),
}
BACKGROUND_KINDS: tuple[str, ...] = ("plain", "gradient", "texture")

SPLITS: tuple[str, ...] = ("train", "val", "heldout")
ATTRIBUTES: tuple[str, ...] = ("shape", "color", "size", "position")

_CELL = 1.0 / 3.0
_MARGIN = 0.006  # keeps every object strictly inside its cell, so two objects never overlap
_MAX_JITTER = 0.04
_CIRCLE_SCALE = 0.85  # circle radius / nominal radius (similar area to the other shapes)
_MAX_ROTATION = 10.0  # degrees; squares stay clearly unlike diamonds (45°)


# ---------------------------------------------------------------------------------------------
# Scene description
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ShapeObject:
    """One object: discrete attributes plus its exact centre (x, y in [0, 1]) and rotation."""

    shape: str
    color: str
    size: str
    position: str
    center: tuple[float, float]
    rotation: float = 0.0  # degrees, counter-clockwise on screen

    @property
    def radius(self) -> float:
        return SIZES[self.size]

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLORS[self.color]

    def matches(self, combo: Mapping[str, str]) -> bool:
        """True when every attribute named in `combo` equals this object's."""
        return all(getattr(self, k) == v for k, v in combo.items())


@dataclasses.dataclass(frozen=True)
class Background:
    """Plain colour, linear gradient (rgb -> rgb2 along `angle`) or a light sinusoid texture."""

    kind: str
    color: str  # a BACKGROUNDS name
    rgb: tuple[int, int, int]
    rgb2: tuple[int, int, int] | None = None  # gradient end colour
    angle: float = 0.0  # gradient direction, degrees
    waves: tuple[tuple[float, float, float, float], ...] = ()  # texture: (fx, fy, phase, amplitude)


@dataclasses.dataclass(frozen=True)
class Scene:
    """Background + one or two objects; `relation` is of objects[0] to objects[1]."""

    objects: tuple[ShapeObject, ...]
    background: Background
    relation: str | None = None
    seed: int | None = None
    split: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "objects": [dataclasses.asdict(o) for o in self.objects],
            "relation": self.relation,
            "background": dataclasses.asdict(self.background),
            "seed": self.seed,
            "split": self.split,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scene:
        objects = tuple(
            ShapeObject(o["shape"], o["color"], o["size"], o["position"], tuple(o["center"]), float(o["rotation"]))
            for o in d["objects"]
        )
        b = d["background"]
        background = Background(
            kind=b["kind"],
            color=b["color"],
            rgb=tuple(b["rgb"]),
            rgb2=None if b.get("rgb2") is None else tuple(b["rgb2"]),
            angle=float(b.get("angle", 0.0)),
            waves=tuple(tuple(w) for w in b.get("waves", ())),
        )
        scene = cls(objects, background, d.get("relation"), d.get("seed"), d.get("split"))
        validate_scene(scene)
        return scene

    @classmethod
    def from_json(cls, text: str | bytes) -> Scene:
        return cls.from_dict(json.loads(text))


def true_relations(a: ShapeObject, b: ShapeObject) -> list[str]:
    """Every relation of `a` to `b` that holds on the grid (distinct cells give at least one)."""
    (ra, ca), (rb, cb) = POSITIONS[a.position], POSITIONS[b.position]
    rels = []
    if ca < cb:
        rels.append("left of")
    if ca > cb:
        rels.append("right of")
    if ra < rb:
        rels.append("above")
    if ra > rb:
        rels.append("below")
    return rels


def validate_scene(scene: Scene) -> None:
    """Raise ValueError naming the first attribute that is unknown or inconsistent."""
    if not 1 <= len(scene.objects) <= 2:
        raise ValueError(f"a scene holds 1 or 2 objects, got {len(scene.objects)}")
    for o in scene.objects:
        for name, value, vocab in (
            ("shape", o.shape, SHAPES), ("color", o.color, COLORS),
            ("size", o.size, SIZES), ("position", o.position, POSITIONS),
        ):
            if value not in vocab:
                raise ValueError(f"unknown {name} {value!r}; expected one of {sorted(vocab)}")
    if scene.background.kind not in BACKGROUND_KINDS:
        raise ValueError(f"unknown background kind {scene.background.kind!r}; expected {BACKGROUND_KINDS}")
    if len(scene.objects) == 2:
        a, b = scene.objects
        if a.position == b.position:
            raise ValueError(f"two objects share the cell {a.position!r}")
        if scene.relation not in true_relations(a, b):
            raise ValueError(f"relation {scene.relation!r} is false of {a.position!r} vs {b.position!r}")
    elif scene.relation is not None:
        raise ValueError("a one-object scene has no relation")


# ---------------------------------------------------------------------------------------------
# Splits: hash the discrete signature into a bucket
# ---------------------------------------------------------------------------------------------


def signature(scene: Scene) -> tuple:
    """Discrete attributes only, object order canonicalised ("A left of B" == "B right of A")."""
    objs = [(o.shape, o.color, o.size, o.position) for o in scene.objects]
    if len(objs) == 1:
        return (objs[0],)
    a, b = objs
    return min((a, scene.relation, b), (b, INVERSE_RELATION[scene.relation], a))


def split_bucket(scene: Scene, val_fraction: float = 0.1) -> str:
    """'val' for about `val_fraction` of all signatures, else 'train' (stable across processes)."""
    digest = hashlib.sha256(repr(signature(scene)).encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction else "train"


def parse_heldout(spec: str | Iterable[Mapping[str, str]] | None) -> list[dict[str, str]]:
    """Held-out combos from 'star:red,circle:blue' (values looked up in the vocabularies; positions
    may be written 'top-left') or from a list of dicts like {"shape": "star", "color": "red"}."""
    if spec is None:
        return []
    if not isinstance(spec, str):
        combos = [dict(c) for c in spec]
        for c in combos:
            unknown = set(c) - set(ATTRIBUTES)
            if unknown or not c:
                raise ValueError(f"held-out combo {c!r}: keys must be among {ATTRIBUTES}")
        return combos
    vocab = {"shape": SHAPES, "color": COLORS, "size": SIZES, "position": POSITIONS}
    combos = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        combo: dict[str, str] = {}
        for word in item.split(":"):
            value = word.strip().lower().replace("-", " ").replace("_", " ")
            attr = next((k for k, v in vocab.items() if value in v), None)
            if attr is None or attr in combo:
                raise ValueError(
                    f"held-out combo {item!r}: {word!r} is not a shape, colour, size or position "
                    f"(or names one attribute twice); expected e.g. 'star:red'"
                )
            combo[attr] = value
        combos.append(combo)
    return combos


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------


def _as_rng(rng: np.random.Generator | int) -> tuple[np.random.Generator, int | None]:
    if isinstance(rng, np.random.Generator):
        return rng, None
    return np.random.default_rng(int(rng)), int(rng)


def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _sample_object(rng: np.random.Generator, taken: set[str], fixed: Mapping[str, str]) -> ShapeObject:
    shape = fixed.get("shape") or _pick(rng, SHAPES)
    color = fixed.get("color") or _pick(rng, list(COLORS))
    size = fixed.get("size") or _pick(rng, list(SIZES))
    position = fixed.get("position") or _pick(rng, [p for p in POSITIONS if p not in taken])
    row, col = POSITIONS[position]
    jitter = min(_MAX_JITTER, _CELL / 2 - shape_extent(shape, SIZES[size]) - _MARGIN)
    cx = (col + 0.5) * _CELL + float(rng.uniform(-jitter, jitter))
    cy = (row + 0.5) * _CELL + float(rng.uniform(-jitter, jitter))
    rotation = float(rng.uniform(-_MAX_ROTATION, _MAX_ROTATION))
    return ShapeObject(shape, color, size, position, (cx, cy), rotation)


def _sample_background(rng: np.random.Generator) -> Background:
    kind = _pick(rng, BACKGROUND_KINDS)
    name = _pick(rng, list(BACKGROUNDS))
    rgb = BACKGROUNDS[name][0]
    if kind == "plain":
        return Background(kind, name, rgb)
    if kind == "gradient":  # same hue, 15–30 % lighter or darker at the far end
        factor = float(rng.uniform(0.7, 0.85) if rng.random() < 0.5 else rng.uniform(1.15, 1.3))
        rgb2 = tuple(int(min(255, round(c * factor))) for c in rgb)
        return Background(kind, name, rgb, rgb2=rgb2, angle=float(rng.uniform(0, 360)))
    waves = []
    for _ in range(3):  # low frequencies only: smooth at 64 px, exact at any resolution
        fx, fy = 0, 0
        while fx == 0 and fy == 0:
            fx, fy = (int(v) for v in rng.integers(-4, 5, size=2))
        waves.append((float(fx), float(fy), float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0.03, 0.06))))
    return Background(kind, name, rgb, waves=tuple(waves))


def _sample_candidate(rng: np.random.Generator, forced: Mapping[str, str] | None) -> Scene:
    n = 1 if rng.random() < 0.5 else 2
    forced_index = int(rng.integers(n)) if forced else -1
    taken: set[str] = set()
    if forced and "position" in forced:  # place the forced object first so its cell is free
        order = [forced_index] + [i for i in range(n) if i != forced_index]
    else:
        order = list(range(n))
    slots: dict[int, ShapeObject] = {}
    for i in order:
        obj = _sample_object(rng, taken, forced if i == forced_index else {})
        slots[i] = obj
        taken.add(obj.position)
    objects = [slots[i] for i in range(n)]
    relation = _pick(rng, true_relations(*objects)) if n == 2 else None
    return Scene(tuple(objects), _sample_background(rng), relation)


def sample_scene(
    rng: np.random.Generator | int,
    split: str = "train",
    heldout: Iterable[Mapping[str, str]] | str | None = None,
    val_fraction: float = 0.1,
    max_tries: int = 10_000,
) -> Scene:
    """Sample a scene of `split` ('train', 'val' or 'heldout'), deterministic in `rng` (seed or Generator).

    train: signature hashes to the train bucket and no object matches a held-out combo;
    val: signature hashes to the val bucket (held-out combos appear at their natural rate);
    heldout: one object is forced to match a held-out combo (bucket ignored; never in train).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    combos = parse_heldout(heldout)
    if split == "heldout" and not combos:
        raise ValueError("split 'heldout' needs at least one held-out combo, e.g. [{'shape': 'star', 'color': 'red'}]")
    gen, seed = _as_rng(rng)
    for _ in range(max_tries):
        forced = _pick(gen, combos) if split == "heldout" else None
        scene = _sample_candidate(gen, forced)
        if split == "train" and (
            split_bucket(scene, val_fraction) != "train" or any(o.matches(c) for o in scene.objects for c in combos)
        ):
            continue
        if split == "val" and split_bucket(scene, val_fraction) != "val":
            continue
        return dataclasses.replace(scene, seed=seed, split=split)
    raise RuntimeError(f"no {split!r} scene found in {max_tries} tries (val_fraction={val_fraction}, heldout={combos})")


# ---------------------------------------------------------------------------------------------
# Rendering: signed distance functions -> anti-aliased coverage
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Captions: a small grammar with paraphrases, always true of the scene
# ---------------------------------------------------------------------------------------------

SIZE_WORDS = {"small": ("small", "tiny", "little"), "large": ("large", "big")}
RELATION_WORDS = {
    "left of": ("to the left of", "left of", "on the left of"),
    "right of": ("to the right of", "right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
POSITION_PHRASES = {
    "top left": ("in the top left corner", "at the top left", "in the upper left corner"),
    "top": ("at the top", "at the top center", "in the top middle"),
    "top right": ("in the top right corner", "at the top right", "in the upper right corner"),
    "left": ("on the left", "at the left", "in the middle of the left side"),
    "center": ("in the middle", "in the center", "at the center"),
    "right": ("on the right", "at the right", "in the middle of the right side"),
    "bottom left": ("in the bottom left corner", "at the bottom left", "in the lower left corner"),
    "bottom": ("at the bottom", "at the bottom center", "in the bottom middle"),
    "bottom right": ("in the bottom right corner", "at the bottom right", "in the lower right corner"),
}
POSITION_LABELS = {
    "top left": ("top left", "top-left", "upper left"), "top": ("top", "top center"),
    "top right": ("top right", "top-right", "upper right"), "left": ("left", "middle left"),
    "center": ("center", "middle"), "right": ("right", "middle right"),
    "bottom left": ("bottom left", "bottom-left", "lower left"), "bottom": ("bottom", "bottom center"),
    "bottom right": ("bottom right", "bottom-right", "lower right"),
}
BACKGROUND_PHRASES = {
    "plain": ("on a {} background", "on a plain {} background", "against a {} backdrop"),
    "gradient": ("on a {} background", "on a {} gradient", "against a {} gradient backdrop"),
    "texture": ("on a {} background", "on a textured {} background", "on a mottled {} surface"),
}


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _noun_phrase(rng: np.random.Generator, obj: ShapeObject, p_size: float) -> str:
    words = [obj.color, obj.shape]
    if rng.random() < p_size:
        words.insert(0, _pick(rng, SIZE_WORDS[obj.size]))
    return _article(" ".join(words))


def caption(scene: Scene, rng: np.random.Generator | int) -> str:
    """One paraphrase describing `scene`, e.g. 'a small red star in the top left corner',
    'top-left: a tiny red star on a grey background', 'a purple triangle is right of a green circle'."""
    gen, _ = _as_rng(rng)
    if len(scene.objects) == 1:
        (obj,) = scene.objects
        np_ = _noun_phrase(gen, obj, p_size=0.85)
        form = int(gen.integers(4))
        if form == 0:
            text = f"{np_} {_pick(gen, POSITION_PHRASES[obj.position])}"
        elif form == 1:
            text = f"{_pick(gen, POSITION_LABELS[obj.position])}: {np_}"
        elif form == 2:
            text = f"there is {np_} {_pick(gen, POSITION_PHRASES[obj.position])}"
        else:
            text = f"{_pick(gen, POSITION_PHRASES[obj.position])}, {np_}"
    else:
        a, b = scene.objects
        rel = scene.relation
        if gen.random() < 0.5:  # say it the other way round: "B right of A"
            a, b, rel = b, a, INVERSE_RELATION[rel]
        np_a, np_b = _noun_phrase(gen, a, p_size=0.5), _noun_phrase(gen, b, p_size=0.5)
        verb = " is " if gen.random() < 0.4 else " "
        text = f"{np_a}{verb}{_pick(gen, RELATION_WORDS[rel])} {np_b}"
    if gen.random() < 0.35:
        bg = scene.background
        words = _pick(gen, BACKGROUND_PHRASES[bg.kind]).format(_pick(gen, BACKGROUNDS[bg.color][1]))
        text = f"{text} {words}"
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


# ---------------------------------------------------------------------------------------------
# Indexable view: index -> sample dict
# ---------------------------------------------------------------------------------------------


def scene_seed(seed: int, split: str, index: int) -> int:
    """Stable 63-bit seed of sample `index` of `split` in the dataset seeded `seed`."""
    digest = hashlib.sha256(f"shapes/{seed}/{split}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


class ShapesDataset:
    """Map-style view of the shapes split: sample `i` of (split, seed) is always the same.

    `dataset[i]` is the shard sample dict of the module docstring; `scene(i)`, `caption(i)` and
    `image(i, resolution)` give its parts without PNG encoding.
    """

    def __init__(
        self,
        split: str = "train",
        length: int = 10_000,
        seed: int = 0,
        resolution: int = 64,
        extra_resolutions: Sequence[int] = (),
        heldout: Iterable[Mapping[str, str]] | str | None = None,
        val_fraction: float = 0.1,
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        self.split, self.length, self.seed = split, int(length), int(seed)
        self.resolution = int(resolution)
        self.extra_resolutions = tuple(int(r) for r in extra_resolutions if int(r) != self.resolution)
        self.heldout = parse_heldout(heldout)
        self.val_fraction = val_fraction

    def __len__(self) -> int:
        return self.length

    def key(self, index: int) -> str:
        return f"{self.split}-{self.seed}-{index:08d}"

    def scene(self, index: int) -> Scene:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        return sample_scene(scene_seed(self.seed, self.split, index), self.split, self.heldout, self.val_fraction)

    def caption(self, index: int, scene: Scene | None = None) -> str:
        scene = scene or self.scene(index)
        return caption(scene, np.random.default_rng([scene.seed, 1]))

    def image(self, index: int, resolution: int | None = None) -> Image.Image:
        return render(self.scene(index), resolution or self.resolution)

    def sample(self, index: int) -> dict[str, Any]:
        scene = self.scene(index)
        sample = {
            "__key__": self.key(index),
            "png": encode_png(render(scene, self.resolution)),
            "txt": self.caption(index, scene),
            "json": scene.to_json(),
        }
        for r in self.extra_resolutions:
            sample[f"{r}.png"] = encode_png(render(scene, r))
        return sample

    __getitem__ = sample
