"""The fidelity figure: decoded samples as a grid (one row per GMM mode, say); the samples come from
:mod:`aerobust.fidelity`, the figure is written by ``writer.save_figure``."""
from __future__ import annotations

import torch


def sample_grid_figure(images_by_row: list[torch.Tensor], row_labels: list[str] | None = None, title: str = ""):
    """A matplotlib figure with one row of images per entry (e.g. per GMM mode)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(images_by_row), max(len(r) for r in images_by_row)
    figure, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8 + 0.4), squeeze=False)
    for r, images in enumerate(images_by_row):
        for c in range(cols):
            axis = axes[r][c]
            axis.axis("off")
            if c < len(images):
                image = images[c].permute(1, 2, 0).clamp(0, 1).numpy()
                axis.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
        if row_labels:
            axes[r][0].text(-0.15, 0.5, row_labels[r], transform=axes[r][0].transAxes, ha="right", va="center",
                            fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9)
    return figure
