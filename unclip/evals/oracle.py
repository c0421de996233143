"""Caption-match oracle for `shapes`: read objects back out of an image, and attributes out of a caption.

Reading an image is analytic, by analysis-by-synthesis against the renderer's own geometry
(`unclip.data.shapes`): no weights, exact on rendered scenes, and total on anything else.

1. Candidate pixels are the saturated ones (object colours have chroma ≥ 130, backgrounds ≤ ~60);
   8-connected components larger than a floor are the candidate objects, largest first.
2. Around each component the background is a least-squares plane per channel over a ring of
   non-object pixels (exact for gradients, close for the low-frequency textures), and the object
   colour is the median of the component's most saturated pixels; the nearest palette colour names it.
3. Per-pixel coverage α = ⟨p − bg, c − bg⟩ / ‖c − bg‖² (the renderer composites p = bg + α(c − bg)),
   so Σα is the area and the α-weighted centroid the centre, both sub-pixel even at 64 px.
4. For every shape the nominal radius follows from the area (area = k_shape · r²); the shape is the
   one whose anti-aliased template, over a grid of rotations, best fits α (least squares). The size is
   the nearer nominal radius (log scale) and the position the 3×3 cell holding the centroid.

Blank, noisy or otherwise odd images never raise: they give fewer objects (maybe none) with large
``fit_error``. Captions are parsed with the grammar's vocabulary (`shapes.SIZE_WORDS`, ...).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np
from PIL import Image

from unclip.data import shapes as S

ATTRIBUTES = S.ATTRIBUTES  # ("shape", "color", "size", "position")
_PALETTE_NAMES = tuple(S.COLORS)
_PALETTE = np.array([S.COLORS[c] for c in _PALETTE_NAMES], dtype=np.float32)
_SIZE_SPLIT = math.sqrt(S.SIZES["small"] * S.SIZES["large"])  # geometric midpoint of the nominal radii
_ROTATIONS = np.arange(-12.0, 12.01, 2.0)  # degrees; the renderer samples [-10, 10]


@dataclasses.dataclass(frozen=True)
class DetectedObject:
    """One object read from an image; coordinates in image widths/heights (x right, y down)."""

    shape: str
    color: str
    size: str
    position: str
    center: tuple[float, float]
    radius: float  # nominal radius (image widths) implied by the area for the chosen shape
    area: float  # Σ coverage / (H·W)
    fit_error: float  # Σ(α − template)² / Σα: ~0 on a rendered object, large on anything else
    color_distance: float  # RGB distance from the measured colour to the named palette colour

    def attributes(self) -> dict[str, str]:
        return {a: getattr(self, a) for a in ATTRIBUTES}


# ---------------------------------------------------------------------------------------------
# Image -> objects
# ---------------------------------------------------------------------------------------------


def _to_array(image: Image.Image | np.ndarray, work_resolution: int) -> np.ndarray:
    """float32 [H, W, 3] in 0..255, box-downsampled so the longer side is ≤ work_resolution."""
    if isinstance(image, np.ndarray):
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=-1)
        if arr.dtype != np.uint8:
            scale = 255.0 if arr.size and float(np.nanmax(arr)) <= 1.0 else 1.0
            arr = np.clip(np.nan_to_num(arr.astype(np.float32) * scale), 0, 255).astype(np.uint8)
        image = Image.fromarray(arr[..., :3])
    image = image.convert("RGB")
    w, h = image.size
    if max(w, h) > work_resolution:
        f = max(w, h) / work_resolution
        image = image.resize((max(1, round(w / f)), max(1, round(h / f))), Image.BOX)
    return np.asarray(image, dtype=np.float32)


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        m = out.copy()
        m[1:] |= out[:-1]
        m[:-1] |= out[1:]
        m[:, 1:] |= out[:, :-1]
        m[:, :-1] |= out[:, 1:]
        out = m
    return out


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected labels of a boolean mask (0 = background, 1..n), by min-label propagation with
    pointer jumping (numpy only)."""
    h, w = mask.shape
    big = h * w + 1
    lab = np.where(mask, np.arange(1, h * w + 1, dtype=np.int64).reshape(h, w), big)
    while True:
        p = np.pad(lab, 1, constant_values=big)
        nb = lab.copy()
        for dy, dx in itertools.product((0, 1, 2), repeat=2):
            np.minimum(nb, p[dy:dy + h, dx:dx + w], out=nb)
        nb = np.where(mask, nb, big)
        flat = np.concatenate([[big], nb.ravel()])  # pointer jumping: label -> label of that pixel
        for _ in range(4):
            idx = np.where(nb < big, nb, 0)
            nb = np.where(mask, np.minimum(nb, flat[idx]), big)
            flat = np.concatenate([[big], nb.ravel()])
        if np.array_equal(nb, lab):
            break
        lab = nb
    roots, inv = np.unique(lab[mask], return_inverse=True)
    out = np.zeros((h, w), dtype=np.int64)
    out[mask] = inv + 1
    return out, len(roots)


@cache
def _shape_geometry(shape: str) -> tuple[float, tuple[float, float]]:
    """(k, centroid) of the shape at nominal radius 1: area = k r², area centroid in local coords."""
    verts = S.shape_outline(shape, 1.0)
    if verts is None:
        return math.pi * S.shape_extent("circle", 1.0) ** 2, (0.0, 0.0)
    x, y = verts[:, 0], verts[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    a = cross.sum() / 2
    return abs(float(a)), (float(((x + xn) * cross).sum() / (6 * a)), float(((y + yn) * cross).sum() / (6 * a)))


def coverage(shape: str, r: float, rotation: np.ndarray | float, cx: np.ndarray | float,
             cy: np.ndarray | float, xs: np.ndarray, ys: np.ndarray, resolution: float) -> np.ndarray:
    """Anti-aliased coverage of `shape` (nominal radius r, outline centre (cx, cy)) at pixel centres
    xs [w], ys [h] (image units), as the renderer computes it: clip(0.5 − sdf·R, 0, 1). `rotation`
    (degrees) and the centre may be arrays [k] (one template each), giving [k, h, w]."""
    rot, cx, cy = (np.atleast_1d(np.asarray(v, dtype=np.float64))[:, None, None] for v in (rotation, cx, cy))
    dx, dy = xs[None, None, :] - cx, ys[None, :, None] - cy
    verts = S.shape_outline(shape, r)
    if verts is None:
        sdf = np.sqrt(dx * dx + dy * dy) - S.shape_extent("circle", r) + 0 * rot
    else:  # the renderer rotates the pixel grid into the object's frame
        ca, sa = np.cos(np.radians(rot)), np.sin(np.radians(rot))
        sdf = S.polygon_sdf(ca * dx - sa * dy, sa * dx + ca * dy, verts)
    return np.clip(0.5 - sdf * resolution, 0.0, 1.0)


def _fit_shape(alpha: np.ndarray, xs: np.ndarray, ys: np.ndarray, resolution: float, area: float,
               centroid: tuple[float, float]) -> tuple[str, float, float]:
    """Best (shape, radius, error) for coverage map `alpha` by least squares over shapes × rotations."""
    best = ("circle", 0.0, math.inf)
    mass = max(float(alpha.sum()), 1e-6)
    for shape in S.SHAPES:
        k, (ox, oy) = _shape_geometry(shape)
        r = math.sqrt(max(area, 0.0) / k)
        rots = np.zeros(1) if shape == "circle" else _ROTATIONS
        a = np.radians(rots)
        # place the outline so that its (rotated) area centroid lands on the measured centroid
        cxs = centroid[0] - (np.cos(a) * ox + np.sin(a) * oy) * r
        cys = centroid[1] - (-np.sin(a) * ox + np.cos(a) * oy) * r
        t = coverage(shape, r, rots, cxs, cys, xs, ys, resolution)
        err = float(((alpha[None] - t) ** 2).sum(axis=(1, 2)).min()) / mass
        if err < best[2]:
            best = (shape, r, err)
    return best


def _plane_background(img: np.ndarray, ring: np.ndarray, yy: np.ndarray, xx: np.ndarray,
                      fallback: np.ndarray) -> np.ndarray:
    """Per-channel least-squares plane over the ring pixels, evaluated on the whole window [h, w, 3]."""
    if ring.sum() < 8:
        return np.broadcast_to(fallback, img.shape).astype(np.float32)
    A = np.stack([np.ones(ring.sum()), xx[ring], yy[ring]], axis=1)
    coef, *_ = np.linalg.lstsq(A, img[ring].astype(np.float64), rcond=None)
    full = np.stack([np.ones(xx.size), xx.ravel(), yy.ravel()], axis=1) @ coef
    return full.reshape(img.shape).astype(np.float32)


def _position(cx: float, cy: float) -> str:
    cell = (min(2, max(0, int(cy * 3))), min(2, max(0, int(cx * 3))))
    return next(name for name, rc in S.POSITIONS.items() if rc == cell)


def read_image(image: Image.Image | np.ndarray, max_objects: int = 4, chroma_threshold: float = 70.0,
               min_area: float = 0.003, max_area: float = 0.2, work_resolution: int = 256
               ) -> list[DetectedObject]:
    """Objects in `image` (PIL or uint8/float array), largest first, at most `max_objects`.

    Components covering less than `min_area` or more than `max_area` of the image (the largest
    shapes object covers ~0.045) are not objects. Works at any resolution (images larger than
    `work_resolution` are box-downsampled first); never raises on odd content: a blank image gives
    [], noise gives [] or poorly fitting guesses (large ``fit_error``)."""
    img = _to_array(image, work_resolution)
    h, w = img.shape[:2]
    if h < 4 or w < 4:
        return []
    chroma = img.max(axis=2) - img.min(axis=2)
    mask = chroma >= chroma_threshold
    if not mask.any():
        return []
    labels, n = connected_components(mask)
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    keep = [i + 1 for i in np.argsort(-counts, kind="stable")
            if min_area * h * w <= counts[i] <= max_area * h * w][:max_objects]
    grow = max(1, round(max(h, w) / 64))
    all_objects = _dilate(mask, grow + 1)
    fallback = np.median(img[~all_objects], axis=0) if (~all_objects).any() else np.full(3, 128.0)
    res = float(max(h, w))
    pad = max(3, round(0.06 * res))
    found = []
    for lab in keep:
        comp = labels == lab
        ys_i, xs_i = np.nonzero(comp)
        y0, y1 = max(0, ys_i.min() - pad), min(h, ys_i.max() + pad + 1)
        x0, x1 = max(0, xs_i.min() - pad), min(w, xs_i.max() + pad + 1)
        win = img[y0:y1, x0:x1]
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        near = _dilate(comp[y0:y1, x0:x1], grow)
        bg = _plane_background(win, ~all_objects[y0:y1, x0:x1], yy, xx, fallback)
        core_chroma = chroma[comp]
        core = win[comp[y0:y1, x0:x1] & (chroma[y0:y1, x0:x1] >= np.quantile(core_chroma, 0.6))]
        c = np.median(core, axis=0)
        d = c[None, None, :] - bg
        alpha = ((win - bg) * d).sum(-1) / np.maximum((d * d).sum(-1), 1.0)
        alpha = np.where(near, np.clip(alpha, 0.0, 1.0), 0.0)
        mass = float(alpha.sum())
        if mass <= 0:
            continue
        # pixel (i, j) covers [j/R, (j+1)/R): centres at (j + 0.5)/R, in units of the longer side
        xs, ys = (np.arange(x0, x1) + 0.5) / res, (np.arange(y0, y1) + 0.5) / res
        cx, cy = float((alpha.sum(0) * xs).sum() / mass), float((alpha.sum(1) * ys).sum() / mass)
        area = mass / (res * res)
        shape, r, err = _fit_shape(alpha, xs, ys, res, area, (cx, cy))
        dist = np.linalg.norm(_PALETTE - c[None], axis=1)
        ci = int(np.argmin(dist))
        found.append(DetectedObject(
            shape=shape, color=_PALETTE_NAMES[ci], size="small" if r < _SIZE_SPLIT else "large",
            position=_position(cx * res / w, cy * res / h), center=(cx * res / w, cy * res / h),
            radius=r, area=mass / (h * w), fit_error=err, color_distance=float(dist[ci])))
    return found


# ---------------------------------------------------------------------------------------------
# Caption / scene -> expected attributes
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PromptSpec:
    """What a prompt asks for: objects (attribute -> value, only the attributes it states) and the
    relation of objects[0] to objects[1] when it states one."""

    objects: tuple[dict[str, str], ...]
    relation: str | None = None

    @property
    def n_objects(self) -> int:
        return len(self.objects)

    def to_dict(self) -> dict[str, Any]:
        return {"objects": [dict(o) for o in self.objects], "relation": self.relation}


def _phrase_table(groups: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    pairs = {(p.replace("-", " "), k) for k, ps in groups.items() for p in ps}
    return sorted(pairs, key=lambda t: -len(t[0]))


_SIZE_WORD = {w: s for s, ws in S.SIZE_WORDS.items() for w in ws} | {s: s for s in S.SIZES}
_RELATION_TABLE = _phrase_table(S.RELATION_WORDS)
_POSITION_TABLE = _phrase_table({p: (p, *S.POSITION_PHRASES[p], *S.POSITION_LABELS[p]) for p in S.POSITIONS})
_SHAPE_WORD = {s: s for s in S.SHAPES} | {s + "s": s for s in S.SHAPES} | {"crosses": "cross"}
_BACKGROUND_RE = re.compile(r"\b(?:on|against) an? [a-z \-]*?(?:background|backdrop|gradient|surface)\b")


def _find_phrases(text: str, table: list[tuple[str, str]]) -> tuple[str, list[tuple[int, int, str]]]:
    """Longest-first phrase matches (start, end, value); matched spans blanked out of the text."""
    hits = []
    for phrase, value in table:
        for m in re.finditer(rf"\b{re.escape(phrase)}\b", text):
            hits.append((m.start(), m.end(), value))
            text = text[:m.start()] + " " * (m.end() - m.start()) + text[m.end():]
    return text, sorted(hits)


def parse_caption(text: str) -> PromptSpec:
    """Attributes a free-text prompt states, from the shapes grammar's vocabulary.

    Objects are noun phrases ``[size] [colour] shape`` in order of mention; a relation phrase between
    the first two objects gives `relation`; position phrases ("in the top left corner", "top-left:")
    attach to the nearest preceding object (or the next one when none precedes). Background phrases
    are ignored. Words outside the vocabulary are skipped, so any string parses (maybe to no objects)."""
    t = " " + re.sub(r"[^a-z ]+", " ", _BACKGROUND_RE.sub(" ", text.lower()).replace("-", " ")) + " "
    t = re.sub(r" +", " ", t)
    t, relations = _find_phrases(t, _RELATION_TABLE)
    t, positions = _find_phrases(t, _POSITION_TABLE)
    objects: list[dict[str, str]] = []
    starts: list[int] = []
    pending: dict[str, str] = {}
    for m in re.finditer(r"[a-z]+", t):
        word = m.group()
        if word in _SIZE_WORD:
            pending["size"] = _SIZE_WORD[word]
        elif word in S.COLORS:
            pending["color"] = word
        elif word in _SHAPE_WORD:
            objects.append({"shape": _SHAPE_WORD[word], **pending})
            starts.append(m.start())
            pending = {}
        elif word not in ("a", "an", "the", "and", "is", "there", "one", "with"):
            pending = {}  # modifiers must sit right before their noun
    for start, _, pos in positions:
        if not objects:
            break
        before = [i for i, s in enumerate(starts) if s < start]
        i = before[-1] if before else 0
        objects[i].setdefault("position", pos)
    relation = None
    if len(objects) >= 2:
        between = [v for s, _, v in relations if starts[0] < s < starts[1]]
        relation = between[0] if between else None
    return PromptSpec(tuple(objects), relation)


def spec_from_scene(scene: S.Scene, caption: str | None = None) -> PromptSpec:
    """The scene's attributes as a PromptSpec; with `caption`, only the attributes it states (values
    and object order from the caption's mention order, checked against the scene)."""
    if caption is None:
        return PromptSpec(tuple({a: getattr(o, a) for a in ATTRIBUTES} for o in scene.objects), scene.relation)
    parsed = parse_caption(caption)
    objs, rel = list(scene.objects), scene.relation
    if len(objs) == 2 and parsed.n_objects == 2:
        p0, p1 = parsed.objects[:2]
        keep, swap = _agree(p0, objs[0]) and _agree(p1, objs[1]), _agree(p0, objs[1]) and _agree(p1, objs[0])
        if swap and (not keep or parsed.relation == S.INVERSE_RELATION[rel] != rel):  # said the other way round
            objs, rel = objs[::-1], S.INVERSE_RELATION[rel]
    out = tuple({a: getattr(o, a) for a in p} for p, o in zip(parsed.objects, objs))
    return PromptSpec(out, rel if parsed.relation is not None else None)


def _agree(stated: Mapping[str, str], obj: Any) -> bool:
    get = obj.get if isinstance(obj, Mapping) else (lambda a: getattr(obj, a))
    return all(get(a) == v for a, v in stated.items())


# ---------------------------------------------------------------------------------------------
# Expected vs read
# ---------------------------------------------------------------------------------------------


def _relation_holds(rel: str, a: DetectedObject, b: DetectedObject) -> bool:
    (ra, ca), (rb, cb) = S.POSITIONS[a.position], S.POSITIONS[b.position]
    return {"left of": ca < cb, "right of": ca > cb, "above": ra < rb, "below": ra > rb}[rel]


def match(spec: PromptSpec, detected: Sequence[DetectedObject]) -> dict[str, Any]:
    """Score detected objects against what the prompt states.

    Objects are paired by the assignment with the most agreeing attributes, the relation included.
    Returns ``attributes``: {attr: [correct, stated]} over shape/color/size/position of every stated
    object (a missing object gets every stated attribute wrong) plus ``relation`` and ``count``
    (exactly as many objects as asked); ``n_correct`` (sum of correct), ``n_stated`` and
    ``full_match`` (everything stated is right and the count is right)."""
    det = list(detected)
    best_pairs: tuple[int | None, ...] = ()
    best_score = -1
    k = spec.n_objects
    for perm in itertools.permutations(list(range(len(det))) + [None] * k, k):
        score = sum(sum(det[j].attributes().get(a) == v for a, v in o.items()) + 0.001
                    for o, j in zip(spec.objects, perm) if j is not None)
        if spec.relation is not None and k >= 2 and None not in perm[:2]:
            score += _relation_holds(spec.relation, det[perm[0]], det[perm[1]])
        if score > best_score:
            best_score, best_pairs = score, tuple(perm)
    attrs: dict[str, list[int]] = {a: [0, 0] for a in (*ATTRIBUTES, "relation", "count")}
    for o, j in zip(spec.objects, best_pairs):
        for a, v in o.items():
            attrs[a][1] += 1
            attrs[a][0] += int(j is not None and getattr(det[j], a) == v)
    if spec.relation is not None and k >= 2:
        attrs["relation"][1] += 1
        i, j = best_pairs[0], best_pairs[1]
        attrs["relation"][0] += int(i is not None and j is not None and _relation_holds(spec.relation, det[i], det[j]))
    attrs["count"] = [int(len(det) == k), 1]
    n_correct = sum(c for c, _ in attrs.values())
    n_stated = sum(t for _, t in attrs.values())
    return {"attributes": attrs, "n_correct": n_correct, "n_stated": n_stated,
            "full_match": n_correct == n_stated, "pairs": list(best_pairs)}
