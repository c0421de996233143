"""UnCLIPPipeline: load a pipeline directory and run the cascade (Ramesh et al. 2022, Fig. 2).

caption → CLIP text (z_t, tokens) → prior → z_i → 64-px decoder → sr256 → sr1024. Variations,
interpolation and text diffs (§3) skip the prior and start from an image's z_i and DDIM-inverted
noise; edits and outpainting live in ``editing.py``. Every image has its own seed, derived from
(call seed, image index), so it is the same whatever the batch it is drawn in.
"""
from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from unclip.clip import FrozenCLIP
from unclip.compile import maybe_compile
from unclip.diffusion import derive_seed
from unclip.errors import InputError
from unclip.models import STAGES, UPSAMPLER_SIZES, load_stage, save_stage
from unclip.moderation import Moderator
from unclip.moderation_calibration import FILE as CALIBRATION_FILE
from unclip.moderation_calibration import load_calibration

from . import editing, latents
from .images import resize_keep, to_pil
from .result import GenerationResult, check_output_type
from .settings import PRESETS, PipelineSettings, resolve_settings
from .stages import Stage, StepCallback, run_decoder, run_prior, run_upsampler

log = logging.getLogger(__name__)

# (stage, step, num_steps, x): x is the stage's latents after the step (the last step's: its output); a tensor the
# callback returns replaces them (diffusers' callback_on_step_end), None keeps them
Callback = Callable[[str, int, int, torch.Tensor], torch.Tensor | None]
MAX_N = 64


class UnCLIPPipeline:
    """The unCLIP sampling pipeline over a directory ``clip/ prior/ decoder/ [sr256/ [sr1024/]]``."""

    # image manipulations through (z_i, x_T) (latents.py) and edits (editing.py): functions of the pipeline
    variations = latents.variations
    interpolate = latents.interpolate
    text_diff = latents.text_diff
    edit = editing.edit
    outpaint = editing.outpaint

    def __init__(self, clip: FrozenCLIP, stages: dict[str, Stage], pipeline_dir: str, *,
                 settings: PipelineSettings, moderator=None):
        self.clip, self.stages, self.pipeline_dir = clip, stages, pipeline_dir
        self.settings, self.moderator = settings, moderator

    @classmethod
    def load(cls, pipeline_dir: str | os.PathLike, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32, settings: str | PipelineSettings | dict = "fast",
             moderation: bool | str | os.PathLike | Any = True, compile: bool = False) -> UnCLIPPipeline:
        """Load every stage present. ``dtype``: float32, or bfloat16 (or float16 on CUDA) to run the networks
        under autocast (weights and the sampling math stay float32). ``settings``: a preset name ("paper",
        "fast"), PipelineSettings or overrides.
        ``moderation``: True (configs/moderation/default.yaml), False (off, for research), a config
        path, or a ``Moderator``. ``compile``: run the stage networks through ``torch.compile`` (eager, with a
        warning, where no compiler is present; the first call of each shape compiles)."""
        root = Path(pipeline_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"pipeline directory not found: {root}")
        for required in ("clip", "prior", "decoder"):
            if not (root / required).is_dir():
                raise FileNotFoundError(f"pipeline directory {root} lacks {required}/ (expected clip/, prior/, "
                                        "decoder/ and optionally sr256/, sr1024/)")
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype={dtype}: expected torch.float32, torch.bfloat16 or torch.float16")
        if dtype == torch.float16 and torch.device(device).type != "cuda":
            raise ValueError("dtype=torch.float16 runs on CUDA only (CPU autocast has no float16 convolutions); "
                             "use torch.bfloat16 or torch.float32 on the CPU")
        clip = FrozenCLIP.load(root / "clip", device=device)
        stages = {}
        for name in STAGES:
            if (root / name).is_dir():
                spec, model = load_stage(root / name, device=device)
                stages[name] = Stage(name, spec, model, spec.diffusion(), dtype,
                                     compiled=maybe_compile(model, True, device) if compile else None)
        if "sr1024" in stages and "sr256" not in stages:
            raise ValueError(f"pipeline {root} has sr1024/ but no sr256/")
        settings = resolve_settings(settings, PRESETS["fast"])
        moderator = _moderator(moderation, clip, root / "clip")
        return cls(clip, stages, str(root.resolve()), settings=settings, moderator=moderator)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write this pipeline as a directory ``load`` reads: clip/ (with its moderation calibration, when it
        has one), prior/, decoder/ and the upsamplers present. ``directory`` must not exist yet or be empty."""
        out = Path(directory)
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(f"{out} is not empty: save a pipeline into a new directory")
        self.clip.save(out / "clip")
        calibration = Path(self.pipeline_dir) / "clip" / CALIBRATION_FILE
        if calibration.is_file():
            (out / "clip" / CALIBRATION_FILE).write_bytes(calibration.read_bytes())
        for name, stage in self.stages.items():
            save_stage(out / name, stage.spec, stage.model)
        return out

    # ------------------------------------------------------------------ checks

    @property
    def sizes(self) -> tuple[int, ...]:
        out = [self.stages["decoder"].model.image_size]
        out += [size for name, size in UPSAMPLER_SIZES.items() if name in self.stages]
        return tuple(out)

    @property
    def device(self) -> torch.device:
        return self.clip.device

    def _check_size(self, size) -> int:
        if isinstance(size, bool) or not isinstance(size, int) or size not in self.sizes:
            raise InputError("size", f"size={size!r}: this pipeline produces {self.sizes}")
        return size

    @staticmethod
    def _check_n(n) -> int:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
            raise InputError("n", f"n={n!r}: expected an int in [1, {MAX_N}]")
        return n

    def _check_prompts(self, prompts, param: str = "prompt") -> list[str]:
        items = [prompts] if isinstance(prompts, str) else prompts
        if not isinstance(items, (list, tuple)) or not items:
            raise InputError(param, f"expected a non-empty string or list of strings, got {prompts!r}")
        for p in items:
            if not isinstance(p, str) or not p.strip():
                raise InputError(param, f"expected a non-empty string, got {p!r}")
            if self.moderator is not None:
                self.moderator.require_prompt_ok(p)
        return list(items)

    @staticmethod
    def _seeds(seed: int | None, count: int, sample_seeds: Sequence[int] | None = None) -> tuple[int, list[int]]:
        """(call seed, per-image seeds): image i uses derive_seed(seed, i)."""
        if sample_seeds is not None:
            if len(sample_seeds) != count or not all(isinstance(s, int) for s in sample_seeds):
                raise InputError("seed", f"sample_seeds: expected {count} ints, one per image")
            return -1 if seed is None else seed, list(sample_seeds)
        if seed is None:
            seed = secrets.randbits(62)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError("seed", f"seed={seed!r}: expected a non-negative int or None")
        return seed, [derive_seed(seed, i) for i in range(count)]

    # ------------------------------------------------------------------ stages

    def _stage_cb(self, stage: str, callback: Callback | None, bar) -> StepCallback | None:
        if callback is None and bar is None:
            return None

        def cb(step: int, total: int, x: torch.Tensor) -> torch.Tensor | None:
            if bar is not None:
                bar.total = bar.total or total
                bar.update(1)
            return None if callback is None else callback(stage, step, total, x)
        return cb

    def encode_text(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """CLIP z_t, tokens and mask (prior) and the decoder's caption input (features or ids)."""
        emb, tokens, mask = self.clip.encode_text(prompts)
        out = {"text_emb": emb, "text_tokens": tokens, "text_mask": mask}
        if self.stages["decoder"].model.text.source.value == "ids":
            out["dec_tokens"], out["dec_mask"] = self.clip.tokenize(prompts).to(self.device), None
        else:
            out["dec_tokens"], out["dec_mask"] = tokens, mask
        return out

    def _prior(self, text: dict, seeds, st: PipelineSettings, callback, bar) -> torch.Tensor:
        return run_prior(self.stages["prior"], st.prior, text["text_emb"], text["text_tokens"], text["text_mask"],
                         seeds, self._stage_cb("prior", callback, bar))

    def _upsample(self, x: torch.Tensor, size: int, seeds, st: PipelineSettings, callback, bars, known=None,
                  keep=None) -> torch.Tensor:
        """64-px batch → ``size``; ``known``/``keep`` (at ``size``) are written back at every stage."""
        for index, (name, out_size) in enumerate(UPSAMPLER_SIZES.items(), start=2):
            if size < out_size:
                break
            kn = kp = None
            if known is not None:
                kn = known if known.shape[-1] == out_size else F.interpolate(known, size=out_size, mode="area")
                kp = resize_keep(keep, out_size)
            x = run_upsampler(self.stages[name], st.stage(name), x, seeds, index, known=kn, keep=kp,
                              callback=self._stage_cb(name, callback, bars.get(name)))
        return x

    def _bars(self, progress: bool, names: Sequence[str], batches: int) -> dict:
        if not progress:
            return {}
        from tqdm.auto import tqdm
        return {n: tqdm(desc=n, total=0, dynamic_ncols=True, leave=True) for n in names}

    def _finish(self, x: torch.Tensor, records: list[dict], bars: dict, output_type: str = "pil") -> GenerationResult:
        for bar in bars.values():
            bar.close()
        images = to_pil(x)
        flagged: list[str | None] = [None] * len(images)
        if self.moderator is not None and self.moderator.image_filter.concepts:
            hits = self.moderator.check_image_embeddings(self.clip.encode_image(images))
            for i, hit in enumerate(hits):
                if hit is not None:  # as diffusers' safety checker: black out, say which category
                    images[i] = images[i].point(lambda _: 0)
                    flagged[i] = hit.category
                    records[i]["moderation"] = {"category": hit.category, "concept": hit.match, "score": hit.score}
        return GenerationResult(images, records, flagged).as_type(output_type)

    def _record(self, mode: str, seed: int, index: int, sample_seed: int, size: int, st: PipelineSettings,
                **extra) -> dict[str, Any]:
        return {"mode": mode, **extra, "seed": seed, "index": index, "sample_seed": sample_seed, "size": size,
                "settings": st.to_dict(), "pipeline_dir": self.pipeline_dir}

    # ------------------------------------------------------------------ text → image

    @torch.no_grad()
    def generate(self, prompts: str | list[str], n: int = 1, size: int = 64, seed: int | None = None,
                 settings=None, callback: Callback | None = None, progress: bool = False,
                 sample_seeds: Sequence[int] | None = None,
                 image_embeds: torch.Tensor | str | None = None,
                 latents: torch.Tensor | None = None, output_type: str = "pil") -> GenerationResult:
        """n images per prompt (prompt-major): prior → decoder → upsamplers up to ``size``.
        ``latents`` [len(prompts)·n, 3, S, S] (S: the decoder's side) is the decoder's starting noise x_T
        instead of noise drawn from the seeds (as diffusers' ``latents``).
        ``sample_seeds`` (one per image) overrides ``seed``; a record's ``sample_seed`` remakes its image.
        ``image_embeds`` replaces the prior (the paper's §5.1 ablations): ``"text"`` feeds the decoder the
        CLIP text embedding z_t, a tensor [len(prompts)·n, D] feeds it given CLIP image embeddings.
        ``callback(stage, step, num_steps, x)`` sees each stage's latents after every step and may return a
        tensor that replaces them; ``output_type``: "pil", "np" or "pt" images (see GenerationResult)."""
        check_output_type(output_type)
        prompts, n, size = self._check_prompts(prompts), self._check_n(n), self._check_size(size)
        st = resolve_settings(settings, self.settings)
        flat = [p for p in prompts for _ in range(n)]
        seed, seeds = self._seeds(seed, len(flat), sample_seeds)
        source = self._check_image_embeds(image_embeds, len(flat))
        side = self.stages["decoder"].model.image_size
        if latents is not None and tuple(latents.shape) != (len(flat), 3, side, side):
            raise InputError("latents", f"latents must be [{len(flat)}, 3, {side}, {side}] (one x_T per image), "
                                        f"got {tuple(latents.shape)}")
        ups = [nm for nm, s in UPSAMPLER_SIZES.items() if s <= size]
        names = (["prior"] if source == "prior" else []) + ["decoder"] + ups
        bars = self._bars(progress, names, 1)
        outs = []
        for lo in range(0, len(flat), st.batch_size):
            chunk, cs = flat[lo:lo + st.batch_size], seeds[lo:lo + st.batch_size]
            text = self.encode_text(chunk)
            if source == "prior":
                z_i = self._prior(text, cs, st, callback, bars.get("prior"))
            elif source == "text":
                z_i = text["text_emb"]
            else:
                z_i = image_embeds[lo:lo + st.batch_size].to(self.device, torch.float32)
            x_t = None if latents is None else latents[lo:lo + st.batch_size].to(self.device, torch.float32)
            x = run_decoder(self.stages["decoder"], st.decoder, z_i, text["dec_tokens"], text["dec_mask"], cs,
                            x_t=x_t, callback=self._stage_cb("decoder", callback, bars.get("decoder")),
                            text_emb=text["text_emb"])
            outs.append(self._upsample(x, size, cs, st, callback, bars))
        records = [self._record("generate", seed, i, s, size, st, prompt=p, image_embeds=source)
                   for i, (p, s) in enumerate(zip(flat, seeds))]
        return self._finish(torch.cat(outs), records, bars, output_type)

    def _check_image_embeds(self, image_embeds, count: int) -> str:
        if image_embeds is None or (isinstance(image_embeds, str) and image_embeds in ("prior", "text")):
            return image_embeds or "prior"
        dim = self.clip.embed_dim
        if not isinstance(image_embeds, torch.Tensor) or tuple(image_embeds.shape) != (count, dim):
            got = tuple(image_embeds.shape) if isinstance(image_embeds, torch.Tensor) else repr(image_embeds)
            raise InputError("image_embeds", f"expected 'prior', 'text' or a tensor of shape ({count}, {dim}) "
                                             f"(one CLIP image embedding per image), got {got}")
        return "given"

    def reproduce(self, record: dict[str, Any], **inputs) -> GenerationResult:
        """Make a record's image again (``inputs``: the image(s)/mask of the modes that take them)."""
        st = PipelineSettings.from_dict(record["settings"])
        if record["mode"] != "generate" or record.get("image_embeds", "prior") == "given":
            raise InputError("record", "reproduce() remakes 'generate' records; call the mode's method with the "
                                       "recorded inputs, seed and settings for the others")
        return self.generate(record["prompt"], 1, record["size"], settings=st, sample_seeds=[record["sample_seed"]],
                             image_embeds=record.get("image_embeds", "prior"))


def _moderator(moderation, clip, clip_dir):
    """The pipeline's Moderator: prompts always; images only with a calibration made for this CLIP."""
    if moderation is False or moderation is None:
        return None
    if isinstance(moderation, Moderator):
        if moderation.image_filter.clip is None:
            moderation.image_filter.clip = clip
        return moderation
    config = None if moderation is True else moderation
    thresholds = load_calibration(clip_dir, clip)
    moderator = Moderator.default(clip, thresholds) if config is None else Moderator.from_config(config, clip,
                                                                                                    thresholds)
    if not moderator.image_status.startswith("on"):
        log.warning("image moderation %s", moderator.image_status)
    return moderator
