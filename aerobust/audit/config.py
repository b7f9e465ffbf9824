"""What an audit is asked to do: the models (:class:`ModelSpec`) and the settings (:class:`AuditConfig`).

The config is the audit's identity: it is saved in the fingerprint, so a rerun with another config
is refused rather than mixed into the same folder (see :mod:`aerobust.audit.store`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import AerobustError
from ..registry import ATTACKS
from ..results import file_safe, lambda_text

PAPER_ATTACKS = ("latent", "max-damage", "latent-classifier")


@dataclasses.dataclass
class ModelSpec:
    """One audited model: a label for the tables and exactly one source."""

    label: str
    model: str | None = None
    checkpoint: str | None = None
    model_args: dict = dataclasses.field(default_factory=dict)  # keywords for the architecture or factory
    trust_factory: bool = False  # a checkpoint whose sidecar names a factory may run it
    pixel_range: str | None = None  # "low,high" the model's images live in; None: its attribute, else 0,1
    posterior: str = "logvar"  # how an encoder's (mu, s) tuple is read: logvar, std or var

    @classmethod
    def parse(cls, text: str, kind: str) -> "ModelSpec":
        """``NAME``/``FILE`` or ``LABEL=NAME``/``LABEL=FILE``; kind is "model" or "checkpoint"."""
        label, sep, source = text.partition("=")
        if not sep:
            source = text
            label = _checkpoint_label(Path(text)) if kind == "checkpoint" else text.rsplit(":", 1)[-1]
        return cls(label=label, **{kind: source})


def _checkpoint_label(path: Path) -> str:
    """``runs/coupled/model.pt`` (what ``aerobust train`` writes) -> ``coupled``; else the file stem."""
    return path.parent.name if path.stem == "model" and path.parent.name else path.stem


@dataclasses.dataclass
class AuditConfig:
    models: list[ModelSpec]
    data: str = "mnist-5k"
    split: str = "test"
    pad_to: int | None = None
    resize: int | None = None
    attacks: Sequence[str] = PAPER_ATTACKS
    lambdas: Sequence[float] = (1.0, 3.0, 5.0)
    images: int = 100
    trials: int = 10
    seed: int = 0
    attack_options: dict = dataclasses.field(default_factory=dict)
    msssim: str = "auto"  # a preset name, or "auto": chosen from the image size and channels
    classifier_epochs: int = 30
    classifier_images: int = 4000
    examples: int = 6
    # None: each attack as configured; N: per sample the worst case over the attack, the same with N more
    # restarts and the reference L-BFGS-B (attacks/ensemble.py); the ``attack_member`` column names the winner.
    ensemble_restarts: int | None = None
    # None: every member (attacks/ensemble.py ENSEMBLE_MEMBERS); a list may leave out "reference-lbfgs".
    ensemble_members: list | None = None

    def validate(self):
        """Refuse what would put two results under one key (file name, table label) or cannot run."""
        if not self.models:
            raise AerobustError("nothing to audit: give --model or --checkpoint at least once")
        labels = [m.label for m in self.models]
        if len(set(labels)) != len(labels):
            raise AerobustError(f"model labels must be unique, got {labels}; name them LABEL=SOURCE")
        _refuse_collisions(labels, lambda label: file_safe(label).casefold(), "model labels",
                           "share one results file name (only letters, digits, '_', '.' and '-' are kept, and "
                           "case is ignored); name them apart with LABEL=SOURCE")
        _refuse_collisions(list(self.attacks), str, "--attacks", "are the same attack listed twice; list it once")
        if any(lam < 0 or not np.isfinite(lam) for lam in self.lambdas):
            raise AerobustError(f"lambdas must be finite and >= 0; got {list(self.lambdas)}")
        _refuse_collisions([float(lam) for lam in self.lambdas], lambda_text, "--lambdas",
                           "print as the same number in tables and file names; give distinct values")
        if self.trials < 1 or self.images < 1:
            raise AerobustError("--images and --trials must be at least 1")
        if not self.attacks:
            raise AerobustError("no attack to run: give --attacks at least one name (see aerobust list attacks)")
        for name in self.attacks:
            ATTACKS.get(name)
        if self.ensemble_restarts is not None and self.ensemble_restarts < 0:
            raise AerobustError(f"--ensemble-restarts must be >= 0, got {self.ensemble_restarts}")
        if self.ensemble_members is not None:
            from ..attacks.ensemble import check_members

            check_members(self.ensemble_members)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def blocks(self) -> list[tuple[ModelSpec, str, float]]:
        """The audit's units of work and of resuming, in the order results.csv lists them."""
        return [(m, a, float(lam)) for m in self.models for a in self.attacks for lam in self.lambdas]

    def create_attack(self, name: str):
        """The attack ``name`` with this config's options (and, with ``ensemble_restarts``, as an ensemble)."""
        from ..attacks.ensemble import EnsembleAttack

        options = self.attack_options.get(name, {})
        try:
            if self.ensemble_restarts is not None:
                return EnsembleAttack(name, options, self.ensemble_restarts,
                                      **({} if self.ensemble_members is None else {"members": self.ensemble_members}))
            return ATTACKS.create(name, **options)
        except (TypeError, ValueError) as exc:  # an option the attack does not take, or a value of the wrong type
            raise AerobustError(f"attack '{name}' rejects the options {options} ({exc}); "
                                "see --attack-option") from None


def _refuse_collisions(values: list, key: Callable, what: str, why: str):
    seen: dict = {}
    for index, value in enumerate(values):
        first = seen.setdefault(key(value), index)
        if first != index:
            raise AerobustError(f"{what} {values[first]!r} and {value!r} {why}")
