"""ADM UNet backbone (Dhariwal & Nichol 2021) shared by the 64-px decoder and both upsamplers.

The network predicts whatever its wrapper asks for (ε, x0, v, plus variance channels); it knows
nothing of CLIP or text. Conditioning enters by composition:
  * ``emb_cond`` [B, 4·model_channels] is added to the timestep embedding (decoder: projected z_i);
  * ``context`` [B, S, context_dim] tokens (+ ``context_mask``) are appended to the keys/values of
    every attention block (decoder: caption tokens and the 4 z_i tokens, GLIDE's encoder_kv);
  * extra input channels (upsamplers' low-res image, inpainting mask) are the caller's concatenation.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .attention import ImageAttentionBlock
from .embeddings import TimestepEmbedding
from .layers import group_norm, zero_module
from .resample import Downsample, Upsample
from .resblock import ResBlock


def attention_downsample_factors(image_size: int, resolutions: Sequence[int]) -> tuple[int, ...]:
    """Turn attention *resolutions* at a training size into the UNet's downsample factors.

    unCLIP's decoder attends "at 32, 16 and 8" for 64-px input, i.e. factors (2, 4, 8).
    """
    factors = []
    for r in resolutions:
        if r < 1 or image_size % r or (image_size // r) & (image_size // r - 1):
            raise ValueError(f"attention resolution {r} is not image_size={image_size} / a power of 2")
        factors.append(image_size // r)
    return tuple(factors)


def _coordinates(x: torch.Tensor) -> torch.Tensor:
    """[B, 2, H, W]: pixel-centre x (channel 0) and y (channel 1) in [−1, 1], in x's dtype."""
    b, _, h, w = x.shape
    ys = (torch.arange(h, device=x.device, dtype=torch.float32) + 0.5) / h * 2 - 1  # [H]
    xs = (torch.arange(w, device=x.device, dtype=torch.float32) + 0.5) / w * 2 - 1  # [W]
    grid = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)])  # [2, H, W]
    return grid.to(x.dtype)[None].expand(b, -1, -1, -1)


class EmbedSequential(nn.ModuleList):
    """Layers of one UNet stage: ResBlocks get the embedding, attention blocks the context tokens."""

    def forward(
        self,
        h: torch.Tensor,
        emb: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)  # [B, C', H', W']
            elif isinstance(layer, ImageAttentionBlock):
                h = layer(h, context, context_mask)  # [B, C, H, W]
            else:
                h = layer(h)  # [B, C', H', W']
        return h


class UNet(nn.Module):
    """Configurable ADM UNet: ``len(channel_mult)`` levels, ``num_res_blocks`` ResBlocks per level.

    Args:
        in_channels / out_channels: image channels in and out (out = 6 for learned σ on RGB).
        model_channels: base width; level ``i`` has ``model_channels * channel_mult[i]`` channels,
            the embedding width is ``4 * model_channels``.
        attention_resolutions: **downsample factors** (1 = full input size, 2 = half, …) at which a
            self-attention block follows each ResBlock; the UNet is fully convolutional, so factors,
            not pixel sizes, are what it can know. Use ``attention_downsample_factors`` to convert
            from resolutions (decoder: 32, 16, 8 at 64 px -> (2, 4, 8)).
        attention: False builds a convolutions-only net (the upsamplers): no middle attention and
            ``attention_resolutions`` must then be empty.
        num_heads / num_head_channels: heads per attention block; ``num_head_channels`` (unCLIP: 64)
            takes precedence and gives ``channels // num_head_channels`` heads.
        context_dim: width of the conditioning tokens appended to attention keys/values (None: none).
        resblock_updown: resample with BigGAN ResBlocks instead of Upsample/Downsample layers.
        conv_resample: give the plain Upsample/Downsample layers a 3×3 conv.
        norm_groups: GroupNorm groups (32 in ADM); must divide every level's width.
        use_checkpoint: activation checkpointing in every ResBlock and attention block.
        patch_size: space-to-depth stem (``pixel_unshuffle``) by this factor before the first conv and
            depth-to-space after the last, so the first level runs at H/p × W/p with p² × the input
            channels (the cheap high-resolution stem of Hoogeboom et al. 2023, "simple diffusion").
            Downsample factors above then count from H/p. 1 = none (ADM).
        coord_channels: append two input channels holding each pixel's x and y in [−1, 1] (CoordConv,
            Liu et al. 2018). Convolutions are translation-equivariant and attention here has no position
            encoding, so without them a net can place content from a global condition ("top left" in
            z_i or the caption) only through zero-padding effects; with them it knows where it draws.
            Still fully convolutional: the coordinates span the input at any size.

    Input H and W must be divisible by ``patch_size * 2 ** (len(channel_mult) - 1)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        model_channels: int,
        channel_mult: Sequence[int] = (1, 2, 4, 8),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (),
        *,
        attention: bool = True,
        num_heads: int = 1,
        num_head_channels: int | None = None,
        context_dim: int | None = None,
        dropout: float = 0.0,
        conv_resample: bool = True,
        resblock_updown: bool = False,
        use_scale_shift_norm: bool = True,
        norm_groups: int = 32,
        use_checkpoint: bool = False,
        patch_size: int = 1,
        coord_channels: bool = False,
    ):
        super().__init__()
        if patch_size < 1:
            raise ValueError(f"UNet: patch_size must be >= 1, got {patch_size}")
        channel_mult = tuple(channel_mult)
        attention_resolutions = tuple(attention_resolutions)
        levels = len(channel_mult)
        valid_ds = {2**i for i in range(levels)}
        if not attention and attention_resolutions:
            raise ValueError(f"UNet: attention=False but attention_resolutions={attention_resolutions}")
        if not attention and context_dim is not None:
            raise ValueError("UNet: context_dim needs attention blocks (attention=True)")
        if bad := [d for d in attention_resolutions if d not in valid_ds]:
            raise ValueError(
                f"UNet: attention_resolutions {bad} are not downsample factors of this {levels}-level net "
                f"(valid: {sorted(valid_ds)}); convert pixel resolutions with attention_downsample_factors"
            )
        if num_res_blocks < 1 or levels < 1:
            raise ValueError(
                f"UNet: need num_res_blocks >= 1 and channel_mult non-empty, got {num_res_blocks}, {channel_mult}"
            )

        self.in_channels, self.out_channels = in_channels, out_channels
        self.model_channels = model_channels
        self.emb_dim = 4 * model_channels
        self.context_dim = context_dim
        self.patch_size = patch_size
        self.coord_channels = coord_channels
        self.downsample_factor = 2 ** (levels - 1) * patch_size

        def res(cin: int, cout: int, **kw) -> ResBlock:
            return ResBlock(
                cin, self.emb_dim, cout, dropout=dropout, use_scale_shift_norm=use_scale_shift_norm,
                norm_groups=norm_groups, use_checkpoint=use_checkpoint, **kw,
            )

        def attn(ch: int) -> ImageAttentionBlock:
            return ImageAttentionBlock(
                ch, num_heads=num_heads, head_channels=num_head_channels, context_dim=context_dim,
                norm_groups=norm_groups, use_checkpoint=use_checkpoint,
            )

        self.time_embed = TimestepEmbedding(model_channels, self.emb_dim)

        ch = model_channels * channel_mult[0]
        stem_channels = (in_channels + 2 * coord_channels) * patch_size**2
        self.input_blocks = nn.ModuleList([EmbedSequential([nn.Conv2d(stem_channels, ch, 3, padding=1)])])
        skip_chans, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res(ch, model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers.append(attn(ch))
                self.input_blocks.append(EmbedSequential(layers))
                skip_chans.append(ch)
            if level != levels - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
                self.input_blocks.append(EmbedSequential([down]))
                skip_chans.append(ch)
                ds *= 2

        middle: list[nn.Module] = [res(ch, ch)] + ([attn(ch)] if attention else []) + [res(ch, ch)]
        self.middle_block = EmbedSequential(middle)

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers.append(attn(ch))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(layers))

        self.out = nn.Sequential(
            group_norm(ch, norm_groups),
            nn.SiLU(),
            zero_module(nn.Conv2d(ch, out_channels * patch_size**2, 3, padding=1)),
        )

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        emb_cond: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, in_channels, H, W], t [B] -> [B, out_channels, H, W]."""
        self._check_inputs(x, t, emb_cond)
        emb = self.time_embed(t)  # [B, 4·model_channels]
        if emb_cond is not None:
            emb = emb + emb_cond  # [B, 4·model_channels]
        if self.coord_channels:
            x = torch.cat([x, _coordinates(x)], dim=1)  # [B, in_channels + 2, H, W]
        h, skips = (nn.functional.pixel_unshuffle(x, self.patch_size) if self.patch_size > 1 else x), []
        # NHWC activations: oneDNN convolutions are faster on them (bench/decoder_speed.py, 2-core Xeon: fp32
        # train step 1.08 -> 0.85 s, 25-step sampling 4.40 -> 3.67 s; bf16 equal or better); outputs are NCHW again
        h = h.contiguous(memory_format=torch.channels_last)
        for block in self.input_blocks:
            h = block(h, emb, context, context_mask)  # [B, C_level, H/ds, W/ds]
            skips.append(h)
        h = self.middle_block(h, emb, context, context_mask)  # [B, C_last, H/ds_max, W/ds_max]
        for block in self.output_blocks:
            h = torch.cat([h, skips.pop()], dim=1)  # [B, C + C_skip, H/ds, W/ds]
            h = block(h, emb, context, context_mask)  # [B, C_level, H/ds', W/ds']
        out = self.out(h)  # [B, out_channels·p², H/p, W/p]
        if self.patch_size > 1:
            out = nn.functional.pixel_shuffle(out, self.patch_size)  # [B, out_channels, H, W]
        return out.contiguous()

    def _check_inputs(self, x: torch.Tensor, t: torch.Tensor, emb_cond: torch.Tensor | None) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet: x must be [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        f = self.downsample_factor
        if x.shape[2] % f or x.shape[3] % f:
            raise ValueError(f"UNet: H and W must be divisible by {f}, got {x.shape[2]}x{x.shape[3]}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"UNet: t must be [B={x.shape[0]}], got {tuple(t.shape)}")
        if emb_cond is not None and emb_cond.shape != (x.shape[0], self.emb_dim):
            raise ValueError(f"UNet: emb_cond must be [B={x.shape[0]}, {self.emb_dim}], got {tuple(emb_cond.shape)}")
