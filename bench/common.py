"""What the benchmarks share: the shared MNIST test set and the reference MLP AE trained the same way."""
from __future__ import annotations

import time
from pathlib import Path

from aerobust.adapter import wrap
from aerobust.training import train

MNIST_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-test"


def reference_ae(epochs: int, seed: int, *, out_dir=None):
    """mlp-ae-32 (1024-200x4-10) trained with plain MSE on mnist-5k padded to 32; returns (wrapped, result)."""
    from aerobust.datasets import load_dataset

    start = time.perf_counter()
    data = load_dataset("mnist-5k", "train", pad_to=32)
    result = train("ae", "mlp-ae-32", data, epochs=epochs, batch_size=128, lr=1e-3, seed=seed, device="cpu",
                   out_dir=out_dir, quiet=True)
    print(f"trained mlp-ae-32 ({epochs} epochs, plain MSE, mnist-5k, seed {seed}) in "
          f"{time.perf_counter() - start:.1f} s")
    return wrap(result.model.eval(), device="cpu"), result
