"""Training recipes (registered in ``aerobust.registry.DEFENSES``).

``ae`` plain reconstruction; ``gmm-dae``, ``augmented``, ``coupled-ks`` the paper's GMM-regularized
deterministic autoencoders (Sec. 3); ``vae``, ``beta-vae``, ``beta-tcvae`` the variational baselines; ``lipschitz-vae``, ``smooth-encoder`` and
``aave`` the robust VAE baselines of the paper's Table 1.
A third-party defense subclasses :class:`Defense` and registers itself with ``register_defense``.
"""
from .base import Defense, Option
from .gmm import AugmentedDefense, CoupledKSDefense, GMMDAEDefense, PlainAutoencoderDefense
from .variational import BetaTCVAEDefense, BetaVAEDefense, VAEDefense
from .lipschitz import LipschitzVAEDefense
from .smooth_encoder import SmoothEncoderDefense
from .aave import AutoencodingVAEDefense

__all__ = ["Defense", "Option", "PlainAutoencoderDefense", "GMMDAEDefense", "AugmentedDefense",
           "CoupledKSDefense", "VAEDefense", "BetaVAEDefense", "BetaTCVAEDefense",
           "LipschitzVAEDefense", "SmoothEncoderDefense", "AutoencodingVAEDefense"]
