"""Memory-aware chunking of a sweep: how many samples one optimizer call may take on this device.

The estimate comes from a probe, not from guessed layer sizes: the bytes autograd saves for the
backward pass of one and of two samples (their difference is what one more sample costs, whatever
the model), plus the optimizer's per-sample buffers, against a fraction of the memory the device
has free. An out-of-memory error during a chunk halves the chunk and retries it, so a wrong
estimate costs time, never a result: samples are independent (per-sample seeds and objectives).
"""
from __future__ import annotations

import os
from typing import Callable

import torch

from ..errors import AerobustError

# Share of the free memory a sweep may plan to use (the rest: the model, the caller, fragmentation).
MEMORY_FRACTION = 0.5
# PGD keeps about this many image-sized tensors per sample besides autograd's (delta, best delta,
# gradient, projection scratch, bounds): counted so that small models do not overshoot.
OPTIMIZER_BUFFERS = 16
_FALLBACK_FREE_BYTES = 4 << 30


def free_memory_bytes(device: torch.device) -> int:
    """Bytes free on ``device`` now (CUDA: the driver's figure; CPU: MemAvailable; else 4 GiB)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "mps":
        mps = getattr(torch, "mps", None)
        if mps is not None and hasattr(mps, "recommended_max_memory"):
            return int(mps.recommended_max_memory() - mps.current_allocated_memory())
        return _FALLBACK_FREE_BYTES
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return _FALLBACK_FREE_BYTES


def saved_bytes(run: Callable[[], object]) -> int:
    """Bytes of the tensors autograd saves for backward while ``run()`` executes (views counted in full)."""
    total = 0

    def pack(tensor: torch.Tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return total


def bytes_per_sample(probe: Callable[[int], Callable[[], object]], image: torch.Tensor) -> int:
    """Marginal memory of one more sample: autograd's saved tensors for 2 minus 1 sample, plus buffers."""
    one, two = saved_bytes(probe(1)), saved_bytes(probe(2))
    buffers = OPTIMIZER_BUFFERS * image.numel() * image.element_size()
    return max(two - one, 0) + buffers


def planned_chunk(per_sample: int, total: int, device: torch.device) -> int:
    """Samples per optimizer call that fit ``MEMORY_FRACTION`` of the free memory (at least 1, at most total)."""
    return max(1, min(total, int(MEMORY_FRACTION * free_memory_bytes(device)) // max(per_sample, 1)))


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def run_in_chunks(rows: torch.Tensor, chunk_size: int, run: Callable[[torch.Tensor], None],
                  device: torch.device) -> tuple[int, int]:
    """``run(chunk)`` over ``rows`` in order; halves the chunk on out-of-memory and retries it.

    Returns (the chunk size that finished, how many times it was halved).
    """
    start, halvings = 0, 0
    while start < len(rows):
        chunk = rows[start:start + chunk_size]
        try:
            run(chunk)
        except (torch.OutOfMemoryError, RuntimeError) as error:
            if not is_out_of_memory(error):
                raise
            if chunk_size == 1:
                raise AerobustError(f"out of memory on {device} with a single sample per step; use a smaller "
                                    "image size (--resize) or another device") from None
            chunk_size, halvings = max(1, chunk_size // 2), halvings + 1
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        start += len(chunk)
    return chunk_size, halvings
