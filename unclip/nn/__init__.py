"""Neural-network blocks shared by the prior, the decoder and the upsamplers."""
from .attention import ImageAttentionBlock, SelfAttention, resolve_heads, token_attention_mask
from .checkpointing import checkpoint
from .embeddings import TimestepEmbedding, timestep_embedding
from .kernels import kernel_policy
from .layers import GroupNorm32, group_norm, zero_module
from .params import count_parameters
from .resample import Downsample, Upsample
from .resblock import ResBlock
from .transformer import Transformer, TransformerBlock
from .unet import EmbedSequential, UNet, attention_downsample_factors

__all__ = [
    "Downsample", "EmbedSequential", "GroupNorm32", "ImageAttentionBlock", "ResBlock", "SelfAttention",
    "TimestepEmbedding", "Transformer", "TransformerBlock", "UNet", "Upsample", "attention_downsample_factors",
    "checkpoint", "count_parameters", "group_norm", "kernel_policy", "resolve_heads", "timestep_embedding",
    "token_attention_mask", "zero_module",
]
