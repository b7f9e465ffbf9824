"""Small image classifiers for the defend analyses, their seeded training, and loading a user's classifier.

Built-in classifiers (``mlp``, ``cnn``) accept any ``(C, H, W)`` input (1 or 3 channels, 28 or 32 px...)
and return logits. A user's classifier comes from ``package.module:factory`` and/or a state-dict file
that is read with ``torch.load(weights_only=True)``, so a weights file cannot execute code.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..checkpoints import module_from_factory
from ..errors import AerobustError, CheckpointError, ShapeError, UnknownNameError
from ..runtime import eval_mode


class MLPClassifier(nn.Module):
    """Flatten -> hidden ReLU layers -> logits."""

    def __init__(self, input_shape: Sequence[int] = (1, 32, 32), num_classes: int = 10,
                 hidden: Sequence[int] = (256,)):
        super().__init__()
        self.input_shape = tuple(input_shape)
        widths = [int(torch.tensor(self.input_shape).prod()), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two conv + max-pool stages and an adaptive pool, so any side >= 8 px and any channel count fit."""

    def __init__(self, input_shape: Sequence[int] = (1, 32, 32), num_classes: int = 10,
                 channels: Sequence[int] = (16, 32), hidden: int = 64):
        super().__init__()
        self.input_shape = tuple(input_shape)
        widths = [self.input_shape[0], *channels]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(a, b, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        layers += [nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(widths[-1] * 16, hidden), nn.ReLU(),
                   nn.Linear(hidden, num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


BUILTIN_CLASSIFIERS = {"mlp": MLPClassifier, "cnn": SmallCNN}


def build_classifier(name: str, input_shape: Sequence[int], num_classes: int = 10, **kwargs) -> nn.Module:
    """A fresh built-in classifier (``mlp`` or ``cnn``) for ``input_shape`` = (C, H, W)."""
    if name not in BUILTIN_CLASSIFIERS:
        raise UnknownNameError(f"unknown classifier '{name}'; built-in classifiers: "
                               f"{', '.join(BUILTIN_CLASSIFIERS)} (or give package.module:factory)")
    return BUILTIN_CLASSIFIERS[name](input_shape=input_shape, num_classes=num_classes, **kwargs)


def model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")



def train_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 3,
                     batch_size: int = 128, lr: float = 1e-3, seed: int = 0, quiet: bool = True) -> nn.Module:
    """Train ``model`` with Adam + cross-entropy on a shuffle seeded by ``seed``; returns it in eval mode.

    The initial weights are the caller's: seed torch before building the model for a reproducible run.
    """
    if labels is None:
        raise AerobustError("training a classifier needs labelled images; the dataset has no labels")
    if len(images) != len(labels):
        raise ShapeError(f"{len(images)} images but {len(labels)} labels")
    if epochs < 1:
        raise AerobustError("classifier epochs must be at least 1")
    device = model_device(model)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    steps = range(epochs * ((len(images) + batch_size - 1) // batch_size))
    progress = tqdm(total=len(steps), desc="classifier", disable=quiet, leave=False)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch_size):
            index = order[start:start + batch_size]
            loss = F.cross_entropy(model(images[index].to(device)), labels[index].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            progress.update()
    progress.close()
    return model.eval()


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Logits of ``model`` on ``images`` in eval mode, batched; on the images' device."""
    device = model_device(model)
    with eval_mode(model):
        return torch.cat([model(images[i:i + batch_size].to(device)).to(images.device)
                          for i in range(0, len(images), batch_size)])


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    return float((predict_logits(model, images, batch_size).argmax(1) == labels.to(images.device)).float().mean())


def save_classifier(path: str | os.PathLike, model: nn.Module) -> Path:
    """Write the classifier's state dict (tensors only, so it loads with weights_only=True)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    return path




def load_classifier_weights(model: nn.Module, weights: str | os.PathLike) -> nn.Module:
    path = Path(weights)
    if not path.is_file():
        raise CheckpointError(f"classifier weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"classifier weights {path} are not a readable state dict ({type(exc).__name__}); "
                              "save them with torch.save(model.state_dict(), path)") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"classifier weights {path} do not hold a state_dict of tensors")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"classifier weights {path} do not fit the classifier: "
                              f"{str(exc).splitlines()[0]}") from None
    return model


def load_classifier(spec: str, *, input_shape: Sequence[int], num_classes: int = 10,
                    weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """A classifier from a built-in name (``mlp``, ``cnn``) or ``package.module:factory``, plus optional weights.

    The result is checked to map ``(N, *input_shape)`` to ``(N, num_classes)`` logits.
    """
    if ":" in spec:
        model = module_from_factory(spec, "--classifier")
    else:
        model = build_classifier(spec, input_shape, num_classes)
    if weights is not None:
        load_classifier_weights(model, weights)
    model = model.to(device).eval()
    probe = torch.full((2, *input_shape), 0.5, device=device)
    try:
        with torch.no_grad():
            out = model(probe)
    except RuntimeError as exc:
        raise ShapeError(f"the classifier cannot take inputs of shape (N, {', '.join(map(str, input_shape))}): "
                         f"{str(exc).splitlines()[0]}; match --pad/--resize to the classifier") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ShapeError(f"the classifier must return logits of shape (N, {num_classes}); got {shape}")
    return model
