"""Shapes scenes: the vocabulary, the scene description (`Scene` of `ShapeObject`s on a `Background`,
JSON round trip, validation) and the discrete signature that assigns a scene to a split."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

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
