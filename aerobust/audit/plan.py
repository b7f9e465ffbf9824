"""The audit's fixed sample: which images, and which target image per image and trial.

Drawn from the config's seed alone, saved as ``plan.json``, so every run, resume and rank agrees on it.
"""
from __future__ import annotations

import copy

import torch

from ..datasets import ImageSet
from ..errors import AerobustError
from ..runtime import tensor_digest
from .config import AuditConfig


class Plan:
    """The fixed sample: which images, which targets per trial; saved so every run agrees."""

    def __init__(self, pool: ImageSet, config: AuditConfig, need_targets: bool):
        from ..attacks import choose_targets

        if config.images > len(pool):
            raise AerobustError(f"--images {config.images} is larger than {config.data} ({config.split}), "
                                f"which has {len(pool)} images")
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(config.seed))
        self.index = order[: config.images]
        self.images = pool.images[self.index]
        self.labels = None if pool.labels is None else pool.labels[self.index]
        self.image_ids = pool.ids[self.index]
        self.target_index = None
        if need_targets:
            # Targets come from the whole split (pool) and belong to another class than the image (without
            # labels: are another image of it).
            self.target_index = choose_targets(self.labels, config.trials, config.seed, pool_labels=pool.labels,
                                               image_ids=self.image_ids, pool_size=len(pool),
                                               pool_positions=self.index)
        self.pool = pool

    def targets(self) -> torch.Tensor | None:
        return None if self.target_index is None else self.pool.images[self.target_index]

    def rows(self, start: int, stop: int) -> "Plan":
        """The plan restricted to images ``start:stop`` (their targets follow them)."""
        part = copy.copy(self)
        for name in ("index", "images", "labels", "image_ids"):
            value = getattr(self, name)
            setattr(part, name, None if value is None else value[start:stop])
        if self.target_index is not None:
            part.target_index = self.target_index[:, start:stop]
        return part

    def digest(self) -> str:
        """Content hash of what is attacked: the images, their labels and the target images."""
        return tensor_digest({"images": self.images, "labels": self.labels, "targets": self.targets()})

    def as_dict(self) -> dict:
        return {
            "image_ids": self.image_ids.tolist(),
            "labels": None if self.labels is None else self.labels.tolist(),
            "target_ids": None if self.target_index is None else self.pool.ids[self.target_index].tolist(),
        }
