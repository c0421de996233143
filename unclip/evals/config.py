"""Structured schemas of the eval entry points (registered in Hydra's ConfigStore, so typos fail)
and the builders they share: the CLIP and the feature extractor."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Optional

from omegaconf import MISSING

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ClipConfig:
    dir: Optional[str] = None  # a saved FrozenCLIP (<pipeline>/clip); wins over arch/weights
    arch: Optional[str] = "unclip-tiny"  # null: no CLIP (no CLIP score; realism then needs `features`)
    weights: Optional[str] = None  # local checkpoint; null = random weights (smoke tests only)


@dataclasses.dataclass
class _Common:
    out_dir: str = "runs/evals"
    report: str = "${out_dir}/report.html"  # sections JSON is kept beside it (report.json)
    clip: ClipConfig = dataclasses.field(default_factory=ClipConfig)
    features: Optional[Any] = None  # null: CLIP image features; else a _target_ building images -> [N, D]
    # reference set of FD / precision / recall / realism / Inception FID. null: shapes renders (val split);
    # else an image folder (png/jpg/jpeg/webp) or webdataset shards (a directory of .tar, a brace pattern
    # '/data/coco/{00000..00009}.tar', a glob, or a list); the first n_reference images are used
    reference: Optional[Any] = None
    n_reference: int = 200
    reference_seed: int = 0  # shapes scenes only
    # local torch-fidelity InceptionV3 weights (weights-inception-2015-12-05-6726825d.pth, never downloaded):
    # adds standard Inception FID; null: FD over the feature extractor (FD_CLIP) only
    fid_weights: Optional[str] = None
    heldout: Optional[str] = None  # held-out combos, e.g. "star:red,circle:blue"
    k: int = 3  # k-NN of the manifold estimates
    grid_prompts: int = 8  # prompts shown in the sample grid


@dataclasses.dataclass
class CaptionMatchConfig(_Common):
    images_dir: str = MISSING  # <name>.png + <name>.json (prompt, seed, size)
    name: str = "model"
    json: str = "${out_dir}/caption_match-${name}.json"


@dataclasses.dataclass
class CompareConfig(_Common):
    # system name -> images directory; ≥ 2 systems on the same prompts and seeds ('+runs={a: DIR, b: DIR}')
    runs: dict[str, str] = dataclasses.field(default_factory=dict)
    json: str = "${out_dir}/compare.json"
    n_boot: int = 1000  # Bradley–Terry bootstrap resamples over prompts (> 2 systems)


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="caption_match_schema", node=CaptionMatchConfig)
    cs.store(name="compare_schema", node=CompareConfig)


def build_clip(cfg: ClipConfig):
    from unclip.clip import FrozenCLIP

    if cfg.dir:
        return FrozenCLIP.load(cfg.dir)
    if not cfg.arch:
        return None
    if cfg.weights is None:
        log.warning("eval CLIP %s has random weights: CLIP scores and FD_CLIP are not meaningful", cfg.arch)
    return FrozenCLIP.create(cfg.arch, cfg.weights)


def build_features(cfg: Any):
    """None (use CLIP image features) or the callable a `_target_` config instantiates."""
    if cfg is None:
        return None
    from hydra.utils import instantiate

    fn = instantiate(cfg)
    if not callable(fn):
        raise TypeError(f"eval features config {cfg} built {type(fn).__name__}, expected a callable images -> [N, D]")
    return fn


def build_reference(value: Any) -> Any:
    """The `reference` config as the jobs take it: None, a path / pattern string, or a list of them."""
    from omegaconf import ListConfig, OmegaConf

    if isinstance(value, ListConfig):
        return [str(v) for v in OmegaConf.to_container(value)]
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"eval reference must be null, a path / shard pattern or a list of shards, got {value!r}")


def job_kwargs(cfg: Any) -> dict[str, Any]:
    """Keyword arguments shared by `caption_match_job` and `compare_job`. A missing `fid_weights` file
    fails here, before CLIP is built or any image is read."""
    if cfg.fid_weights:
        from unclip.evals.fid import check_fid_weights

        check_fid_weights(cfg.fid_weights)
    return {"clip": build_clip(cfg.clip), "features": build_features(cfg.features), "n_reference": cfg.n_reference,
            "reference_seed": cfg.reference_seed, "heldout": cfg.heldout, "k": cfg.k,
            "reference": build_reference(cfg.reference), "fid_weights": cfg.fid_weights}
