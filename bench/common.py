"""What the benchmarks share: the shared MNIST test set and the reference MLP AE trained the same way."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from aerobust.adapter import wrap
from aerobust.attacks.optimizers import settings_class_of
from aerobust.registry import ATTACKS, OPTIMIZERS
from aerobust.training import train

MNIST_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-test"


def every_step(optimizer: str) -> dict:
    """Options that make ``optimizer`` run every step it is given: no early stopping, where it has any (an
    attack's own defaults may stop early)."""
    names = {field.name for field in dataclasses.fields(settings_class_of(OPTIMIZERS.get(optimizer)))}
    return {"early_stop": None} if "early_stop" in names else {}


# PGD to the last step, as the baselines and references mean it
PLAIN_PGD = {"optimizer": "pgd", **every_step("pgd")}


def reference_ae(epochs: int, seed: int, *, out_dir=None, device: str = "cpu"):
    """mlp-ae-32 (1024-200x4-10) trained with plain MSE on mnist-5k padded to 32 (on the CPU, so the weights
    do not depend on ``device``); returns (wrapped on ``device``, result)."""
    from aerobust.datasets import load_dataset

    start = time.perf_counter()
    data = load_dataset("mnist-5k", "train", pad_to=32)
    result = train("ae", "mlp-ae-32", data, epochs=epochs, batch_size=128, lr=1e-3, seed=seed, device="cpu",
                   out_dir=out_dir, quiet=True)
    print(f"trained mlp-ae-32 ({epochs} epochs, plain MSE, mnist-5k, seed {seed}) in "
          f"{time.perf_counter() - start:.1f} s")
    return wrap(result.model.eval(), device=device), result


def counted_sweep(name, options, model, x, lam, labels, targets, head, seed):
    """The sweep's result and the encoder rows it used per attacked sample."""
    rows = [0]
    encoder = next(module for module in model.modules() if len(list(module.children())) == 0)
    handle = encoder.register_forward_pre_hook(lambda module, args: rows.__setitem__(0, rows[0] + len(args[0])))
    try:
        attack = ATTACKS.create(name, sanity_checks=False, **options)
        result = attack.sweep(model, x, [lam], 1, seed, targets=targets if attack.needs_targets else None,
                              labels=labels, classifier=head if attack.needs_classifier else None,
                              image_ids=torch.arange(len(x)))
    finally:
        handle.remove()
    return result, rows[0] / len(x)


def strength_ratio(mine, reference, maximize: bool):
    """Per-sample loss ratio oriented so that >= 1 means ``mine`` is at least as strong (tensors or Series)."""
    return mine / reference if maximize else reference / mine


def strength(mine: torch.Tensor, strong: torch.Tensor, maximize: bool) -> dict:
    """Median and 5th percentile of the per-sample loss ratio against PGD 200x3 (>= 1: at least as strong)."""
    ratio = strength_ratio(mine, strong, maximize)
    # 0/0 (both attacks left the loss at exactly zero, e.g. a collapsed model) has no ratio: counted apart,
    # never folded into the median
    defined = torch.isfinite(ratio)
    ratio = ratio[defined]
    # ratios of distances that an attack drives towards 0 (the latent attack at a large budget) magnify
    # small absolute gaps: the medians of the losses themselves stand beside them
    return {"median_loss": round(float(mine.median()), 6), "median_loss_pgd200x3": round(float(strong.median()), 6),
            "loss_vs_pgd200x3": round(float(ratio.median()), 4) if len(ratio) else None,
            "loss_vs_pgd200x3_p05": round(float(ratio.quantile(0.05)), 4) if len(ratio) else None,
            "samples": len(ratio), "samples_without_ratio": int((~defined).sum())}
