"""Moderation: a prompt filter (category term lists) and an image filter (CLIP concept similarity).

* Prompt filter (``unclip.prompt_filter``): the prompt is normalised (Unicode look-alikes, accents, case,
  leetspeak, separators, repeated letters) and its tokens matched against the terms' skeletons, in time
  linear in the prompt's length (no regular expression that could backtrack); whole tokens only, so
  "skill" never matches "kill"; inflections ("nudity", "pornography") match; allowed phrases
  ("naked mole rat") exempt the terms inside them.
* Image filter (as diffusers' StableDiffusionSafetyChecker): cosine similarity of an image's CLIP
  embedding to each concept text's CLIP embedding, flagged above the concept's threshold.

The lists live in a data file (``configs/moderation/default.yaml``). ``Moderator.check_*`` return a
``ModerationResult`` (or None); ``require_*`` raise ``ModerationError``, an ``InputError`` naming the
category that fired and whether the prompt or an image did.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from unclip.errors import InputError
from unclip.prompt_filter import PromptFilter

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "moderation" / "default.yaml"  # package data
CATEGORIES = ("hate", "harassment", "self-harm", "sexual", "sexual/minors", "violence", "violence/graphic")


@dataclass(frozen=True)
class ModerationResult:
    category: str
    source: str  # "prompt" | "image"
    match: str  # the term or concept text that fired
    score: float | None = None  # image filter: the cosine similarity


class ModerationError(InputError):
    """Content refused by moderation. ``category`` fired; ``source`` is "prompt" or "image"."""

    def __init__(self, category: str, source: str, detail: str = ""):
        param = "prompt" if source == "prompt" else "image"
        super().__init__(param, f"rejected by the {source} moderation filter (category {category!r})"
                                + (f": {detail}" if detail else ""))
        self.category, self.source = category, source


@dataclass(frozen=True)
class Concept:
    category: str
    text: str
    threshold: float


class ImageFilter:
    """Flags CLIP image embeddings whose cosine similarity to a concept text exceeds its threshold."""

    def __init__(self, concepts: Sequence[Concept], clip=None):
        self.concepts, self.clip = list(concepts), clip
        self._emb: torch.Tensor | None = None

    def concept_embeddings(self) -> torch.Tensor:
        if self._emb is None:
            if self.clip is None:
                raise RuntimeError("ImageFilter needs a FrozenCLIP (Moderator(..., clip=...)) to embed concepts")
            self._emb = torch.nn.functional.normalize(self.clip.encode_text([c.text for c in self.concepts])[0], dim=-1)
        return self._emb

    def scores(self, image_emb: torch.Tensor) -> torch.Tensor:
        """Cosine similarities [B, K] of L2-normalised image embeddings [B, D] to the K concepts."""
        emb = self.concept_embeddings()
        return torch.nn.functional.normalize(image_emb.float(), dim=-1) @ emb.to(image_emb.device).T

    def check(self, image_emb: torch.Tensor) -> list[ModerationResult | None]:
        if not self.concepts:
            return [None] * image_emb.shape[0]
        sims = self.scores(image_emb)  # [B, K]
        thresholds = torch.tensor([c.threshold for c in self.concepts], device=sims.device)
        margin = sims - thresholds  # [B, K]
        out: list[ModerationResult | None] = []
        for row, sim in zip(margin, sims):
            k = int(row.argmax())
            hit = row[k] > 0
            out.append(ModerationResult(self.concepts[k].category, "image", self.concepts[k].text, float(sim[k]))
                       if hit else None)
        return out


def _read_config(config: str | os.PathLike | Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(config, Mapping):
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"moderation config not found: {path}")
        config = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    unknown = sorted(set(config) - {"prompt_categories", "prompt_allow", "image_concepts"})
    if unknown:
        raise ValueError(f"moderation config has unknown keys {unknown}: expected prompt_categories, "
                         "prompt_allow, image_concepts")
    return config


def read_concepts(config: str | os.PathLike | Mapping[str, Any]) -> list[tuple[str, str]]:
    """(category, text) of a moderation config's image concepts (thresholds come from a calibration)."""
    out = []
    for i, c in enumerate(_read_config(config).get("image_concepts") or []):
        if set(c) != {"category", "text"}:
            extra = " (thresholds are measured per CLIP: python -m unclip.moderation_calibration)" \
                if "threshold" in c else ""
            raise ValueError(f"image_concepts[{i}] = {c}: expected keys category, text{extra}")
        out.append((str(c["category"]), str(c["text"])))
    return out


class Moderator:
    """Prompt filter + image filter. Build with ``from_config`` (a YAML path or mapping) or ``default``."""

    def __init__(self, prompt_filter: PromptFilter, image_filter: ImageFilter, image_status: str | None = None):
        self.prompt_filter, self.image_filter = prompt_filter, image_filter
        self.image_status = image_status or ("on" if image_filter.concepts else "off: no image concepts")

    @classmethod
    def from_config(cls, config: str | os.PathLike | Mapping[str, Any] = DEFAULT_CONFIG, clip=None,
                    thresholds: Mapping[str, float] | None = None) -> Moderator:
        """The prompt filter of ``config``, and its image filter with ``thresholds`` ({concept text:
        threshold}, from ``unclip.moderation_calibration`` for this CLIP). Without thresholds the image
        filter is off (``image_status`` says why): fixed thresholds do not carry from one CLIP to another."""
        config = _read_config(config)
        concepts = read_concepts(config)
        prompts = PromptFilter(config.get("prompt_categories") or {}, config.get("prompt_allow") or ())
        if concepts and thresholds is None:
            status = ("off: this CLIP has no moderation calibration (python -m unclip.moderation_calibration "
                      "--clip CLIP_DIR --reference IMAGES)")
            return cls(prompts, ImageFilter([], clip), status)
        missing = [t for _, t in concepts if t not in (thresholds or {})]
        if missing:
            raise ValueError(f"the moderation calibration has no threshold for image concepts {missing}: "
                             "recalibrate with python -m unclip.moderation_calibration")
        filt = ImageFilter([Concept(c, t, float(thresholds[t])) for c, t in concepts], clip)
        return cls(prompts, filt, "on (calibrated)" if concepts else "off: no image concepts configured")

    @classmethod
    def default(cls, clip=None, thresholds: Mapping[str, float] | None = None) -> Moderator:
        return cls.from_config(DEFAULT_CONFIG, clip, thresholds)

    def check_prompt(self, text: str) -> ModerationResult | None:
        hit = self.prompt_filter.check(text)
        return None if hit is None else ModerationResult(hit[0], "prompt", hit[1])

    def check_image_embeddings(self, image_emb: torch.Tensor) -> list[ModerationResult | None]:
        return self.image_filter.check(image_emb)

    def check_images(self, images) -> list[ModerationResult | None]:
        """PIL images (or a [B, 3, H, W] tensor in [−1, 1]) → one result per image."""
        if self.image_filter.clip is None:
            raise RuntimeError("Moderator.check_images needs a FrozenCLIP")
        clip = self.image_filter.clip
        tensor = torch.is_tensor(images)
        emb = clip.encode_image(images, value_range=(-1.0, 1.0)) if tensor else clip.encode_image(images)
        return self.check_image_embeddings(emb)

    def require_prompt_ok(self, text: str) -> None:
        hit = self.check_prompt(text)
        if hit is not None:
            raise ModerationError(hit.category, "prompt", "the prompt contains a disallowed term")

    def require_images_ok(self, image_emb: torch.Tensor) -> None:
        for hit in self.check_image_embeddings(image_emb):
            if hit is not None:
                raise ModerationError(hit.category, "image", f"the image resembles {hit.match!r} "
                                                             f"(similarity {hit.score:.3f})")
