"""Training: recipes (paper CIFAR/ImageNet, modern, fine-tune), schedules, SGD with L2, label
smoothing, mixup/cutmix, per-layer learning-rate multipliers, callbacks (NaN stop, atomic
checkpoints, step-exact resume), distribution."""

from keras_resnet_suite.training.callbacks import (
    AtomicModelCheckpoint,
    BackupAndRestore,
    NaNGuard,
    TrainingDiverged,
    WarmupUntilError,
    atomic_save,
    atomic_write_json,
    weights_finite,
)
from keras_resnet_suite.training.distribute import (
    data_parallel,
    get_strategy,
    is_chief,
    per_replica_batch,
    scale_learning_rate,
    set_logical_cpus,
)
from keras_resnet_suite.training.finetune import finetune_model
from keras_resnet_suite.training.loop import fit_resumable
from keras_resnet_suite.training.losses import SmoothedCrossEntropy
from keras_resnet_suite.training.lr_multipliers import LayerLRMultiplier, check_multipliers
from keras_resnet_suite.training.mixing import cutmix, mix_batches, mixup
from keras_resnet_suite.training.optimizers import SGDL2
from keras_resnet_suite.training.recipes import RECIPES, Recipe, get_recipe
from keras_resnet_suite.training.schedules import StepDecay, WarmupCosine, WarmupStepLR

__all__ = [
    "RECIPES",
    "SGDL2",
    "AtomicModelCheckpoint",
    "BackupAndRestore",
    "LayerLRMultiplier",
    "NaNGuard",
    "Recipe",
    "SmoothedCrossEntropy",
    "StepDecay",
    "TrainingDiverged",
    "WarmupCosine",
    "WarmupStepLR",
    "WarmupUntilError",
    "atomic_save",
    "atomic_write_json",
    "check_multipliers",
    "cutmix",
    "data_parallel",
    "finetune_model",
    "fit_resumable",
    "get_recipe",
    "get_strategy",
    "is_chief",
    "mix_batches",
    "mixup",
    "per_replica_batch",
    "scale_learning_rate",
    "set_logical_cpus",
    "weights_finite",
]
