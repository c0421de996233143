"""diffusers UNets (UNet2DConditionModel with ResnetDownsampleBlock2D / SimpleCrossAttn*Block2D blocks, as in
Karlo's decoder; UNet2DModel with Resnet*Block2D blocks, as in its super-resolution) -> our ADM ``UNet``.

The two are the same network: BigGAN ResBlocks with AdaGN ("scale_shift") and ResBlock up/downsampling,
attention whose keys and values are the image's plus projected context tokens (GLIDE's encoder_kv; diffusers'
added-KV attention), sinusoidal [cos | sin] time embedding. The mapping walks both in the same order; it
refuses configs that would change the computation rather than guess."""
from __future__ import annotations

from typing import Any

from .components import ConversionError, StateMap, require

DOWN_ATTN, DOWN_PLAIN = "SimpleCrossAttnDownBlock2D", "ResnetDownsampleBlock2D"
UP_ATTN, UP_PLAIN = "SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"


def unet_fields(config: dict[str, Any], source: str, *, cross_attention: bool) -> dict[str, Any]:
    """Our UNet's shape (model_channels, channel_mult, num_res_blocks, attention levels, heads, groups) from a
    diffusers config, or ConversionError naming the first field we cannot express."""
    require(config, source, act_fn="silu", resnet_time_scale_shift="scale_shift", flip_sin_to_cos=True, freq_shift=0,
            norm_eps=1e-5, center_input_sample=False, time_embedding_type="positional", time_embedding_dim=None,
            conv_in_kernel=3, conv_out_kernel=3, resnet_skip_time_act=False, resnet_out_scale_factor=(1.0, 1),
            mid_block_scale_factor=(1, 1.0), dropout=(0.0, 0))
    widths = list(config["block_out_channels"])
    base = widths[0]
    if any(w % base for w in widths):
        raise ConversionError(f"{source}: block_out_channels={widths} are not multiples of the first")
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        raise ConversionError(f"{source}: layers_per_block={layers!r}: one count for every block is supported")
    down, up = list(config["down_block_types"]), list(config["up_block_types"])
    if cross_attention:
        require(config, source, mid_block_type="UNetMidBlock2DSimpleCrossAttn", only_cross_attention=False,
                cross_attention_norm=None, encoder_hid_dim=None, addition_embed_type=None, class_embed_type="identity",
                dual_cross_attention=False)
        allowed_down, allowed_up = (DOWN_PLAIN, DOWN_ATTN), (UP_PLAIN, UP_ATTN)
    else:
        require(config, source, add_attention=False, class_embed_type=None)
        allowed_down, allowed_up = (DOWN_PLAIN,), (UP_PLAIN,)
    if any(t not in allowed_down for t in down) or any(t not in allowed_up for t in up):
        raise ConversionError(f"{source}: block types {down} / {up} are not supported (expected {allowed_down} down, "
                              f"{allowed_up} up)")
    attn_levels = [i for i, t in enumerate(down) if t == DOWN_ATTN]
    if attn_levels != [len(up) - 1 - i for i, t in enumerate(up) if t == UP_ATTN][::-1]:
        raise ConversionError(f"{source}: attention in down blocks {down} does not mirror up blocks {up}")
    head = config.get("attention_head_dim") or 8
    if not isinstance(head, int):
        raise ConversionError(f"{source}: attention_head_dim={head!r}: one head width for every block is supported")
    return {"model_channels": base, "channel_mult": tuple(w // base for w in widths), "num_res_blocks": layers,
            "attention_levels": tuple(attn_levels), "num_head_channels": head,
            "norm_groups": config.get("norm_num_groups", 32)}


def _resblock(m: StateMap, dst: str, src: str) -> None:
    m.copy(f"{dst}.in_norm", f"{src}.norm1")
    m.copy(f"{dst}.in_conv", f"{src}.conv1")
    m.copy(f"{dst}.emb_proj.1", f"{src}.time_emb_proj")
    m.copy(f"{dst}.out_norm", f"{src}.norm2")
    m.copy(f"{dst}.out_rest.2", f"{src}.conv2")
    if m.has(f"{src}.conv_shortcut.weight"):
        m.copy(f"{dst}.skip", f"{src}.conv_shortcut")


def _attention(m: StateMap, dst: str, src: str) -> None:
    m.copy(f"{dst}.norm", f"{src}.group_norm")
    m.concat(f"{dst}.to_qkv", [f"{src}.to_q", f"{src}.to_k", f"{src}.to_v"])
    m.concat(f"{dst}.to_context_kv", [f"{src}.add_k_proj", f"{src}.add_v_proj"])
    m.copy(f"{dst}.proj_out", f"{src}.to_out.0")


def map_unet(m: StateMap, fields: dict[str, Any], prefix: str, src: str = "") -> None:
    """Add our ``prefix``-ed UNet keys to ``m.out`` from the diffusers UNet keys under ``src``."""
    levels, blocks, attn = len(fields["channel_mult"]), fields["num_res_blocks"], set(fields["attention_levels"])
    m.copy(f"{prefix}input_blocks.0.0", f"{src}conv_in")
    m.copy(f"{prefix}time_embed.mlp.0", f"{src}time_embedding.linear_1")
    m.copy(f"{prefix}time_embed.mlp.2", f"{src}time_embedding.linear_2")
    k = 1
    for level in range(levels):
        for j in range(blocks):
            _resblock(m, f"{prefix}input_blocks.{k}.0", f"{src}down_blocks.{level}.resnets.{j}")
            if level in attn:
                _attention(m, f"{prefix}input_blocks.{k}.1", f"{src}down_blocks.{level}.attentions.{j}")
            k += 1
        if level < levels - 1:
            _resblock(m, f"{prefix}input_blocks.{k}.0", f"{src}down_blocks.{level}.downsamplers.0")
            k += 1
    _resblock(m, f"{prefix}middle_block.0", f"{src}mid_block.resnets.0")
    if attn:
        _attention(m, f"{prefix}middle_block.1", f"{src}mid_block.attentions.0")
    _resblock(m, f"{prefix}middle_block.{2 if attn else 1}", f"{src}mid_block.resnets.1")
    k = 0
    for i, level in enumerate(reversed(range(levels))):
        for j in range(blocks + 1):
            _resblock(m, f"{prefix}output_blocks.{k}.0", f"{src}up_blocks.{i}.resnets.{j}")
            idx = 1
            if level in attn:
                _attention(m, f"{prefix}output_blocks.{k}.1", f"{src}up_blocks.{i}.attentions.{j}")
                idx = 2
            if level and j == blocks:
                _resblock(m, f"{prefix}output_blocks.{k}.{idx}", f"{src}up_blocks.{i}.upsamplers.0")
            k += 1
    m.copy(f"{prefix}out.0", f"{src}conv_norm_out")
    m.copy(f"{prefix}out.2", f"{src}conv_out")
