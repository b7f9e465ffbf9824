"""Device selection, seeding and the manifest every result-writing command leaves behind."""
from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import random
import re
import socket
from pathlib import Path
from typing import Any, Callable

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


def compute_environment() -> dict:
    """What decides the floating-point results besides code and data: threads, determinism, backends.

    Two runs that differ here may differ in the last bits of every score (reductions are split
    differently), so a resumed run must not mix them.
    """
    environment = {
        "torch_threads": torch.get_num_threads(),
        "thread_choice": dict(_THREAD_CHOICE),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "parallel_backend": _parallel_backend(),
        "mkl": torch.backends.mkl.is_available(),
        "openmp": torch.backends.openmp.is_available(),
        "cpu_count": os.cpu_count(),
        "thread_env": {k: os.environ[k] for k in ("AEROBUST_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
                       if k in os.environ},
    }
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        environment["threadpools"] = "threadpoolctl not installed"
    else:
        environment["threadpools"] = [{k: pool.get(k) for k in ("user_api", "internal_api", "num_threads", "version")}
                                      for pool in threadpool_info()]
    return environment


def _parallel_backend() -> str | None:
    match = re.search(r"ATen parallel backend: (.+)", torch.__config__.parallel_info())
    return match.group(1).strip() if match else None


# How the thread count in use was chosen: "explicit" (--threads, AEROBUST_THREADS, set_threads(n)) or
# "auto" with what it saw; written into every manifest beside the count.
_THREAD_CHOICE: dict = {"mode": "torch default"}


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's or taskset's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def automatic_threads(cores: int, load: float) -> int:
    """The cores nobody else is using: ``cores`` minus the 1-minute load average ``load``, at least 1.

    Why: on an idle machine every core speeds a CPU attack up, while on a loaded one threads beyond
    the free cores wait for each other at every parallel region (bench/threads_under_load.py measured
    a training epoch of the reference MLP 2.7x slower with 2 threads than with 1 while both cores of a
    2-core machine were busy). The load average counts the runnable processes of the whole machine,
    this one not yet among them, because the choice is made before any work.
    """
    return max(1, min(cores, cores - round(load)))


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average (Windows)
        return None


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count; None chooses it from the idle cores (:func:`automatic_threads`,
    an unknown load counting as an idle machine). Returns the count in use; how it was chosen goes
    into every manifest (``compute.thread_choice``)."""
    global _THREAD_CHOICE
    if threads is None:
        cores, load = usable_cores(), _load_average()
        count = automatic_threads(cores, 0.0 if load is None else load)
        _THREAD_CHOICE = {"mode": "auto", "usable_cores": cores,
                          "load_average_1min": None if load is None else round(load, 2)}
    else:
        count = int(threads)
        if count < 1:
            raise AerobustError(f"the thread count must be at least 1, got {count}")
        _THREAD_CHOICE = {"mode": "explicit"}
    torch.set_num_threads(count)
    return count


def threads_chosen_automatically() -> bool:
    """True when the count in use came from :func:`automatic_threads`."""
    return _THREAD_CHOICE.get("mode") == "auto"


def adopt_recorded_threads(count: int, where: str) -> int:
    """Resume with the thread count an interrupted run recorded, when this run chose its own automatically
    (another count would change the results in the last bits, and an explicit one is refused instead)."""
    global _THREAD_CHOICE
    torch.set_num_threads(int(count))
    _THREAD_CHOICE = {**_THREAD_CHOICE, "adopted_from": where}
    return int(count)


def tensor_digest(tensors: dict[str, torch.Tensor | None]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of named tensors (device-independent; None allowed)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(name.encode() + b"\0")
        if tensor is None:
            digest.update(b"none\0")
            continue
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{flat.dtype}{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def module_digest(module: nn.Module) -> str:
    """Content hash of a module's parameters and buffers (what its outputs depend on besides code)."""
    return tensor_digest(dict(module.state_dict()))


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
        "compute": compute_environment(),
        "config": config,
        **extra,
    })


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]):
    """``write(tmp)`` then rename onto ``path``: a kill leaves the old file or the new one, never half of one.

    The temporary name is per process: ranks of a torchrun audit may write the same file at once.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{socket.gethostname()}-{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_manifest(out_dir: str | Path, **fields) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "manifest.json"
    text = json.dumps(build_manifest(**fields), indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
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
