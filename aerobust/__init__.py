"""aerobust: audit the adversarial robustness of autoencoders and train the defenses.

Data flows one way: dataset -> plan -> attacks -> per-sample metrics -> results.csv -> reports.
Package map (docs/architecture.md has one line per module):
  adapter, architectures, taef2, datasets, checkpoints   models and data in
  registry                                               one Registry type for every plugin kind
  threat, objectives, attacks/                           the threat set, attack losses, the attack engine
  results, metrics, fidelity, distortion                 the results schema and the metrics behind it
  audit, stats, records, robustness_margin               audits, statistics, records, margins
  report/                                                tables, figures and pages from saved results
  priors, losses, defenses/, training, reproduce         training recipes and the paper's tables
  classifiers/, classifier_defense/                      autoencoders as a classifier defense
  distributed, runtime, errors, cli/                     torchrun, manifests, errors, the command line
"""
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
