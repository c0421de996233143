"""unclip: unCLIP (DALL·E 2) — hierarchical text-conditional image generation with CLIP latents."""

__version__ = "0.1.0"
