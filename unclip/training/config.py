"""Structured schemas of the training configs, registered in Hydra's ConfigStore.

``configs/train.yaml`` starts its defaults list with ``train_schema``, so the composed config is
typed and in struct mode: an unknown or misspelled key (in a YAML file or a command-line override)
fails at start with Hydra/OmegaConf's message naming the key and the schema it is not in.

Paper hyperparameters are the ``stage`` group's defaults (Ramesh et al. 2022, Table 3): each stage's recipe
(optimizer, EMA and what differs from the fields' defaults below) lives in ``configs/stage/<stage>.yaml`` only,
so the recipe fields are required (``MISSING``) here rather than given a second, drifting value.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


@dataclass
class OptimConfig:
    # Every stage's recipe sets these in configs/stage/<stage>.yaml (their one place; required here).
    lr: float = MISSING
    betas: tuple[float, float] = MISSING
    eps: float = MISSING
    weight_decay: float = MISSING  # applied to ≥2-d weights only
    warmup_steps: int = MISSING  # linear warm-up, then `schedule`
    # The same for every stage unless its YAML says otherwise.
    schedule: str = "constant"  # "constant" | "cosine" (to 0 at the last step)
    grad_clip: float = 1.0  # max global grad norm; 0 disables


@dataclass
class EMAConfig:
    decay: float = MISSING  # set by each stage's YAML; 0 disables (EMA = the live weights)
    warmup: bool = True  # decay_t = min(decay, (1 + t) / (10 + t)) so early EMA tracks the weights


@dataclass
class StageConfig:
    name: str = MISSING  # one of unclip.models.PIPELINE_STAGES
    schedule: Optional[str] = None  # None: the paper's (cosine; linear for sr1024)
    num_timesteps: int = 1000
    loss: str = "mse"  # "mse" | "hybrid" (learned σ, Nichol & Dhariwal 2021)
    mean_type: Optional[str] = None  # what the network predicts: "eps" | "x0" | "v"; None: the paper's for the stage
    min_snr_gamma: Optional[float] = None  # min-SNR-γ loss weighting (Hang et al. 2023; 5 there); None: uniform
    corruption: str = "none"  # upsamplers: "blur" (sr256) | "bsr" (sr1024) | "none"
    normalizer: str = "stats"  # prior: "stats" (z_i standardised with data statistics) | "fixed" (preset scale)
    gamma_steps: int = 64  # prior: analytic-DPM Γ stored in the release for this many sampling steps (paper: 64)
    gamma_samples: int = 256  # prior: held-out embeddings used to estimate Γ
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)


@dataclass
class ModelConfig:
    preset: str = "tiny"  # tiny | base | paper (clip: tiny -> unclip-tiny, base -> unclip-small)
    overrides: dict[str, Any] = field(default_factory=dict)  # preset fields to change
    # fine-tuning: a stage release (<pipeline>/<stage>, e.g. one converted from Karlo) whose network, diffusion
    # settings and weights the run starts from; `preset` is then unused and `overrides` apply on top
    init_from: Optional[str] = None


@dataclass
class DataConfig:
    shards: Any = MISSING  # brace pattern, glob, directory or list (prior: embedding shards or a clip-retrieval root)
    val_shards: Any = None  # held-out shards for sample grids / retrieval / Γ (None: the train shards)
    resolution: Optional[int] = None  # upsamplers: the `{r}.png` member, else the image fitted to r (real photos)
    min_image_size: Optional[int] = None  # smallest short side kept (None: the stage's resolution; smaller are skipped)
    num_workers: int = 0
    shuffle_buffer: int = 256
    resampled: bool = False  # draw shards with replacement (fewer shards than ranks × workers)
    # prior: "auto" (a directory with img_emb/ and text_emb/ is clip-retrieval output, else embedding
    # shards) | "shards" (unclip.data.embeddings) | "clip_retrieval" (`clip-retrieval inference` output)
    format: str = "auto"
    caption_column: str = "caption"  # clip-retrieval: the metadata parquet column holding the captions


@dataclass
class TrainerConfig:
    strategy: str = "auto"  # "auto" (ddp when world > 1) | "none" | "ddp" | "fsdp" (FSDP2 fully_shard)
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    precision: str = "fp32"  # "fp32" | "bf16" (autocast) | "auto" (bf16 where the device runs it natively)
    micro_batch: Optional[int] = None  # per-rank batch per micro-step (None: batch_size / world)
    backend: str = "auto"  # "auto" (nccl on GPU, gloo on CPU) | "gloo" | "nccl"
    find_unused_parameters: bool = False
    compile: bool = False  # torch.compile (inductor) the network for training; eager where no compiler is present


@dataclass
class LoggerConfig:
    name: str = "wandb"  # "wandb" | "none"
    project: str = "unclip"
    mode: str = "offline"  # wandb mode; "offline" writes a run dir that `wandb sync` uploads later
    every_steps: int = 10
    progress: bool = True  # tqdm bar on rank 0


@dataclass
class CheckpointConfig:
    every_steps: int = 1000
    keep: int = 3  # the last K checkpoints are kept
    resume: bool = False  # resume from the latest checkpoint in run_dir (only there; a new run_dir starts fresh)
    # resume from this checkpoint file or run directory instead (implies resume); its config must agree
    # with this run's on the model and the data order (checkpoint.SHAPING_KEYS)
    resume_from: Optional[str] = None


@dataclass
class SampleConfig:
    every_steps: int = 0  # sample grid / evaluation every M steps (0: only at the end; -1: never)
    n: int = 8
    steps: int = 25  # sampling steps for the grid (respaced)
    guidance_scale: float = 1.0
    # decoder: the learning instrument (unclip.evals.conditioning) at every evaluation
    gain_n: int = 64  # val samples for the conditioning gain (0: off)
    gain_timesteps: list[int] = field(default_factory=lambda: [200, 500, 800, 950])
    match_n: int = 32  # one-object val prompts sampled (true z_i + caption) and read by the oracle (0: off)
    match_guidance: float = 3.0  # decoder guidance for those samples


@dataclass
class ClipRefConfig:
    path: Optional[str] = None  # a saved FrozenCLIP directory (pipeline clip/); None: `arch`, random weights
    arch: str = "unclip-tiny"


@dataclass
class TrainConfig:
    stage: StageConfig = field(default_factory=StageConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    clip: ClipRefConfig = field(default_factory=ClipRefConfig)
    seed: int = 0
    batch_size: int = 32  # global batch = micro_batch × world × accumulation
    total_samples: int = 100_000  # training length in samples seen (steps = ceil(total / batch_size))
    max_nonfinite: int = 10  # this many non-finite losses in a row stop the run
    run_dir: str = MISSING
    export_dir: Optional[str] = None  # also write the EMA release to <export_dir>/<stage>/ at the end
    name: Optional[str] = None  # run name for the logger


def register_configs() -> None:
    """Register the schema; ``configs/train.yaml`` lists ``train_schema`` first in its defaults."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The training config that ``train/train.py <overrides>`` runs with, composed in-process (Hydra's compose
    API): for calling the loop (``unclip.training.train``) from tools and tests."""
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def validate_config(cfg) -> None:
    """Check a composed config against the schema again (catches keys forced in with ``+key=``)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError

    try:
        OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.to_container(cfg, resolve=False))
    except ConfigKeyError as err:
        raise ValueError(f"unknown config key: {err.msg if hasattr(err, 'msg') else err}") from None
    _check_values(cfg)


LR_SCHEDULES = ("constant", "cosine")


def _check_values(cfg) -> None:
    """Values the schema's types let through but the run would trip on later (or silently ignore)."""
    problems = []
    if cfg.stage.optim.schedule not in LR_SCHEDULES:
        problems.append(f"stage.optim.schedule={cfg.stage.optim.schedule!r}: expected one of {LR_SCHEDULES}")
    for key in ("checkpoint.every_steps", "checkpoint.keep", "stage.optim.warmup_steps", "logger.every_steps"):
        value = OmegaConf.select(cfg, key)
        if value is not None and value < 0:
            problems.append(f"{key}={value}: expected ≥ 0 (checkpoint.every_steps=0: only at the end)")
    if cfg.sample.every_steps < -1:
        problems.append(f"sample.every_steps={cfg.sample.every_steps}: expected ≥ -1 (0: only at the end; -1: never)")
    for key in ("batch_size", "total_samples"):
        if OmegaConf.select(cfg, key) is not None and OmegaConf.select(cfg, key) <= 0:
            problems.append(f"{key}={OmegaConf.select(cfg, key)}: expected > 0")
    if problems:
        raise ValueError("invalid config values: " + "; ".join(problems))
