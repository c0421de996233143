"""Top-1 retrieval accuracy of paired image/text embeddings."""
from __future__ import annotations

import torch


def retrieval_top1(image_emb: torch.Tensor, text_emb: torch.Tensor) -> dict[str, float]:
    """Top-1 retrieval accuracy for paired rows of L2-normalised embeddings [N, D].

    ``image_to_text``: fraction of images whose most similar caption is their own;
    ``text_to_image`` likewise; ``chance`` = 1/N for reference.
    """
    if image_emb.shape != text_emb.shape or image_emb.ndim != 2:
        raise ValueError(
            f"retrieval_top1 expects two [N, D] tensors of the same shape, got {tuple(image_emb.shape)} "
            f"and {tuple(text_emb.shape)}"
        )
    sim = image_emb.float() @ text_emb.float().T
    target = torch.arange(sim.shape[0], device=sim.device)
    return {
        "image_to_text": (sim.argmax(dim=1) == target).float().mean().item(),
        "text_to_image": (sim.argmax(dim=0) == target).float().mean().item(),
        "chance": 1.0 / sim.shape[0],
    }
