"""Run the four defend analyses (purify, detect, ood, calibrate) for one classifier and several autoencoders."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..adapter import Autoencoder
from ..classifiers import model_device
from ..datasets import ImageSet
from ..errors import AerobustError, ShapeError
from .attacks import AttackOptions, get_attack
from .calibration import calibration_data, calibration_summary
from .detect import detection_table
from .ood import ood_sets, ood_table, resolve_prior
from .purify import generate_adversarials, purification_table

ANALYSES = ("purify", "detect", "ood", "calibrate")


@dataclasses.dataclass
class DefendConfig:
    """Everything that decides the numbers (recorded in manifest.json)."""

    analyses: Sequence[str] = ANALYSES
    attacks: Sequence[str] = ("fgsm", "pgd", "cw", "lbfgs")
    linf_budgets: Sequence[float] = (0.05, 0.1, 0.2)
    l2_budgets: Sequence[float] = (1.0, 2.0, 3.0)
    attack_images: int = 200
    adaptive: bool = True
    eot_samples: int = 0
    detection_samples: int = 10
    latent_noise: float = 0.25
    prior: str = "auto"
    gmm_scale: float = 10.0
    gmm_std: float = 1.0
    calibration_bins: int = 10
    seed: int = 0
    batch_size: int = 250
    attack_options: AttackOptions = dataclasses.field(default_factory=AttackOptions)

    def validate(self) -> None:
        unknown = [a for a in self.analyses if a not in ANALYSES]
        if unknown or not self.analyses:
            raise AerobustError(f"unknown analysis {', '.join(unknown) or '(none given)'}; "
                                f"choose from {', '.join(ANALYSES)}")
        for name in self.attacks:
            get_attack(name)
        if self.attack_images < 1:
            raise AerobustError("--attack-images must be at least 1")
        if not all(math.isfinite(b) and b >= 0 for b in [*self.linf_budgets, *self.l2_budgets]):
            raise AerobustError("attack budgets must be finite numbers >= 0")
        steps = self.attack_options
        if min(steps.pgd_steps, steps.cw_steps, steps.lbfgs_iterations, steps.lbfgs_search_steps) < 1:
            raise AerobustError("attack iteration counts (--pgd-steps, --cw-steps, --lbfgs-iterations) must be >= 1")
        if self.eot_samples < 0:
            raise AerobustError("--eot-samples must be >= 0")
        if self.detection_samples < 2:
            raise AerobustError(f"--samples must be at least 2 (consistency compares reconstructions); got "
                                f"{self.detection_samples}")
        if not (math.isfinite(self.latent_noise) and self.latent_noise >= 0):
            raise AerobustError(f"--latent-noise must be a finite number >= 0; got {self.latent_noise}")
        if self.calibration_bins < 1:
            raise AerobustError(f"--bins must be at least 1; got {self.calibration_bins}")
        if not all(math.isfinite(v) and v > 0 for v in (self.gmm_scale, self.gmm_std)):
            raise AerobustError("gmm_scale and gmm_std must be finite and positive")

    def budgets(self) -> dict[str, list[float]]:
        return {"linf": list(self.linf_budgets), "l2": list(self.l2_budgets)}


@dataclasses.dataclass
class DefendResults:
    """Tables (one ``model`` column each), per-image data for figures, and notes on what was skipped."""

    purification: pd.DataFrame
    detection: pd.DataFrame
    ood: pd.DataFrame
    calibration_bins: pd.DataFrame
    calibration_stats: pd.DataFrame
    calibration_points: pd.DataFrame
    ood_scores: dict
    notes: list[str]
    priors: dict[str, str]
    sample_ids: list[int]


def _tagged(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_defend(classifier: nn.Module, autoencoders: dict[str, Autoencoder], eval_set: ImageSet, *,
               fit_set: ImageSet | None = None, config: DefendConfig | None = None,
               trained_priors: dict | None = None, cache_dir=None, quiet: bool = True) -> DefendResults:
    """The requested analyses for each autoencoder (name -> wrapped model) on ``eval_set``.

    Attacks use the first ``attack_images`` images; OOD and calibration use all of ``eval_set``.
    ``fit_set`` (training images) is needed only for the ``gaussian-fit`` prior of deterministic models;
    ``trained_priors`` (name -> GMMPrior) gives the priors GMM-regularized models were trained towards;
    ``cache_dir`` keeps each model's adversarial images so a rerun resumes, in a subfolder named by the
    model and :func:`adversarial_cache_key` (other settings, weights or images get another folder).
    """
    config = config or DefendConfig()
    config.validate()
    if eval_set.labels is None:
        raise AerobustError(f"the evaluation data {eval_set.name} has no labels; the defend analyses need them")
    device = model_device(classifier)
    images, labels = eval_set.images.to(device), eval_set.labels.to(device)
    n_attack = min(config.attack_images, len(images))
    attack_images, attack_labels = images[:n_attack], labels[:n_attack]
    tables: dict[str, list[pd.DataFrame]] = {k: [] for k in ("purification", "detection", "ood", "bins", "stats",
                                                              "points")}
    ood_scores, priors, notes = {}, {}, []
    if "ood" in config.analyses:
        ood_images, notes = ood_sets(eval_set, seed=config.seed)
    for name, autoencoder in tqdm(autoencoders.items(), desc="models", disable=quiet, leave=False):
        if autoencoder.input_shape != tuple(images.shape[1:]):
            raise ShapeError(f"autoencoder {name} takes {autoencoder.input_shape} inputs but the data is "
                             f"{tuple(images.shape[1:])}; use --pad/--resize to match")
        with autoencoder.frozen():
            if {"purify", "detect"} & set(config.analyses):
                sets = generate_adversarials(
                    classifier, autoencoder, attack_images, attack_labels, attacks=config.attacks,
                    budgets=config.budgets(), adaptive=config.adaptive, eot_samples=config.eot_samples,
                    options=config.attack_options, seed=config.seed, batch_size=config.batch_size, quiet=quiet,
                    cache_dir=None if cache_dir is None else
                    Path(cache_dir) / f"{name}-{adversarial_cache_key(config, attack_images, classifier, autoencoder)}")
            if "purify" in config.analyses:
                table = purification_table(classifier, autoencoder, attack_images, attack_labels, sets,
                                           eot_samples=config.eot_samples, seed=config.seed)
                tables["purification"].append(table.assign(model=name))
            if "detect" in config.analyses:
                table = detection_table(classifier, autoencoder, attack_images, attack_labels, sets,
                                        samples=config.detection_samples, latent_noise=config.latent_noise,
                                        eot_samples=config.eot_samples, seed=config.seed)
                tables["detection"].append(table.assign(model=name))
            if "ood" in config.analyses:
                prior, priors[name] = resolve_prior(
                    autoencoder, config.prior, None if fit_set is None else fit_set.images.to(device),
                    gmm_scale=config.gmm_scale, gmm_std=config.gmm_std,
                    trained_prior=(trained_priors or {}).get(name))
                table, ood_scores[name] = ood_table(autoencoder, images, ood_images, prior)
                tables["ood"].append(table.assign(model=name, prior=priors[name]))
            if "calibrate" in config.analyses:
                points = calibration_data(classifier, autoencoder, images, labels)
                bins, stats = calibration_summary(points, config.calibration_bins)
                tables["bins"].append(bins.assign(model=name))
                tables["stats"].append(pd.DataFrame([{**stats, "model": name}]))
                tables["points"].append(points.assign(model=name))
    return DefendResults(
        purification=_tagged(tables["purification"]), detection=_tagged(tables["detection"]),
        ood=_tagged(tables["ood"]), calibration_bins=_tagged(tables["bins"]),
        calibration_stats=_tagged(tables["stats"]), calibration_points=_tagged(tables["points"]),
        ood_scores=ood_scores, notes=notes, priors=priors, sample_ids=eval_set.ids.tolist())


def config_record(config: DefendConfig) -> dict:
    """The config as JSON-ready data; each attack with its norm, source and full engine settings."""
    record = dataclasses.asdict(config)
    record["attacks"] = {}
    for name in config.attacks:
        preset = get_attack(name)
        record["attacks"][name] = {"norm": preset.norm, "source": preset.source, "minimum_norm": preset.minimum_norm,
                                   "engine": preset.build(config.attack_options, config.batch_size).config()}
    return record


def adversarial_cache_key(config: DefendConfig, images: torch.Tensor, *modules: nn.Module) -> str:
    """Digest of everything that decides the adversarial images: the config, the attacked images (their
    pixels and device) and the weights of ``modules`` (the classifier and the autoencoder)."""
    digest = hashlib.sha256(json.dumps(config_record(config), sort_keys=True, default=str).encode())
    digest.update(str(images.device).encode())
    digest.update(images.detach().cpu().contiguous().numpy().tobytes())
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]

