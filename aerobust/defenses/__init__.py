"""Training recipes (registered in ``aerobust.registry.DEFENSES``).

``ae`` plain reconstruction; ``gmm-dae``, ``augmented``, ``coupled-ks`` the paper's GMM-regularized
deterministic autoencoders (Sec. 3); ``vae``, ``beta-vae``, ``beta-tcvae`` the variational baselines.
A third-party defense subclasses :class:`Defense` and registers itself with ``register_defense``.
"""
from .base import Defense, Option
from .gmm import AugmentedDefense, CoupledKSDefense, GMMDAEDefense, PlainAutoencoderDefense
from .variational import BetaTCVAEDefense, BetaVAEDefense, VAEDefense

__all__ = ["Defense", "Option", "PlainAutoencoderDefense", "GMMDAEDefense", "AugmentedDefense",
           "CoupledKSDefense", "VAEDefense", "BetaVAEDefense", "BetaTCVAEDefense"]
