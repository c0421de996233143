"""FrozenCLIP: a frozen open_clip model that gives unCLIP its three CLIP quantities.

unCLIP (Ramesh et al. 2022, §2) conditions everything on a frozen CLIP:

* ``encode_text``  -> z_t (pooled, L2-normalised), the final-layer per-token text features and
  their padding mask (the prior and the decoder both attend over the caption tokens);
* ``encode_image`` -> z_i (L2-normalised), the target of the prior and the condition of the decoder.

Architectures come from open_clip by name (``"ViT-L-14"``) or from our own presets in
``configs/clip_model/*.json`` (``"unclip-tiny"``), registered with open_clip, or from a path to a
JSON config. Weights come only from local files: unclip never downloads a checkpoint (pass
``allow_download=True`` to hand an open_clip pretrained tag to open_clip on a machine with a network).

The released form is ``<dir>/{config.yaml, model.safetensors}``: the YAML holds the architecture
name and the full open_clip model config, so ``FrozenCLIP.load(dir)`` rebuilds it anywhere.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model
from torch import nn

from unclip.data.moments import Moments
from unclip.devices import to_device
from unclip.io import read_release_config, write_release

log = logging.getLogger(__name__)


class _QuietOpenClip(logging.Filter):
    """open_clip logs routine INFO lines ("Using default SimpleTokenizer.", "Parsing tokenizer identifier")
    on the root logger every time a CLIP is built; keep its warnings, drop those lines from our jobs' logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "open_clip" not in record.pathname


logging.getLogger().addFilter(_QuietOpenClip())

CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "clip_model"  # package data
FORMAT = "unclip.FrozenCLIP/v1"
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".npz")
_registered: set[Path] = set()


class WeightsNotLocalError(FileNotFoundError):
    """A weights argument names something to download (a pretrained tag, a hub id), not a local file."""


def register_model_configs(path: str | os.PathLike = CONFIG_DIR) -> None:
    """Register a folder (or one file) of open_clip-style JSON model configs with open_clip. Idempotent."""
    path = Path(path).resolve()
    if path in _registered or not path.exists():
        return
    open_clip.add_model_config(path)
    _registered.add(path)


register_model_configs()


def resolve_model_config(arch: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """Return ``(name, open_clip model config dict)`` for an open_clip name, one of ours, or a JSON path."""
    arch_str = str(arch)
    if arch_str.endswith(".json") or Path(arch_str).is_file():
        path = Path(arch_str)
        if not path.is_file():
            raise FileNotFoundError(f"CLIP model config file not found: {path}")
        cfg = json.loads(path.read_text())
        missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
        if missing:
            raise ValueError(f"CLIP model config {path} lacks {missing}; expected an open_clip model config "
                             "with embed_dim, vision_cfg and text_cfg")
        return path.stem, cfg
    if arch_str.startswith("hf-hub:"):
        raise WeightsNotLocalError(
            f"CLIP arch {arch_str!r} is a Hugging Face hub id: unclip does not download models here. "
            "Download it elsewhere, then pass its open_clip_config.json model_cfg as a JSON file and "
            "the checkpoint as a local weights file")
    cfg = open_clip.get_model_config(arch_str.replace("/", "-"))
    if cfg is None:
        ours = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
        raise ValueError(f"unknown CLIP arch {arch_str!r}: expected one of ours {ours}, an open_clip "
                         f"architecture (open_clip.list_models(), {len(open_clip.list_models())} names) "
                         "or a path to a JSON model config")
    name = arch_str.removeprefix("local-dir:")
    return name, cfg


def default_preprocess_cfg(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """open_clip's default eval preprocessing (OpenAI mean/std, bicubic, shortest-side resize)."""
    cfg = asdict(open_clip.transform.PreprocessCfg())
    cfg["size"] = model_cfg["vision_cfg"].get("image_size", cfg["size"])
    return _plain(cfg)


def _plain(obj: Any) -> Any:
    """Tuples -> lists, recursively, so configs round-trip through YAML/JSON unchanged."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


@contextlib.contextmanager
def _local_dir(model_cfg: dict[str, Any], preprocess_cfg: dict[str, Any]) -> Iterator[str]:
    """A throwaway ``local-dir:`` holding only open_clip_config.json, so open_clip builds from a dict."""
    with tempfile.TemporaryDirectory(prefix="unclip-clip-") as tmp:
        cfg = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
        (Path(tmp) / "open_clip_config.json").write_text(json.dumps(cfg))
        yield f"local-dir:{tmp}"


def _check_text_tower(arch: str, model_cfg: dict[str, Any]) -> None:
    text_cfg = model_cfg.get("text_cfg", {})
    if "hf_model_name" in text_cfg:
        raise ValueError(f"CLIP arch {arch!r} has a Hugging Face text tower ({text_cfg['hf_model_name']}): "
                         "unclip needs an open_clip TextTransformer with ln_final for per-token features")


def build_open_clip(arch: str, model_cfg: dict[str, Any], preprocess_cfg: dict[str, Any]) -> nn.Module:
    """Random-init open_clip model for ``model_cfg`` (no weights loaded, nothing downloaded)."""
    _check_text_tower(arch, model_cfg)
    with _local_dir(model_cfg, preprocess_cfg) as name, _quiet_open_clip():
        return open_clip.create_model(name, load_weights=False, pretrained_image=False, pretrained_text=False)


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """Drop open_clip's root-logger chatter about the throwaway local-dir ("no weights found", ...)."""
    def keep(record: logging.LogRecord) -> bool:
        return "open_clip" not in record.pathname or record.levelno >= logging.ERROR

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _make_tokenizer(arch: str, model_cfg: dict[str, Any], allow_download: bool):
    hf_name = model_cfg["text_cfg"].get("hf_tokenizer_name")
    if hf_name and not allow_download:
        raise WeightsNotLocalError(
            f"CLIP arch {arch!r} uses the Hugging Face tokenizer {hf_name!r}, which open_clip fetches from "
            "the hub: unclip does not download here (pass allow_download=True where a network or a "
            "populated Hugging Face cache is available)")
    if hf_name or "siglip" in arch.lower():
        return open_clip.get_tokenizer(arch)  # open_clip picks SigLIP / HF tokenizers by name
    with _local_dir(model_cfg, {}) as name:
        return open_clip.get_tokenizer(name)


def _text_ln_final(model: nn.Module) -> nn.Module:
    """The text tower's final LayerNorm: ``CLIP.ln_final`` or ``CustomTextCLIP.text.ln_final``."""
    for owner in (model, getattr(model, "text", None)):
        ln = getattr(owner, "ln_final", None)
        if isinstance(ln, nn.Module):
            return ln
    raise ValueError(f"{type(model).__name__} text tower has no ln_final; FrozenCLIP needs an open_clip "
                     "TextTransformer to capture per-token text features")


def _check_weights_arg(arch: str, weights: str | os.PathLike) -> Path:
    """Resolve ``weights`` to an existing local file, failing fast (no network) otherwise."""
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise IsADirectoryError(f"CLIP weights {str(path)!r} is a directory; pass a checkpoint file, "
                                "or use FrozenCLIP.load(dir) for a saved FrozenCLIP")
    text = str(weights)
    looks_like_path = os.sep in text or "/" in text or text.endswith(_WEIGHT_SUFFIXES)
    is_tag = bool(open_clip.pretrained.get_pretrained_cfg(arch, text))
    if text.startswith("hf-hub:") or is_tag or not looks_like_path:
        kind = "an open_clip pretrained tag" if is_tag else "not a local file"
        raise WeightsNotLocalError(
            f"CLIP weights {text!r} for arch {arch!r} is {kind}: unclip does not download weights here "
            "(no network). Download the checkpoint elsewhere (e.g. open_clip_pytorch_model.bin or "
            "open_clip_model.safetensors) and pass the local file path as weights=..., or pass "
            "allow_download=True to let open_clip fetch it on a machine with a network")
    raise FileNotFoundError(f"CLIP weights file not found: {path}")


def _is_frozenclip_safetensors(path: Path) -> bool:
    if path.suffix != ".safetensors":
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            return "has_stats" in f.keys()
    except SafetensorError as err:
        raise ValueError(f"CLIP weights {path} cannot be read (truncated or corrupt?): {err}") from None


class FrozenCLIP(nn.Module):
    """A frozen open_clip model with unCLIP's encoders and image-embedding statistics.

    Always in eval mode with ``requires_grad=False``; ``.train()`` does not unfreeze it. Encoders run
    under ``torch.no_grad()`` (not ``inference_mode``, so the outputs may feed a trained network),
    in batches of ``batch_size``, optionally under autocast with ``autocast_dtype`` (e.g. bf16), and
    always return float32 on the model's device.

    Build with :meth:`create` (arch + local weights file) or :meth:`load` (a saved directory); the
    constructor wraps an already-built open_clip model (e.g. one just trained here).
    """

    def __init__(self, model: nn.Module, arch: str, model_cfg: dict[str, Any] | None = None,
                 preprocess_cfg: dict[str, Any] | None = None, *, batch_size: int = 256,
                 autocast_dtype: torch.dtype | None = None, allow_download: bool = False,
                 unit_embeddings: bool = True):
        super().__init__()
        self.unit_embeddings = unit_embeddings  # False: z_t, z_i as CLIP projects them (Karlo's models read these)
        if model_cfg is None:
            arch, model_cfg = resolve_model_config(arch)
        _check_text_tower(arch, model_cfg)
        self.arch = arch
        self.model_cfg = _plain(copy.deepcopy(model_cfg))
        if preprocess_cfg is None:
            preprocess_cfg = open_clip.model.get_model_preprocess_cfg(model) or default_preprocess_cfg(model_cfg)
        self.preprocess_cfg = _plain(copy.deepcopy(dict(preprocess_cfg)))
        self.model = model
        self.tokenizer = _make_tokenizer(arch, self.model_cfg, allow_download)
        self.batch_size = batch_size
        self.autocast_dtype = autocast_dtype
        _text_ln_final(model)  # fail early for towers without per-token features
        self._pil_transform = open_clip.image_transform(
            self.preprocess_cfg["size"], is_train=False, mean=self.preprocess_cfg["mean"],
            std=self.preprocess_cfg["std"], resize_mode=self.preprocess_cfg.get("resize_mode"),
            interpolation=self.preprocess_cfg.get("interpolation"),
            fill_color=self.preprocess_cfg.get("fill_color", 0))
        d = self.embed_dim
        # Statistics of z_i over the training set; the prior standardises its targets with them.
        self.register_buffer("image_emb_mean", torch.zeros(d))
        self.register_buffer("image_emb_std", torch.ones(d))
        self.register_buffer("has_stats", torch.tensor(False))
        self.requires_grad_(False)
        self.train(False)

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(cls, arch: str | os.PathLike, weights: str | os.PathLike | None = None, *,
               allow_download: bool = False, preprocess_cfg: dict[str, Any] | None = None,
               device: str | torch.device = "cpu", autocast_dtype: torch.dtype | None = None,
               batch_size: int = 256) -> FrozenCLIP:
        """Build ``arch`` and load ``weights``, a local file: an open_clip checkpoint (``.pt``/``.bin``/
        ``.safetensors`` state dict, as open_clip writes or ``torch.save(model.state_dict())``) or a
        FrozenCLIP ``model.safetensors``. ``weights=None`` gives random weights (tests, or a CLIP
        about to be trained). Anything that is not an existing file fails at once, without touching the
        network, unless ``allow_download=True``, which hands a pretrained tag to open_clip.
        ``preprocess_cfg`` overrides open_clip's eval preprocessing (e.g. SigLIP's mean/std 0.5)."""
        name, model_cfg = resolve_model_config(arch)
        _check_text_tower(name, model_cfg)
        pp = default_preprocess_cfg(model_cfg)
        pp.update(_plain(preprocess_cfg or {}))
        path = None
        if weights is not None:
            try:
                path = _check_weights_arg(name, weights)
            except WeightsNotLocalError:
                if not allow_download:
                    raise
        if weights is not None and path is None:  # allow_download: open_clip resolves the tag
            model = open_clip.create_model(str(arch), pretrained=str(weights), pretrained_text=False)
            pp = _plain(open_clip.model.get_model_preprocess_cfg(model)) | _plain(preprocess_cfg or {})
            clip = cls(model, name, model_cfg, pp, batch_size=batch_size, autocast_dtype=autocast_dtype,
                       allow_download=True)
            return clip.to(device)
        model = build_open_clip(name, model_cfg, pp)
        clip = cls(model, name, model_cfg, pp, batch_size=batch_size, autocast_dtype=autocast_dtype,
                   allow_download=allow_download)
        if path is None:
            log.warning("FrozenCLIP %s has random weights (no weights file given)", name)
        elif _is_frozenclip_safetensors(path):
            _load_safetensors(clip, path)
        elif _is_torchscript(path):  # OpenAI's original checkpoints (ViT-L-14.pt, ...)
            _load_torchscript(clip, path, name, model_cfg)
        else:
            try:
                open_clip.load_checkpoint(clip.model, str(path), strict=True, weights_only=True)
            except (RuntimeError, AssertionError, KeyError, ValueError) as e:  # open_clip asserts on some
                raise RuntimeError(f"CLIP weights {path} do not match arch {name!r}: {e}") from e
        return clip.to(device)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``directory/config.yaml`` and ``directory/model.safetensors`` (weights + statistics)."""
        config = {"format": FORMAT, "arch": self.arch, "embed_dim": self.embed_dim,
                  "token_width": self.token_width, "context_length": self.context_length,
                  "has_stats": bool(self.has_stats), "unit_embeddings": self.unit_embeddings,
                  "model_cfg": self.model_cfg, "preprocess_cfg": self.preprocess_cfg}
        return write_release(directory, config, self, {"format": FORMAT, "arch": self.arch})

    @classmethod
    def load(cls, directory: str | os.PathLike, *, device: str | torch.device = "cpu",
             autocast_dtype: torch.dtype | None = None, batch_size: int = 256) -> FrozenCLIP:
        """Rebuild a FrozenCLIP written by :meth:`save`; needs no configs folder."""
        cfg, _, w_path = read_release_config(directory, "saved FrozenCLIP", FORMAT)
        model = build_open_clip(cfg["arch"], cfg["model_cfg"], cfg["preprocess_cfg"])
        clip = cls(model, cfg["arch"], cfg["model_cfg"], cfg["preprocess_cfg"], batch_size=batch_size,
                   autocast_dtype=autocast_dtype, unit_embeddings=bool(cfg.get("unit_embeddings", True)))
        _load_safetensors(clip, w_path)
        return clip.to(device)

    def train(self, mode: bool = True) -> FrozenCLIP:
        """Frozen: a parent module's ``.train()`` leaves CLIP in eval mode."""
        return super().train(False)

    # ------------------------------------------------------------------ properties

    @property
    def embed_dim(self) -> int:
        return int(self.model_cfg["embed_dim"])

    @property
    def token_width(self) -> int:
        return int(_text_ln_final(self.model).normalized_shape[0])

    @property
    def context_length(self) -> int:
        return int(self.model.context_length)

    @property
    def image_size(self) -> int | tuple[int, int]:
        size = self.preprocess_cfg["size"]
        if isinstance(size, (list, tuple)):
            return int(size[0]) if size[0] == size[1] else (int(size[0]), int(size[1]))
        return int(size)

    @property
    def input_side(self) -> int:
        """The side of the square images a data reader should give this CLIP (the larger input side)."""
        size = self.image_size
        return size if isinstance(size, int) else max(size)

    @property
    def device(self) -> torch.device:
        return self.image_emb_mean.device

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    # ------------------------------------------------------------------ encoders

    def tokenize(self, captions: Sequence[str]) -> torch.Tensor:
        """Token ids [B, context_length]; captions longer than the context are truncated (EOT kept)."""
        return self.tokenizer(list(captions), context_length=self.context_length)

    @torch.no_grad()
    def encode_text(self, captions: Sequence[str], batch_size: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode captions with CLIP's text tower.

        Captions longer than ``context_length`` tokens are truncated by the model's tokenizer (the
        last kept position becomes EOT). Returns, float32 on the model's device:
        ``emb`` [B, D] pooled embedding z_t (L2-normalised unless ``unit_embeddings=False``);
        ``tokens`` [B, L, W] final-layer per-token features (after ln_final, before the projection);
        ``mask`` [B, L] bool, True for real tokens including SOT and EOT.
        """
        if isinstance(captions, str):
            raise TypeError("encode_text expects a list of captions, got one str")
        captions = list(captions)
        if not captions:
            L, W = self.context_length, self.token_width
            return (torch.empty(0, self.embed_dim, device=self.device),
                    torch.empty(0, L, W, device=self.device), torch.empty(0, L, dtype=torch.bool, device=self.device))
        bs = batch_size or self.batch_size
        pad_id = getattr(self.tokenizer, "pad_token_id", None) or 0
        embs, toks, masks = [], [], []
        for i in range(0, len(captions), bs):
            ids = to_device(self.tokenize(captions[i:i + bs]), self.device)
            captured: list[torch.Tensor] = []
            handle = _text_ln_final(self.model).register_forward_hook(
                lambda _m, _i, out, captured=captured: captured.append(out))
            try:
                with self._autocast():
                    emb = self.model.encode_text(ids)
            finally:
                handle.remove()
            tokens = captured[-1]
            if tokens.ndim != 3:  # e.g. CoCa applies ln_final after pooling
                raise ValueError(f"CLIP arch {self.arch!r}: text ln_final output has shape {tuple(tokens.shape)}, "
                                 "expected per-token features [B, L, W]")
            embs.append(F.normalize(emb.float(), dim=-1) if self.unit_embeddings else emb.float())
            toks.append(tokens[:, :ids.shape[1]].float())
            masks.append(ids != pad_id)
        return torch.cat(embs), torch.cat(toks), torch.cat(masks)

    @torch.no_grad()
    def encode_image(self, images: Sequence[Image.Image] | Image.Image | torch.Tensor,
                     value_range: tuple[float, float] = (0.0, 1.0), batch_size: int | None = None
                     ) -> torch.Tensor:
        """Image embeddings z_i [B, D] (L2-normalised unless ``unit_embeddings=False``), float32 on the model's device.

        ``images`` is a list of PIL images (the model's own eval preprocessing is applied) or a float
        tensor [B, 3, H, W] with pixel values in ``value_range`` ((0, 1) by default; the diffusion
        models use (-1, 1)). Tensors are resized with bicubic antialiased interpolation the way the
        eval transform resizes (shortest side + centre crop by default) and normalised with the
        model's mean/std.
        """
        bs = batch_size or self.batch_size
        if isinstance(images, Image.Image):
            images = [images]
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
                raise ValueError(f"encode_image expects a float tensor [B, 3, H, W], got "
                                 f"{images.dtype} {tuple(images.shape)}")
            chunks = (self.preprocess_tensor(images[i:i + bs], value_range) for i in range(0, len(images), bs))
        else:
            images = list(images)
            chunks = (torch.stack([self._pil_transform(im) for im in images[i:i + bs]])
                      for i in range(0, len(images), bs))
        out = []
        for x in chunks:
            with self._autocast():
                z = self.model.encode_image(x.to(self.device)).float()
                out.append(F.normalize(z, dim=-1) if self.unit_embeddings else z)
        if not out:
            return torch.empty(0, self.embed_dim, device=self.device)
        return torch.cat(out)

    def preprocess_tensor(self, images: torch.Tensor, value_range: tuple[float, float] = (0.0, 1.0)
                          ) -> torch.Tensor:
        """Float images in ``value_range`` -> the model's normalised input [B, 3, S, S]."""
        lo, hi = value_range
        x = (images.to(self.device, torch.float32) - lo) / (hi - lo)  # -> [0, 1]
        size = self.preprocess_cfg["size"]
        th, tw = (size, size) if isinstance(size, int) else tuple(size)
        h, w = x.shape[-2:]
        mode = self.preprocess_cfg.get("resize_mode") or "shortest"
        interp = "bilinear" if self.preprocess_cfg.get("interpolation") == "bilinear" else "bicubic"
        if (h, w) != (th, tw):
            if mode == "squash":
                x = F.interpolate(x, size=(th, tw), mode=interp, antialias=True, align_corners=False)
            else:
                scale = (max if mode == "shortest" else min)(th / h, tw / w)
                nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
                x = F.interpolate(x, size=(nh, nw), mode=interp, antialias=True, align_corners=False)
                x = _center_crop_or_pad(x, th, tw, self.preprocess_cfg.get("fill_color", 0) / 255.0)
            x = x.clamp(0.0, 1.0)
        mean = to_device(torch.tensor(self.preprocess_cfg["mean"]), x.device).view(1, -1, 1, 1)
        std = to_device(torch.tensor(self.preprocess_cfg["std"]), x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    # ------------------------------------------------------------------ embedding statistics

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the per-dimension mean/std of z_i (saved with the weights)."""
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        d = self.embed_dim
        if mean.shape != (d,) or std.shape != (d,):
            raise ValueError(f"stats must have shape [{d}], got mean {tuple(mean.shape)}, std {tuple(std.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError("stats must be finite with std > 0")
        self.image_emb_mean.copy_(mean)
        self.image_emb_std.copy_(std)
        self.has_stats.fill_(True)

    def compute_stats(self, image_emb: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean/std of image embeddings [N, D] (float64 accumulation); stores and returns them."""
        image_emb = torch.as_tensor(image_emb)
        if image_emb.ndim != 2 or image_emb.shape[1] != self.embed_dim or image_emb.shape[0] < 2:
            raise ValueError(f"compute_stats expects image embeddings [N>=2, {self.embed_dim}], "
                             f"got {tuple(image_emb.shape)}")
        moments = Moments()
        moments.add(image_emb.detach().to("cpu", torch.float64).numpy())
        mean, std = (torch.from_numpy(a) for a in moments.mean_std("image_emb"))
        self.set_stats(mean.float(), std.clamp_min(eps).float())
        return self.image_emb_mean.clone(), self.image_emb_std.clone()

    def normalize_image_emb(self, emb: torch.Tensor) -> torch.Tensor:
        """(z_i - mean) / std; requires stats."""
        self._require_stats()
        return (emb - self.image_emb_mean.to(emb)) / self.image_emb_std.to(emb)

    def denormalize_image_emb(self, emb: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize_image_emb`."""
        self._require_stats()
        return emb * self.image_emb_std.to(emb) + self.image_emb_mean.to(emb)

    def _require_stats(self) -> None:
        if not bool(self.has_stats):
            raise RuntimeError(f"FrozenCLIP {self.arch!r} has no embedding statistics; call compute_stats first")

    def extra_repr(self) -> str:
        return (f"arch={self.arch!r}, embed_dim={self.embed_dim}, token_width={self.token_width}, "
                f"context_length={self.context_length}, image_size={self.image_size}, "
                f"has_stats={bool(self.has_stats)}")


def _center_crop_or_pad(x: torch.Tensor, th: int, tw: int, fill: float) -> torch.Tensor:
    """Centre crop (or pad with ``fill``) [B, C, H, W] to [B, C, th, tw], as torchvision rounds."""
    h, w = x.shape[-2:]
    if h < th or w < tw:
        ph, pw = max(th - h, 0), max(tw - w, 0)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=fill)
        h, w = x.shape[-2:]
    top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return x[..., top:top + th, left:left + tw]


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive (a zip holding ``*/constants.pkl``), as OpenAI released CLIP."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") for n in z.namelist())


def _quickgelu_name(arch: str, quick: bool) -> str:
    """The open_clip arch with the other activation, when open_clip has it (``X`` <-> ``X-quickgelu``)."""
    other = f"{arch}-quickgelu" if quick else arch.removesuffix("-quickgelu")
    return other if other != arch and open_clip.get_model_config(other) is not None else ""


def _load_torchscript(clip: FrozenCLIP, path: Path, arch: str, model_cfg: dict[str, Any]) -> None:
    """Load an OpenAI TorchScript checkpoint into ``clip.model`` (open_clip's own loader does the same for its
    'openai' tag). Its modules keep their class names, so a QuickGELU / GELU mismatch with ``arch`` (same
    weights, wrong outputs) is caught here and named."""
    script = torch.jit.load(str(path), map_location="cpu")
    quick = any(getattr(m, "original_name", "") == "QuickGELU" for m in script.modules())
    if quick != bool(model_cfg.get("quick_gelu", False)):
        other = _quickgelu_name(arch, quick)
        use = f"use arch {other!r}" if other else f"set quick_gelu: {str(quick).lower()} in its model config"
        raise ValueError(f"CLIP weights {path} were trained with {'QuickGELU' if quick else 'GELU'} but arch "
                         f"{arch!r} uses {'GELU' if quick else 'QuickGELU'}: {use} (the weights would load and "
                         "give wrong embeddings)")
    buffers = {name for name, _ in clip.model.named_buffers()}  # e.g. attn_mask, rebuilt by the model itself
    own = clip.model.state_dict()
    state = {k: v for k, v in script.state_dict().items()
             if k not in ("input_resolution", "context_length", "vocab_size") and (k in own or k not in buffers)}
    try:
        clip.model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise RuntimeError(f"CLIP weights {path} do not match arch {arch!r}: {e}") from e


def _load_safetensors(clip: FrozenCLIP, path: Path) -> None:
    try:
        load_model(clip, str(path), strict=True, device=str(clip.device))
    except SafetensorError as e:
        raise ValueError(f"{path} cannot be read (truncated or corrupt?): {e}") from None
    except RuntimeError as e:
        raise RuntimeError(f"{path} does not match FrozenCLIP arch {clip.arch!r}: {e}") from e
