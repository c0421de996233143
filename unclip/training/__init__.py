"""Training jobs: one loop for every stage (``train``), its Hydra schema, checkpoints, EMA, export."""
from .config import TrainConfig, compose_config, register_configs
from .export import assemble_pipeline
from .loop import NonFiniteLossError, batch_arithmetic, lr_factor, train

__all__ = ["NonFiniteLossError", "TrainConfig", "assemble_pipeline", "batch_arithmetic", "compose_config",
           "lr_factor", "register_configs", "train"]
