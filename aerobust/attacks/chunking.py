"""How a sweep is cut into optimizer calls: chunks that depend on the configuration only.

Matrix kernels may round a sample's numbers differently when it shares a batch with other samples
(another batch size, another blocking), and an attack of a hundred steps amplifies the last bits. So
which samples share a call is fixed by the configuration alone, never by free memory, the number of
torchrun ranks or the image range a rank was given:

* a chunk never spans two lambdas; within a lambda it holds the rows of every trial and restart of
  ``images_per_chunk`` consecutive images (counted from the first image of the sweep), in the
  sweep's row order (trial, restart, image);
* ``images_per_chunk`` is the largest power of two whose rows (trials x restarts per image) fit
  ``batch_size``; when one image's rows do not fit, a chunk is one image and its rows are cut into
  runs of ``batch_size``;
* ``batch_size="auto"`` is ``AUTO_BATCH_ELEMENTS`` image elements per call (a power of two of samples:
  2,048 for 32x32 grey images, 8 for 256x256 colour ones), from the image shape alone.

An image range that starts at a multiple of ``images_per_chunk`` (what a torchrun audit cuts) is
therefore chunked exactly as inside the whole sweep, and its rows are bitwise those of one process.
The one exception is memory: a chunk that runs out of memory is halved and retried (recorded as
``chunk_halvings``), which changes its batches, so such rows may differ from a run without halvings
in the last float bits.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ..errors import AerobustError

# Image elements (C x H x W) per optimizer call under batch_size="auto": 8 MiB of float32 images; the
# activations autograd keeps are some multiple of that, well within a laptop's memory for the
# built-in models and a 256 px latent autoencoder.
AUTO_BATCH_ELEMENTS = 1 << 21


def _power_of_two_at_most(value: int) -> int:
    return 1 << (max(1, value).bit_length() - 1)


def samples_per_call(batch_size: int | str, image_shape: Sequence[int]) -> int:
    """``batch_size``, or for "auto" the power of two of samples holding ``AUTO_BATCH_ELEMENTS`` elements."""
    if batch_size != "auto":
        return int(batch_size)
    return _power_of_two_at_most(AUTO_BATCH_ELEMENTS // max(1, math.prod(image_shape)))


def images_per_chunk(batch_size: int | str, rows_per_image: int, image_shape: Sequence[int]) -> int:
    """Consecutive images whose rows share an optimizer call (a power of two, at least 1)."""
    return _power_of_two_at_most(samples_per_call(batch_size, image_shape) // max(1, rows_per_image))


def sweep_chunks(rows: torch.Tensor, lam_idx: torch.Tensor, img_idx: torch.Tensor, batch_size: int | str,
                 rows_per_image: int, image_shape: Sequence[int]) -> list[torch.Tensor]:
    """``rows`` (indices into the sweep's grid, in grid order) cut into the configuration's chunks.

    ``lam_idx`` and ``img_idx`` give each grid row's lambda and image; the result keeps grid order
    inside each chunk, and the chunks follow (lambda, first image).
    """
    if len(rows) == 0:
        return []
    per_call = samples_per_call(batch_size, image_shape)
    group = img_idx[rows] // images_per_chunk(batch_size, rows_per_image, image_shape)
    key = lam_idx[rows] * (int(group.max()) + 1) + group
    chunks = []
    for value in torch.unique(key):
        chunk = rows[key == value]
        chunks += list(chunk.split(per_call))  # only when one image's rows exceed a call
    return chunks


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def run_in_chunks(chunks: list[torch.Tensor], run: Callable[[torch.Tensor], None], device: torch.device,
                  limit: int | None = None) -> tuple[int | None, int]:
    """``run(part)`` over every chunk in order; a part that runs out of memory is halved and retried.

    ``limit`` caps the rows of a part (a cap found by an earlier pass); returns the cap in force at the
    end (None: never needed) and how many times a part was halved.
    """
    halvings = 0
    for chunk in chunks:
        start = 0
        while start < len(chunk):
            part = chunk[start:start + (limit or len(chunk))]
            try:
                run(part)
            except (torch.OutOfMemoryError, RuntimeError) as error:
                if not is_out_of_memory(error):
                    raise
                if len(part) == 1:
                    raise AerobustError(f"out of memory on {device} with a single sample per step; use a smaller "
                                        "image size (--resize) or another device") from None
                limit, halvings = max(1, len(part) // 2), halvings + 1
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            start += len(part)
    return limit, halvings
