"""aerobust: audit the adversarial robustness of autoencoders and train the defenses."""
from .adapter import Autoencoder, wrap
from .checkpoints import load_checkpoint, resolve_model, save_checkpoint
from .datasets import ImageSet, load_dataset
from .errors import AerobustError
from .registry import (ARCHITECTURES, ATTACKS, DATASETS, DEFENSES, METRICS, load_plugin,
                       register_architecture, register_attack, register_dataset, register_defense,
                       register_metric)
from .runtime import resolve_device, seed_everything

__version__ = "0.1.0"

__all__ = [
    "AerobustError", "Autoencoder", "ImageSet", "wrap", "load_dataset", "load_checkpoint", "save_checkpoint",
    "resolve_model", "resolve_device", "seed_everything", "load_plugin", "ARCHITECTURES", "ATTACKS", "DATASETS",
    "DEFENSES", "METRICS", "register_architecture", "register_attack", "register_dataset", "register_defense",
    "register_metric",
]
