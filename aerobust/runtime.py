"""Device selection, seeding and the manifest every result-writing command leaves behind."""
from __future__ import annotations

import contextlib
import datetime
import functools
import importlib.metadata
import json
import platform
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import AerobustError

_MANIFEST_PACKAGES = (
    "aerobust", "torch", "torchvision", "numpy", "scipy", "pandas", "matplotlib",
    "pytorch-msssim", "torchattacks", "adversarial-robustness-toolbox",
)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device that is absent is an error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise AerobustError(f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise AerobustError("device cuda was requested but CUDA is not available; use --device auto or cpu")
    if resolved.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise AerobustError("device mps was requested but MPS is not available; use --device auto or cpu")
    return resolved


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; returns a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def package_versions() -> dict[str, str | None]:
    return dict(_installed_versions())  # a copy: callers may add to it


@functools.lru_cache(maxsize=None)
def _installed_versions() -> dict[str, str | None]:
    # Read once per process: scanning the installed distributions took ~80 ms per call, twice per
    # training epoch (sidecar and manifest).
    versions = {}
    for name in _MANIFEST_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions


def _jsonable(value: Any):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (Path, torch.device)):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def build_manifest(*, command: str, config: dict, seed: int | None, device: str | torch.device,
                   **extra) -> dict:
    """The record that makes a run reproducible: versions, seed, device, full config, extras."""
    return _jsonable({
        "command": command,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "device": str(device),
        "platform": platform.platform(),
        "versions": package_versions(),
        "config": config,
        **extra,
    })


def write_manifest(out_dir: str | Path, **fields) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "manifest.json"
    path.write_text(json.dumps(build_manifest(**fields), indent=2, sort_keys=True) + "\n")
    return path


@contextlib.contextmanager
def eval_mode(*modules: nn.Module):
    """Eval mode for every module; restores each submodule's own flag (a wrapper may differ from its parts)."""
    states = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield modules
    finally:
        for module, was_training in states:
            module.training = was_training


@contextlib.contextmanager
def frozen_modules(*modules: nn.Module):
    """Eval mode with parameter gradients off for every module (attacks need input gradients only)."""
    flags = [(p, p.requires_grad) for module in modules for p in module.parameters()]
    with eval_mode(*modules):
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        try:
            yield modules
        finally:
            for parameter, flag in flags:
                parameter.requires_grad_(flag)
