"""An autoencoder and a classifier as one differentiable image classifier.

``AutoencoderClassifier(autoencoder, classifier, through="code")`` is ``classifier(encode(x))``: a head
on the latent codes (paper Table 3). ``through="reconstruction"`` is ``classifier(decode(encode(x)))``:
a classifier behind an autoencoder used as a purifier. Either way the module maps images to logits, so
any classifier attack (aerobust's, torchattacks', ART's) can attack the pair as a whole.
"""
from __future__ import annotations

import torch
from torch import nn

from .errors import AerobustError

PATHS = ("code", "reconstruction")


class AutoencoderClassifier(nn.Module):
    """logits = classifier(read(z)), with ``read`` the identity (``code``) or the decoder (``reconstruction``).

    ``z`` is the deterministic code of x, or (``eot_samples`` > 0 on a stochastic model) that many
    posterior draws from a generator seeded with ``seed`` whose logits are averaged (expectation over
    transformation, so attack gradients see the randomness).
    """

    def __init__(self, autoencoder, classifier: nn.Module, *, through: str = "code", eot_samples: int = 0,
                 seed: int = 0):
        super().__init__()
        if through not in PATHS:
            raise AerobustError(f"unknown path '{through}' from autoencoder to classifier; "
                                f"use one of {', '.join(PATHS)}")
        self.autoencoder = autoencoder
        self.classifier = classifier
        self.through = through
        self.eot_samples = eot_samples if getattr(autoencoder, "is_stochastic", False) else 0
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def input_shape(self):
        return self.autoencoder.input_shape

    def _classify(self, codes: torch.Tensor) -> torch.Tensor:
        return self.classifier(codes if self.through == "code" else self.autoencoder.decode(codes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.eot_samples:
            return self._classify(self.autoencoder.encode(x))
        draws = [self._classify(self.autoencoder.sample_latent(x, self.generator)) for _ in range(self.eot_samples)]
        return torch.stack(draws).mean(0)
