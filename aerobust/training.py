"""Train any registered architecture (or a user's module) with any registered defense.

Reproducibility: every epoch draws its shuffle and its noise from generators seeded by (seed, epoch),
so a run resumed from the checkpoint of epoch e continues exactly like the uninterrupted run (the
optimizer state is checkpointed too). Layout under ``out_dir``:

* ``run_state.pt``: the one unit a resume reads: weights, optimizer state, history, epoch count and the
  settings, written to a temporary name and renamed, so it always holds one whole epoch (the first one
  is written before training starts). Loads with ``weights_only=True``.
* exports rewritten from it after every epoch (and when a run resumes, so a kill between the writes is
  repaired): ``model.pt`` + ``model.json`` (weights and sidecar via
  :func:`aerobust.checkpoints.save_checkpoint`), ``history.jsonl`` / ``history.csv`` (one row per epoch:
  every loss term and the epoch time), ``manifest.json``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .adapter import wrap
from .checkpoints import build_architecture, factory_code_sha256, is_factory_spec, save_checkpoint
from .datasets import ImageSet
from .defenses import Defense
from .distributed import DataParallelObjective, join_world
from .errors import AerobustError, CheckpointError, ShapeError
from .output_folder import HISTORY_FILE, MODEL_FILE, RUN_STATE_FILE, check_output_folder, claim_output_folder
from .registry import DEFENSES
from .runtime import (adopt_recorded_threads, atomic_write, resolve_device, threads_chosen_automatically,
                      write_manifest)

_RUN_STATE_FORMAT = 1
# Settings a resumed run must share with the run it continues (epochs may grow).
# torch_threads: another count changes the weights in the last bits, so a resumed run would mix two.
_RESUME_KEYS = ("defense", "defense_options", "architecture", "architecture_code_sha256", "arch_kwargs",
                "batch_size", "lr", "seed", "data", "torch_threads")


@dataclasses.dataclass
class TrainResult:
    """``model``: the trained module (eval mode); ``history``: one dict per epoch; ``checkpoint``: model.pt."""

    model: nn.Module
    history: list[dict[str, float]]
    checkpoint: Path | None
    defense: Defense
    config: dict[str, Any]


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2 ** 63)


def _build_defense(defense: str | Defense, options: dict) -> Defense:
    if isinstance(defense, Defense):
        if options:
            raise AerobustError("pass defense options either to the Defense instance or to train(), not both")
        return defense
    return DEFENSES.create(defense, **options)


def _build_model(arch: str | nn.Module, arch_kwargs: dict | None, seed: int) -> tuple[nn.Module, str, dict]:
    if isinstance(arch, nn.Module):
        if arch_kwargs:
            raise AerobustError("arch_kwargs only apply to registered architecture names, not to a module")
        return arch, f"user:{type(arch).__module__}.{type(arch).__qualname__}", {}
    if not isinstance(arch, str):
        raise AerobustError(f"arch must be a registered architecture name, a factory spec or an nn.Module; "
                            f"got {type(arch).__name__}")
    torch.manual_seed(seed)  # the initialization is part of the run
    if is_factory_spec(arch) and arch.partition(":")[0].endswith(".py"):
        # The sidecar must still find the file when the checkpoint is audited from another folder.
        arch = f"{Path(arch.rpartition(':')[0]).resolve()}:{arch.rpartition(':')[2]}"
    module = build_architecture(arch, dict(arch_kwargs or {}), "--arch")
    return module, arch, dict(arch_kwargs or {})


def _check_data(data: ImageSet, input_shape: tuple, batch_size: int):
    if not isinstance(data, ImageSet):
        raise AerobustError(f"data must be an aerobust ImageSet (see aerobust.load_dataset); got {type(data).__name__}")
    if tuple(data.image_shape) != tuple(input_shape):
        c, h, w = data.image_shape
        raise ShapeError(f"the data are {c}x{h}x{w} images but the model expects {'x'.join(map(str, input_shape))}; "
                         "fit the data (--pad, --resize) or build the architecture for this shape")
    if len(data) < 2:
        raise AerobustError("training needs at least 2 images")
    if not torch.isfinite(data.images).all():
        raise AerobustError("the training images contain NaN or infinite values; clean the data first")


def _ids_digest(ids: torch.Tensor) -> str:
    return hashlib.sha256(ids.cpu().numpy().astype("int64").tobytes()).hexdigest()


def _write_history(out_dir: Path, history: list[dict]):
    import pandas as pd

    lines = "".join(json.dumps(row) + "\n" for row in history)
    atomic_write(out_dir / HISTORY_FILE, lambda tmp: tmp.write_text(lines))
    pd.DataFrame(history).to_csv(out_dir / "history.csv", index=False)


def has_training_run(out_dir: str | os.PathLike) -> bool:
    """Whether ``out_dir`` holds a run that ``resume=True`` can continue."""
    return (Path(out_dir) / RUN_STATE_FILE).is_file()


def _settings_json(config: dict) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def _write_run_state(out_dir: Path, module: nn.Module, optimizer: torch.optim.Optimizer, config: dict,
                     history: list[dict]):
    state = {"format": _RUN_STATE_FORMAT, "epochs_completed": len(history), "settings": _settings_json(config),
             "model": {k: v.detach().cpu() for k, v in module.state_dict().items()},
             "optimizer": optimizer.state_dict(), "history": history}
    atomic_write(out_dir / RUN_STATE_FILE, lambda tmp: torch.save(state, tmp))


def _read_run_state(out_dir: Path) -> tuple[dict, dict, list[dict]]:
    """The run state in ``out_dir`` read once: (the state, its settings, its history); one line if missing or damaged."""
    path = out_dir / RUN_STATE_FILE
    if not path.is_file():
        if (out_dir / MODEL_FILE).is_file():
            raise CheckpointError(f"{out_dir} holds a model but no {RUN_STATE_FILE} (an older aerobust wrote it), so "
                                  "it cannot be resumed; train into another --out")
        raise AerobustError(f"nothing to resume: {out_dir} holds no training run ({RUN_STATE_FILE} is missing); "
                            "start the run without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = json.loads(state["settings"])
        history = list(state["history"])
        if state["format"] != _RUN_STATE_FORMAT or state["epochs_completed"] != len(history):
            raise ValueError("inconsistent run state")
    except Exception as exc:  # a damaged file must end in one line, whatever torch or json raise
        raise CheckpointError(f"{path} is damaged ({type(exc).__name__}); the run cannot be resumed, train into "
                              "another --out") from None
    return state, saved, history


def _restore_run_state(out_dir: Path, run_state: tuple[dict, dict, list[dict]], module: nn.Module,
                       optimizer: torch.optim.Optimizer, config: dict) -> list[dict]:
    """Load the weights and optimizer state of a read run state into ``module`` and ``optimizer``; returns its
    history (one row per epoch)."""
    state, saved, history = run_state
    differing = [key for key in _RESUME_KEYS if _settings_json(saved.get(key)) != _settings_json(config[key])]
    if differing:
        raise AerobustError(f"{out_dir} holds a run with different {', '.join(differing)}; resume with the same "
                            "settings or train into another --out")
    try:
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:  # e.g. a user module of the same name but other layers
        raise CheckpointError(f"{out_dir / RUN_STATE_FILE} does not fit this model ({str(exc).splitlines()[0]}); "
                              "resume with the model the run was started with, or train into another --out") from None
    return history


def _save_epoch(out_dir: Path, module, optimizer, config, defense, history, device) -> Path:
    """The epoch's run state (the unit a resume reads), then its exports; returns model.pt."""
    _write_run_state(out_dir, module, optimizer, config, history)
    return _export_epoch(out_dir, module, config, defense, history, device)


def _export_epoch(out_dir: Path, module, config, defense, history, device) -> Path:
    """Write the files users read (checkpoint, history, manifest) for the epochs in ``history``."""
    done = len(history)
    path = save_checkpoint(out_dir / MODEL_FILE, module, architecture=config["architecture"],
                           arch_kwargs=config["arch_kwargs"], defense=config["defense"],
                           training={**config, "epochs_completed": done},
                           extra={"defense_config": defense.describe()})
    _write_history(out_dir, history)
    write_manifest(out_dir, command="train", config=config, seed=config["seed"], device=device,
                   defense_config=defense.describe(), epochs_completed=done, checkpoint=MODEL_FILE,
                   last_epoch=history[-1])
    return path


def _exports_current(out_dir: Path, history: list[dict]) -> bool:
    """Did the last export finish for exactly these epochs? Its manifest, written last, says so."""
    try:
        manifest = json.loads((out_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("epochs_completed") == len(history) and (out_dir / MODEL_FILE).is_file()


def _format_epoch(row: dict) -> str:
    terms = " ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in ("epoch", "epoch_time_s"))
    return f"epoch {row['epoch']}: {terms} ({row['epoch_time_s']:.1f}s)"


def train(defense: str | Defense, arch: str | nn.Module, data: ImageSet, *, epochs: int, batch_size: int = 100,
          lr: float = 2e-4, seed: int = 0, device: str | torch.device = "auto", out_dir: str | os.PathLike | None = None,
          resume: bool = False, quiet: bool = False, arch_kwargs: dict | None = None,
          **defense_options) -> TrainResult:
    """Train ``arch`` (registered name or nn.Module) on ``data`` with ``defense`` for ``epochs`` epochs.

    Adam with learning rate ``lr``; batches of ``batch_size`` (the last incomplete batch of an epoch is
    dropped so that every batch estimates the prior statistics from the same number of codes).
    ``defense_options`` are the defense's own options (see ``aerobust list defenses`` and
    ``Defense.options``). With ``out_dir`` every epoch is checkpointed; ``resume=True`` continues the
    run there (an error when there is none) and yields the same weights as an uninterrupted run.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise AerobustError(f"epochs must be a positive integer; got {epochs}")
    if batch_size < 2:
        raise AerobustError(f"batch_size must be at least 2 (the regularizers need batch statistics); got {batch_size}")
    if not lr > 0:
        raise AerobustError(f"the learning rate must be positive; got {lr}")
    if out_dir is not None:
        check_output_folder(out_dir, "train")
    run_state = _read_run_state(Path(out_dir)) if out_dir is not None and resume else None
    # Before any computation, resume with the thread count the run recorded when this run's own was automatic.
    if run_state is not None and threads_chosen_automatically():
        recorded = run_state[1].get("torch_threads")
        if isinstance(recorded, int) and recorded != torch.get_num_threads():
            adopt_recorded_threads(recorded, str(Path(out_dir) / RUN_STATE_FILE))
    defense_obj = _build_defense(defense, defense_options)
    module, arch_name, arch_kwargs = _build_model(arch, arch_kwargs, seed)
    # Under torchrun: join the process group (one GPU per rank); the log and checkpoints come from rank 0.
    world, dev = join_world(resolve_device(device))
    quiet = quiet or not world.is_main
    # A model that declares no input shape takes the data's.
    model = wrap(module, device=dev, input_shape=None if hasattr(module, "input_shape") else getattr(data, "image_shape", None))
    _check_data(data, model.input_shape, batch_size)
    batch_size = min(batch_size, len(data))
    steps_per_epoch = len(data) // batch_size
    config = {
        "defense": defense_obj.name, "defense_options": defense_obj.config, "architecture": arch_name,
        "architecture_code_sha256": factory_code_sha256(arch_name) if isinstance(arch, str) else None,
        "arch_kwargs": arch_kwargs, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
        "optimizer": "adam", "torch_threads": torch.get_num_threads(),
        "data": {"name": data.name, "n": len(data), "shape": list(data.image_shape), "ids_sha256": _ids_digest(data.ids)},
    }
    defense_obj.setup(model, dataset_size=len(data), batch_size=batch_size,
                      generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)

    out_path = Path(out_dir) if out_dir is not None else None
    history: list[dict] = []
    if out_path is not None:
        if resume:
            history = _restore_run_state(out_path, run_state, module, optimizer, config)
            world.on_main(lambda: claim_output_folder(out_path, "train"))
            if history and not _exports_current(out_path, history):
                # repairs exports that a kill left one epoch behind the run state; a finished run is only read,
                # so other processes may resume (read) it at the same time
                world.on_main(lambda: _export_epoch(out_path, module, config, defense_obj, history, dev))
        else:
            if has_training_run(out_path) or (out_path / MODEL_FILE).is_file():
                raise AerobustError(f"{out_path} already holds a training run; pass --resume to continue it or "
                                    "choose another --out")
            world.on_main(lambda: claim_output_folder(out_path, "train"))
            # epoch 0: a kill in epoch 1 resumes
            world.on_main(lambda: _write_run_state(out_path, module, optimizer, config, history))
    elif resume:
        raise AerobustError("resume needs the out_dir of the run to continue")

    # Data parallel under torchrun: this rank's rows of every global batch, DDP, gathered batch statistics.
    objective = DataParallelObjective(defense_obj, model, batch_size, world, dev)
    config["world"] = world.describe()  # processes and backend, in the sidecar and manifest
    images = data.images
    progress = tqdm(total=(epochs - len(history)) * steps_per_epoch, desc=f"train {defense_obj.name}",
                    disable=quiet, leave=False, unit="step")
    checkpoint = out_path / MODEL_FILE if out_path is not None and history else None
    for epoch in range(len(history), epochs):
        epoch_seed = _epoch_seed(seed, epoch)
        torch.manual_seed(epoch_seed)  # user modules with dropout draw from the global generator
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(epoch_seed))
        noise = torch.Generator(device=dev).manual_seed(epoch_seed)
        model.train()
        sums: dict[str, torch.Tensor] = {}
        start = time.perf_counter()
        for step in range(steps_per_epoch):
            x = images[order[step * batch_size:(step + 1) * batch_size][objective.rows]].to(dev, non_blocking=True)
            terms = objective(x, noise)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            for name, value in terms.items():
                value = value.detach()
                sums[name] = sums[name] + value if name in sums else value
            progress.update()
        sums = objective.mean_over_ranks(sums)  # the global batch's terms, the same on every rank
        row = {"epoch": epoch + 1, **{k: float(v) / steps_per_epoch for k, v in sums.items()},
               "epoch_time_s": time.perf_counter() - start}
        if not math.isfinite(row["total"]):
            progress.close()
            raise AerobustError(f"training diverged: the loss is {row['total']} in epoch {epoch + 1}; "
                                "lower the learning rate (--lr) or check the data")
        history.append(row)
        if not quiet:
            progress.write(_format_epoch(row))
        if out_path is not None:
            checkpoint = world.on_main(lambda: _save_epoch(out_path, module, optimizer, config, defense_obj, history,
                                                           dev))
    progress.close()
    model.eval()
    return TrainResult(model=module, history=history, checkpoint=checkpoint, defense=defense_obj, config=config)
