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

Modules: `scenes` (vocabulary, `Scene`, validation, split signature, held-out combos), `sampling`
(`sample_scene`), `rendering` (`render`, `object_mask`, the shapes' outlines), `captions` (`caption`)
and `dataset` (`ShapesDataset`). Import the names below from `unclip.data.shapes`.
"""

from .captions import (
    BACKGROUND_PHRASES,
    POSITION_LABELS,
    POSITION_PHRASES,
    RELATION_WORDS,
    SIZE_WORDS,
    caption,
)
from .dataset import ShapesDataset, encode_png, scene_seed
from .rendering import object_mask, polygon_sdf, render, shape_extent, shape_outline
from .sampling import sample_scene
from .scenes import (
    ATTRIBUTES,
    BACKGROUND_KINDS,
    BACKGROUNDS,
    COLORS,
    INVERSE_RELATION,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    SPLITS,
    Background,
    Scene,
    ShapeObject,
    parse_heldout,
    signature,
    split_bucket,
    true_relations,
    validate_scene,
)

__all__ = [
    # scenes
    "ATTRIBUTES", "BACKGROUND_KINDS", "BACKGROUNDS", "COLORS", "INVERSE_RELATION", "POSITIONS", "RELATIONS",
    "SHAPES", "SIZES", "SPLITS", "Background", "Scene", "ShapeObject", "parse_heldout", "signature",
    "split_bucket", "true_relations", "validate_scene",
    # sampling, rendering, captions, dataset
    "sample_scene",
    "object_mask", "polygon_sdf", "render", "shape_extent", "shape_outline",
    "BACKGROUND_PHRASES", "POSITION_LABELS", "POSITION_PHRASES", "RELATION_WORDS", "SIZE_WORDS", "caption",
    "ShapesDataset", "encode_png", "scene_seed",
]
