"""Checkpoints: a ``state_dict`` file plus a JSON sidecar that says how to rebuild the model.

The sidecar records the architecture name and arguments, the defense, the training config, library
versions and the SHA-256 of the weights file, so a swapped or edited weights file is refused.
Loading uses ``torch.load(weights_only=True)``: a checkpoint cannot execute code.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .adapter import Autoencoder, wrap
from .errors import AerobustError, CheckpointError
from .registry import ARCHITECTURES
from .runtime import package_versions

SIDECAR_SUFFIX = ".json"
FORMAT_VERSION = 1


def sidecar_path(weights_path: str | os.PathLike) -> Path:
    return Path(weights_path).with_suffix(SIDECAR_SUFFIX)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, architecture: str,
                    arch_kwargs: dict | None = None, defense: str | None = None,
                    training: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``path`` (weights) and ``path`` with a .json suffix (sidecar); returns the weights path.

    Both files are written to temporary names and renamed, so a crash never leaves a half checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = model.modules_wrapped[0] if isinstance(model, Autoencoder) else model
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    tmp_weights = path.with_name(path.name + ".tmp")
    torch.save(state, tmp_weights)
    sidecar = {
        "format": FORMAT_VERSION,
        "architecture": architecture,
        "arch_kwargs": arch_kwargs or {},
        "defense": defense,
        "training": training or {},
        "versions": package_versions(),
        "weights_file": path.name,
        "weights_sha256": _sha256(tmp_weights),
        **(extra or {}),
    }
    tmp_sidecar = path.with_name(path.name + ".json.tmp")
    tmp_sidecar.write_text(json.dumps(sidecar, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp_weights, path)
    os.replace(tmp_sidecar, sidecar_path(path))
    return path


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    side = sidecar_path(path)
    if not side.is_file():
        raise CheckpointError(f"checkpoint sidecar {side} is missing; a checkpoint is FILE.pt plus FILE.json")
    try:
        sidecar = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint sidecar {side} is not valid JSON ({exc})") from None
    if not isinstance(sidecar, dict) or not isinstance(sidecar.get("architecture"), str):
        raise CheckpointError(f"checkpoint sidecar {side} does not name an architecture")
    return sidecar


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu", *,
                    trust_unhashed: bool = False) -> tuple[nn.Module, dict]:
    """Rebuild the architecture named in the sidecar and load the verified weights into it.

    A sidecar without ``weights_sha256`` cannot tell its own weights from any others put beside it, so it
    is refused unless ``trust_unhashed`` (``--trust-unhashed``) says the user vouches for the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    sidecar = read_sidecar(path)
    expected = sidecar.get("weights_sha256")
    if expected is None and not trust_unhashed:
        raise CheckpointError(f"checkpoint sidecar {sidecar_path(path)} records no weights_sha256, so {path} cannot "
                              "be verified; re-save it with aerobust.save_checkpoint or pass --trust-unhashed")
    if expected is not None and _sha256(path) != expected:
        raise CheckpointError(f"checkpoint {path} does not match the hash in its sidecar: the file was "
                              "modified or replaced; re-save it with aerobust")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is not a readable weights file ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state_dict of tensors")
    module = _architecture_from_sidecar(sidecar, sidecar_path(path))
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not fit architecture {sidecar['architecture']}: {first}") from None
    return module.to(device), sidecar


def _architecture_from_sidecar(sidecar: dict, side: Path) -> nn.Module:
    arch_kwargs = sidecar.get("arch_kwargs") or {}
    if not isinstance(arch_kwargs, dict):
        raise CheckpointError(f"checkpoint sidecar {side}: arch_kwargs must be a JSON object of keyword arguments; "
                              f"got {type(arch_kwargs).__name__}")
    factory = ARCHITECTURES.get(sidecar["architecture"])
    try:
        return factory(**arch_kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:  # unknown keyword or a value the architecture rejects
        raise CheckpointError(f"checkpoint sidecar {side}: architecture {sidecar['architecture']} rejects "
                              f"arch_kwargs {json.dumps(arch_kwargs, sort_keys=True)} ({exc})") from None


def module_from_factory(spec: str, option: str = "--model") -> nn.Module:
    """``package.module:factory`` -> the nn.Module it returns (or names); errors name ``option``."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AerobustError(f"cannot import '{module_name}' for {option} {spec} ({exc}); is it on PYTHONPATH?") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise AerobustError(f"module '{module_name}' has no attribute '{attr}' (from {option} {spec})")
    try:
        built = factory if isinstance(factory, nn.Module) else factory()
    except Exception as exc:  # the user's code: say whose call failed instead of a traceback
        raise AerobustError(f"{option} {spec}: calling {attr}() failed ({type(exc).__name__}: {exc}); it must "
                            "build the model without arguments") from None
    if not isinstance(built, nn.Module):
        raise AerobustError(f"{option} {spec} returned {type(built).__name__}; it must return a torch nn.Module")
    return built


def resolve_model(model: str | None = None, checkpoint: str | os.PathLike | None = None, *,
                  device: str | torch.device = "auto", input_shape=None, arch_kwargs: dict | None = None,
                  trust_unhashed: bool = False) -> tuple[Autoencoder, dict]:
    """Build an Autoencoder from ``--model NAME``, ``--model package.module:factory`` or ``--checkpoint``.

    Returns the wrapped model and a description (for manifests): its source and the sidecar, if any.
    ``trust_unhashed`` admits checkpoints whose sidecar has no weights hash (see :func:`load_checkpoint`).
    """
    if (model is None) == (checkpoint is None):
        raise AerobustError("give exactly one of --model NAME|package.module:factory or --checkpoint FILE")
    if checkpoint is not None:
        module, sidecar = load_checkpoint(checkpoint, trust_unhashed=trust_unhashed)
        info = {"source": "checkpoint", "checkpoint": str(checkpoint), "sidecar": sidecar,
                "weights_verified": "weights_sha256" in sidecar}
    elif ":" in model:
        module = module_from_factory(model)
        info = {"source": "factory", "factory": model}
    else:
        module = ARCHITECTURES.create(model, **(arch_kwargs or {}))
        info = {"source": "registry", "architecture": model, "arch_kwargs": arch_kwargs or {}}
    return wrap(module, input_shape=input_shape, device=device), info
