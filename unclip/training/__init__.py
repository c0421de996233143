"""Training jobs: one loop for every stage (``train``), its Hydra schema, checkpoints, EMA, export."""
from .config import STAGE_NAMES, TrainConfig, compose_config, register_configs
from .export import assemble_pipeline
from .loop import NonFiniteLossError, batch_arithmetic, derive_seed, lr_factor, train

__all__ = ["STAGE_NAMES", "NonFiniteLossError", "TrainConfig", "assemble_pipeline", "batch_arithmetic",
           "compose_config", "derive_seed", "lr_factor", "register_configs", "train"]
