"""What a defend run needs before its analyses: the autoencoder, the data, the classifier, the trained prior.

``prepare_classifier`` builds or loads the classifier to defend (training a built-in one when no weights
are given); ``prepare_defend`` resolves everything ``aerobust defend`` is given on its command line.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import torch
from torch import nn

from ..adapter import Autoencoder
from ..checkpoints import resolve_model
from ..classifiers import BUILTIN_CLASSIFIERS, accuracy, load_classifier, save_classifier, train_classifier
from ..datasets import ImageSet, load_dataset
from ..errors import AerobustError
from ..fidelity import prior_from_defense_config
from ..runtime import resolve_device, seed_everything


def prepare_classifier(spec: str, *, input_shape: Sequence[int], num_classes: int, train_set: ImageSet | None = None,
                       weights: str | os.PathLike | None = None, epochs: int = 5, seed: int = 0,
                       device: str | torch.device = "cpu", quiet: bool = True) -> tuple[nn.Module, dict]:
    """The classifier ``spec`` (built-in name or ``package.module:factory``) with its description.

    Its initial weights come from ``seed`` alone; a built-in classifier without ``weights`` is trained
    on ``train_set`` for ``epochs`` epochs.
    """
    torch.manual_seed(seed)
    classifier = load_classifier(spec, input_shape=input_shape, num_classes=num_classes, weights=weights,
                                 device=device)
    trained_here = weights is None and spec in BUILTIN_CLASSIFIERS
    if trained_here:
        if train_set is None:
            raise AerobustError(f"the built-in classifier '{spec}' has no weights and no training data was given")
        classifier = train_classifier(classifier, train_set.images, train_set.labels, epochs=epochs, seed=seed,
                                      quiet=quiet)
    info = {"spec": spec, "weights": None if weights is None else str(weights), "trained_here": trained_here,
            "epochs": epochs if trained_here else None}
    return classifier, info


@dataclasses.dataclass
class DefendInputs:
    """The resolved inputs of one defend run, with descriptions for its manifest."""

    autoencoder: Autoencoder
    model_info: dict
    classifier: nn.Module
    classifier_info: dict
    train: ImageSet
    evaluation: ImageSet
    trained_prior: object | None  # the GMMPrior a GMM-regularized checkpoint was trained towards
    device: torch.device

    def data_info(self) -> dict:
        return {"train": self.train.name, "eval": self.evaluation.name, "n_train": len(self.train),
                "n_eval": len(self.evaluation)}


def prepare_defend(*, model: str | None = None, checkpoint: str | os.PathLike | None = None, classifier: str = "cnn",
                   classifier_weights: str | os.PathLike | None = None, classifier_epochs: int = 5,
                   save_classifier_to: str | os.PathLike | None = None, data: str = "mnist-5k",
                   eval_data: str | None = None, pad: int | None = None, resize: int | None = None,
                   download: bool = False, limit: int | None = None, device: str = "auto", seed: int = 0,
                   trust_unhashed: bool = False, quiet: bool = True) -> DefendInputs:
    """Resolve the autoencoder, load the train and evaluation splits in its geometry, prepare the classifier.

    ``data``'s train split trains a built-in classifier and fits the plain-AE prior; ``eval_data``
    (default ``data``) gives the evaluated test split, its first ``limit`` images if given.
    """
    resolved_device = resolve_device(device)
    seed_everything(seed)
    autoencoder, model_info = resolve_model(model, checkpoint, device=resolved_device, trust_unhashed=trust_unhashed)
    geometry = dict(pad_to=pad, resize=resize, channels=autoencoder.input_shape[0], download=download)
    train = load_dataset(data, "train", **geometry)
    evaluation = load_dataset(eval_data or data, "test", limit=limit, **geometry)
    num_classes = int(max(train.num_classes or 0, evaluation.num_classes or 0))
    if num_classes < 2:
        raise AerobustError("the data has no class labels; the defend analyses need a labelled dataset")
    network, classifier_info = prepare_classifier(
        classifier, input_shape=autoencoder.input_shape, num_classes=num_classes, train_set=train,
        weights=classifier_weights, epochs=classifier_epochs, seed=seed, device=resolved_device, quiet=quiet)
    if save_classifier_to:
        save_classifier(save_classifier_to, network)
    classifier_info["eval_accuracy"] = accuracy(network, evaluation.images.to(resolved_device),
                                                evaluation.labels.to(resolved_device))
    trained_prior = prior_from_defense_config(model_info.get("sidecar", {}).get("defense_config"))
    return DefendInputs(autoencoder, model_info, network, classifier_info, train, evaluation, trained_prior,
                        resolved_device)
