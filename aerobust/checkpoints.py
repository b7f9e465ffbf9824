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
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .adapter import Autoencoder, wrap
from .diffusers_models import DiffusersAutoencoder, is_diffusers_spec, load_diffusers_autoencoder
from .errors import AerobustError, CheckpointError
from .registry import ARCHITECTURES, load_plugin
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


def _checkpoint_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Each tensor once; a wrap() result contributes every module it wraps (see Autoencoder.checkpoint_state)."""
    if isinstance(model, Autoencoder):
        return model.checkpoint_state()
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, architecture: str,
                    arch_kwargs: dict | None = None, defense: str | None = None,
                    training: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``path`` (weights) and ``path`` with a .json suffix (sidecar); returns the weights path.

    Both files are written to temporary names and renamed, so a crash never leaves a half checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = _checkpoint_state(model)
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
                    trust_unhashed: bool = False, trust_factory: bool = False) -> tuple[nn.Module, dict]:
    """Rebuild the architecture named in the sidecar and load the verified weights into it.

    A sidecar without ``weights_sha256`` cannot tell its own weights from any others put beside it, so it
    is refused unless ``trust_unhashed`` (``--trust-unhashed``) says the user vouches for the file.
    A sidecar that names a factory (``FILE.py:factory`` or ``module:factory``, written when a
    factory model was trained) is code a sidecar could point anywhere: it is run only with
    ``trust_factory=True`` (``--trust-factory``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    sidecar = read_sidecar(path)
    if is_factory_spec(str(sidecar["architecture"])) and not trust_factory:
        raise CheckpointError(f"checkpoint {path} is rebuilt by calling {sidecar['architecture']}, which runs "
                              "that code: pass --trust-factory (trust_factory=True) if you trust it")
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
        if isinstance(module, Autoencoder):
            module.load_checkpoint_state(state)
        else:
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
    try:
        return build_architecture(sidecar["architecture"], arch_kwargs, "the checkpoint's architecture")
    except CheckpointError:
        raise
    except AerobustError as exc:
        raise CheckpointError(f"checkpoint sidecar {side}: {exc}") from None
    except (TypeError, ValueError, RuntimeError) as exc:  # a value the architecture rejects
        raise CheckpointError(f"checkpoint sidecar {side}: architecture {sidecar['architecture']} rejects "
                              f"arch_kwargs {json.dumps(arch_kwargs, sort_keys=True)} ({exc})") from None


def is_factory_spec(source: str) -> bool:
    """``FILE.py:factory`` or ``package.module:factory`` (registered names hold no colon)."""
    return ":" in source


def _import_factory_module(location: str, spec: str, option: str):
    """The module named by the part of a factory spec before the colon: a .py path or a module name."""
    if location.endswith(".py") or os.sep in location or "/" in location:
        if not Path(location).is_file():
            raise AerobustError(f"{option} {spec}: file {location} does not exist; give FILE.py:factory "
                                "or package.module:factory")
        return load_plugin(location)
    # Like `python -m`, the current folder is importable.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(location)
    except ImportError as exc:
        raise AerobustError(f"{option} {spec}: cannot import '{location}' ({_first_line(exc)}); run from its "
                            "folder, put it on PYTHONPATH or give FILE.py:factory") from None
    except Exception as exc:
        raise AerobustError(f"{option} {spec}: importing '{location}' failed "
                            f"({type(exc).__name__}: {_first_line(exc)})") from None


def factory_code_sha256(source: str) -> str | None:
    """sha256 of the file holding a factory (the code that builds the model); None for a registered name.

    Weights alone do not identify a model built by user code: the same parameters under another
    activation are another model, so a resumed audit or training run compares this digest too.
    """
    if not is_factory_spec(source):
        return None
    location = source.rpartition(":")[0]
    if location.endswith(".py") or os.sep in location or "/" in location:
        path = Path(location)
    else:
        module = sys.modules.get(location) or importlib.import_module(location)
        path = Path(getattr(module, "__file__", None) or "")
    if not path.is_file():
        raise AerobustError(f"the code of factory {source} cannot be read ({path}), so its model has no identity; "
                            "give FILE.py:factory or a module installed from files")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [""])[0]


def module_from_factory(spec: str, option: str = "--model", arguments: dict | None = None) -> nn.Module:
    """``FILE.py:factory`` or ``package.module:factory`` -> the nn.Module it returns (or names).

    ``arguments`` are passed to the factory as keywords; every failure is one AerobustError naming ``option``.
    """
    location, _, attr = spec.rpartition(":")
    if not location or not attr.isidentifier():
        raise AerobustError(f"{option} {spec}: expected FILE.py:factory or package.module:factory")
    module = _import_factory_module(location, spec, option)
    factory = getattr(module, attr, None)
    if factory is None:
        raise AerobustError(f"{option} {spec}: '{location}' has no attribute '{attr}'")
    if isinstance(factory, nn.Module):
        if arguments:
            raise AerobustError(f"{option} {spec} names a module, not a factory: it takes no --model-arg")
        built = factory
    elif not callable(factory):
        raise AerobustError(f"{option} {spec}: '{attr}' is a {type(factory).__name__}, not a factory function")
    else:
        try:
            built = factory(**(arguments or {}))
        except AerobustError:
            raise
        except Exception as exc:
            raise AerobustError(f"{option} {spec} raised {type(exc).__name__}: {_first_line(exc)}"
                                + (f" (arguments: {sorted(arguments)})" if arguments else "")) from None
    if not isinstance(built, nn.Module):
        raise AerobustError(f"{option} {spec} returned {type(built).__name__}; it must return a torch nn.Module "
                            "(for an (encoder, decoder) pair: return aerobust.wrap((encoder, decoder), input_shape=...))")
    return built


def build_architecture(source: str, arguments: dict | None = None, option: str = "--model") -> nn.Module:
    """A registered architecture name or a factory spec, called with ``arguments``."""
    if not isinstance(arguments, dict):
        raise AerobustError(f"{option}: the architecture arguments must be a KEY=VALUE mapping, got "
                            f"{type(arguments).__name__}")
    if is_diffusers_spec(source):
        return load_diffusers_autoencoder(source, arguments)
    if is_factory_spec(source):
        return module_from_factory(source, option, arguments)
    factory = ARCHITECTURES.get(source)
    try:
        return factory(**arguments)
    except AerobustError:
        raise
    except TypeError as exc:
        raise AerobustError(f"architecture {source} does not take the arguments {sorted(arguments)} ({exc})") from None
    except (RuntimeError, ValueError) as exc:  # e.g. a negative width: torch refuses the layer's shape
        raise AerobustError(f"architecture {source} rejects arch_kwargs {arguments} ({_first_line(exc)}); "
                            "give positive sizes") from None


def resolve_model(model: str | None = None, checkpoint: str | os.PathLike | None = None, *,
                  device: str | torch.device = "auto", input_shape=None, arch_kwargs: dict | None = None,
                  data_shape=None, trust_unhashed: bool = False, trust_factory: bool = False,
                  pixel_range=None, posterior: str = "logvar") -> tuple[Autoencoder, dict]:
    """Build an Autoencoder from ``--model NAME``, ``--model FILE.py:factory`` / ``package.module:factory``
    (called with ``arch_kwargs``) or ``--checkpoint``.

    ``input_shape`` overrides the model's; ``data_shape`` is used only when the model declares none;
    ``trust_factory`` lets a checkpoint's sidecar name a factory (see :func:`load_checkpoint`).
    Returns the wrapped model and a description (for manifests): its source and the sidecar, if any.
    ``trust_unhashed`` admits checkpoints whose sidecar has no weights hash (see :func:`load_checkpoint`).
    ``pixel_range`` and ``posterior`` are passed to :func:`wrap`; the description records the range and
    posterior reading in effect, so every manifest says which space the model was fed.
    """
    if (model is None) == (checkpoint is None):
        raise AerobustError("give exactly one of --model NAME|FILE.py:factory|package.module:factory or --checkpoint FILE")
    if checkpoint is not None:
        module, sidecar = load_checkpoint(checkpoint, trust_unhashed=trust_unhashed, trust_factory=trust_factory)
        info = {"source": "checkpoint", "checkpoint": str(checkpoint), "sidecar": sidecar,
                "weights_verified": "weights_sha256" in sidecar,
                "code_sha256": factory_code_sha256(str(sidecar["architecture"]))}
    else:
        module = build_architecture(model, dict(arch_kwargs or {}))
        kind = "diffusers" if is_diffusers_spec(model) else "factory" if is_factory_spec(model) else "registry"
        # a diffusers model is identified by its class and weights (diffusers_model below), not by user code
        info = {"source": kind, kind if kind != "registry" else "architecture": model,
                "arch_kwargs": dict(arch_kwargs or {}),
                "code_sha256": None if kind == "diffusers" else factory_code_sha256(model)}
    if input_shape is None and getattr(module, "input_shape", None) is None:
        input_shape = data_shape
    wrapped = wrap(module, input_shape=input_shape, device=device, pixel_range=pixel_range, posterior=posterior)
    info.update(pixel_range=list(wrapped.pixel_range), posterior=wrapped.posterior_spread)
    if isinstance(module, DiffusersAutoencoder):
        info["diffusers_model"] = module.describe()
    return wrapped, info
