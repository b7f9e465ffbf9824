"""Classifiers: image classifiers (``images``), heads on latent codes (``latent``), and an autoencoder
plus a classifier as one module (``AutoencoderClassifier``, from ``aerobust.composite``).

* ``images``: the built-in ``mlp`` and ``cnn`` image classifiers, their seeded training, loading a
  user's classifier (``package.module:factory`` and/or a weights-only state dict), batched logits.
* ``latent``: the downstream MLP head on an autoencoder's codes (paper Table 3).
* ``aerobust.composite`` (low in the package, because attack objectives build it):
  ``AutoencoderClassifier``, ``classifier(code)`` or ``classifier(reconstruction)`` as one
  differentiable image classifier, the module classifier attacks aim at.
"""
from ..composite import AutoencoderClassifier
from .images import (BUILTIN_CLASSIFIERS, MLPClassifier, SmallCNN, accuracy, build_classifier, load_classifier,
                     load_classifier_weights, model_device, predict_logits, save_classifier, train_classifier)
from .latent import Standardize, build_latent_head, latent_codes, make_head, train_latent_classifier

__all__ = [
    "AutoencoderClassifier", "BUILTIN_CLASSIFIERS", "MLPClassifier", "SmallCNN", "Standardize", "accuracy",
    "build_classifier", "build_latent_head", "latent_codes", "load_classifier",
    "load_classifier_weights", "make_head", "model_device", "predict_logits", "save_classifier",
    "train_classifier", "train_latent_classifier",
]
