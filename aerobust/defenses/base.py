"""The defense interface: declared options, a one-time setup, and per-batch loss terms."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch

from ..adapter import Autoencoder
from ..errors import AerobustError


@dataclasses.dataclass(frozen=True)
class Option:
    """One defense option: its type (strings from the CLI are converted with it), default and help."""

    type: type
    default: Any
    help: str
    choices: tuple | None = None


def _convert(defense: str, name: str, option: Option, value: Any) -> Any:
    if value is None or (option.default is None and value in ("none", "None")):
        if option.default is None:
            return None
        raise AerobustError(f"option {name} of defense '{defense}' needs a value")
    try:
        converted = option.type(value)
    except (TypeError, ValueError):
        raise AerobustError(f"option {name} of defense '{defense}' must be {option.type.__name__}; "
                            f"got {value!r}") from None
    if isinstance(converted, float) and not math.isfinite(converted):  # every comparison with NaN is False
        raise AerobustError(f"option {name} of defense '{defense}' must be a finite number; got {value!r}")
    if option.choices is not None and converted not in option.choices:
        raise AerobustError(f"option {name} of defense '{defense}' must be one of "
                            f"{', '.join(map(str, option.choices))}; got {converted!r}")
    return converted


class Defense:
    """A training recipe. Subclasses declare ``options`` and implement ``setup`` and ``losses``.

    ``losses`` returns named scalar terms plus ``total`` (the objective that is minimized); every
    term is logged per epoch. ``describe`` is what the checkpoint sidecar records.
    """

    name: ClassVar[str] = "defense"
    variational: ClassVar[bool] = False  # True: the encoder must return (mu, logvar)
    # The registered architecture `train` builds when no --arch is given (named in wrong-model errors).
    architecture: ClassVar[str] = "mlp-ae-32"
    options: ClassVar[dict[str, Option]] = {}

    def __init__(self, **values):
        unknown = sorted(set(values) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "(none)"
            raise AerobustError(f"defense '{self.name}' has no option {', '.join(unknown)}; its options: {known}")
        self.config = {key: _convert(self.name, key, option, values.get(key, option.default))
                       for key, option in self.options.items()}
        self.validate()

    def validate(self) -> None:
        """Check option values together; raise AerobustError with what to change."""

    def check_model(self, model: Autoencoder) -> None:
        if self.variational and not model.is_stochastic:
            raise AerobustError(f"defense '{self.name}' trains variational autoencoders; the model's encoder "
                                f"returns a single code. Use --arch {self.architecture} (or omit --arch) "
                                "or an encoder that returns (mu, logvar)")
        if not self.variational and model.is_stochastic:
            raise AerobustError(f"defense '{self.name}' trains deterministic autoencoders but the model is "
                                f"variational; use --arch {self.architecture} (or omit --arch) or a "
                                "VAE defense (vae, beta-vae, beta-tcvae)")

    def setup(self, model: Autoencoder, *, dataset_size: int, batch_size: int,
              generator: torch.Generator) -> None:
        """Called once before training (and again, identically, on resume)."""
        self.check_model(model)

    def losses(self, model: Autoencoder, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def sample_codes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """Codes from the generative prior for fidelity samples; None when the defense has none."""
        return None

    def describe(self) -> dict:
        return {"name": self.name, "options": dict(self.config)}
