"""Fine-tuning in nnU-Net v2: plans like the pre-training, a trainer that loads the pre-trained
stem + encoder, schedules as configuration, and the fixed / dynamic from-scratch baselines.

Entry point: :func:`finetune` (CLI ``mae3d finetune``). nnU-Net's own loop (data loading,
augmentation, Dice+CE, validation, checkpoints, export) does the training.
"""

from mae3d.finetuning.api import TRAINER_NAME, finetune, model_dir_for
from mae3d.finetuning.config import BASELINES, FinetuneConfig, ScheduleConfig
from mae3d.finetuning.dataset_checks import DatasetError, check_dataset
from mae3d.finetuning.network import LinearProbeNet, build_from_plans, parameter_groups
from mae3d.finetuning.planning import PlanError, PreparedPlans, check_patch_fits, prepare_plans
from mae3d.finetuning.schedules import SCHEDULES, Schedule, make_schedule
from mae3d.finetuning.trainer import FinetuneTrainer, TrainerSetup

__all__ = [
    "BASELINES",
    "SCHEDULES",
    "TRAINER_NAME",
    "DatasetError",
    "FinetuneConfig",
    "FinetuneTrainer",
    "LinearProbeNet",
    "PlanError",
    "PreparedPlans",
    "Schedule",
    "ScheduleConfig",
    "TrainerSetup",
    "build_from_plans",
    "check_dataset",
    "check_patch_fits",
    "finetune",
    "make_schedule",
    "model_dir_for",
    "parameter_groups",
    "prepare_plans",
]
