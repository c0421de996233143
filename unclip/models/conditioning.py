"""Small conditioning modules shared by the unCLIP networks: CFG drop masks, learned null values,
the CLIP-embedding normaliser of the prior (Ramesh et al. 2022, §2.2) and token-mask helpers."""
from __future__ import annotations

import torch
from torch import nn


def sample_drop_mask(batch: int, p: float, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """Bool [B]: True where the conditioning is replaced by its null value (classifier-free guidance
    training, Ho & Salimans 2021). unCLIP: prior text 10%, decoder z_i 10% and caption 50% (§2.1, §2.2)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability p={p!r}: expected a value in [0, 1]")
    u = torch.rand(batch, generator=generator, device=generator.device if generator is not None else None)
    return (u < p).to(device or u.device)


def check_drop(drop: torch.Tensor | None, batch: int, name: str, device: torch.device) -> torch.Tensor:
    """A [B] bool drop mask (None -> nothing dropped)."""
    if drop is None:
        return torch.zeros(batch, dtype=torch.bool, device=device)
    if drop.shape != (batch,):
        raise ValueError(f"{name}: expected a bool mask of shape [{batch}] (True = use the null value), "
                         f"got {tuple(drop.shape)}")
    return drop.to(device=device, dtype=torch.bool)


def replace_where(drop: torch.Tensor, value: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
    """Rows of ``value`` [B, ...] where ``drop`` [B] is True become ``null`` (broadcast over the batch).

    ``torch.where`` (not a blend) so a dropped row carries no trace of its input, not even NaNs."""
    d = drop.reshape(-1, *([1] * (value.ndim - 1)))  # [B, 1, ...]
    return torch.where(d, null.to(value.dtype).expand_as(value), value)  # [B, ...]


def last_true_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last True per row of a [B, L] bool mask (the EOT position for end-padded text) -> [B]."""
    positions = torch.arange(mask.shape[1], device=mask.device)  # [L]
    return torch.where(mask, positions, -1).amax(dim=1).clamp_min(0)  # [B]


class EmbeddingNormalizer(nn.Module):
    """Per-dimension affine normalisation of CLIP image embeddings before diffusion (§2.2).

    ``normalize(z) = (z − mean) / std`` and its inverse. The paper scales ViT-H/14 embeddings by a
    fixed 17.2 (unit-norm z_i then has roughly unit per-dimension variance): ``fixed(dim, 17.2)``
    gives mean 0, std 1/17.2. ``set_stats`` (e.g. from ``FrozenCLIP.compute_stats``) standardises
    with dataset statistics instead. The buffers are saved with the model's weights.
    """

    def __init__(self, dim: int, scale: float = 1.0):
        super().__init__()
        if scale <= 0:
            raise ValueError(f"EmbeddingNormalizer: scale={scale!r} must be positive")
        self.dim = dim
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.full((dim,), 1.0 / scale))

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise with dataset statistics: mean, std [D] (std > 0)."""
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != (self.dim,) or std.shape != (self.dim,) or not bool((std > 0).all()):
            raise ValueError(f"EmbeddingNormalizer.set_stats: expected mean, std of shape [{self.dim}] with std > 0, "
                             f"got {tuple(mean.shape)}, {tuple(std.shape)}")
        self.mean.copy_(mean)
        self.std.copy_(std)

    def use_clip_stats(self, clip) -> None:
        """Standardise with a ``FrozenCLIP``'s stored z_i statistics (``compute_stats`` / ``set_stats``)."""
        if not bool(getattr(clip, "has_stats", False)):
            raise ValueError("EmbeddingNormalizer.use_clip_stats: the CLIP wrapper has no z_i statistics; "
                             "call clip.compute_stats(image_embeddings) first")
        self.set_stats(clip.image_emb_mean.detach().cpu(), clip.image_emb_std.detach().cpu())

    def set_scale(self, scale: float) -> None:
        """Fixed scaling: mean 0, std 1/scale (paper: 17.2 for ViT-H/14)."""
        self.mean.zero_()
        self.std.fill_(1.0 / scale)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.mean.to(z)) / self.std.to(z)  # [B, D]

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std.to(z) + self.mean.to(z)  # [B, D]

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def empty_caption(clip) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A FrozenCLIP's encoding of "": token features [L, W], mask [L], z_t [D] (for ``EmptyCaption.set``)."""
    emb, tokens, mask = clip.encode_text([""])
    return tokens[0], mask[0], emb[0]


class EmptyCaption(nn.Module):
    """The CLIP encoding of the empty caption "" as a classifier-free-guidance null (Karlo's choice, where
    the unconditional branch is the model run on ""): its token features [L, W], padding mask [L] and
    text embedding z_t [D] are buffers, saved with the weights; ``set`` fills them from a CLIP's output."""

    def __init__(self, context_length: int, token_width: int, embed_dim: int):
        super().__init__()
        self.register_buffer("tokens", torch.zeros(context_length, token_width))
        self.register_buffer("mask", torch.zeros(context_length, dtype=torch.bool))
        self.register_buffer("emb", torch.zeros(embed_dim))
        self.is_set = False  # a host-side flag, so that forward passes never read the mask back from the device

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.is_set = bool(self.mask.any())

    def set(self, tokens: torch.Tensor, mask: torch.Tensor, emb: torch.Tensor) -> None:
        """tokens [L', W], mask [L'] (True = real token; L' <= L, the rest padding), emb [D]."""
        length = tokens.shape[0]
        if tokens.shape[1:] != self.tokens.shape[1:] or mask.shape != (length,) or emb.shape != self.emb.shape \
                or length > self.tokens.shape[0] or not bool(mask.any()):
            raise ValueError(f"EmptyCaption.set: expected tokens [<={self.tokens.shape[0]}, {self.tokens.shape[1]}], "
                             f"mask [L] with a real token, emb [{self.emb.shape[0]}]; got {tuple(tokens.shape)}, "
                             f"{tuple(mask.shape)}, {tuple(emb.shape)}")
        self.tokens.zero_()
        self.mask.zero_()
        self.tokens[:length] = tokens.to(self.tokens)
        self.mask[:length] = mask.bool()
        self.emb.copy_(emb.to(self.emb))
        self.is_set = True

    def replace(self, b: int, drop: torch.Tensor, tokens: torch.Tensor | None, mask: torch.Tensor | None,
                emb: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The inputs with dropped rows (``drop`` [B]) — or all rows when ``tokens`` is None — replaced by ""."""
        if not self.is_set:
            raise ValueError("EmptyCaption: the empty caption's encoding was never set (null_caption.set(...) with "
                             "the CLIP's encoding of \"\", as the Karlo converter does)")
        if tokens is None:
            if mask is not None or emb is not None:
                raise ValueError("text_mask / text_emb given without text_tokens")
            return (self.tokens.expand(b, -1, -1), self.mask.expand(b, -1), self.emb.expand(b, -1))
        length = tokens.shape[1]
        if mask is None:
            mask = torch.ones(b, length, dtype=torch.bool, device=tokens.device)
        if emb is None:  # a model that does not read z_t
            emb = self.emb.expand(b, -1)
        return (replace_where(drop, tokens, self.tokens[:length]), replace_where(drop, mask.bool(), self.mask[:length]),
                replace_where(drop, emb, self.emb))
