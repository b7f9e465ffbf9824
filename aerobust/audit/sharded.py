"""The audit under ``torchrun``: the ranks share the blocks, rank 0 merges them into one process's folder.

The plan's blocks (model, attack, lambda), split into image ranges when the blocks do not divide
evenly among the ranks, are dealt out to the ranks; each rank saves its pieces as they finish (a
rerun of the same command skips finished pieces), then rank 0 merges the pieces into the very block
files one process writes and finishes the audit with the single-process code. Every random draw of
an attack is seeded by (seed, trial, image_id, restart), so a piece does not depend on which rank
ran it. A block dealt out whole repeats one process's sweep exactly (bitwise equal on the same device
and thread count); a block cut into image ranges is attacked in smaller batches, and matrix kernels
may round differently for another batch size (rows equal within 1e-5).

Uses only the runner's and the store's public parts.
"""
from __future__ import annotations

import math
from typing import Collection

import numpy as np
import pandas as pd

from ..registry import ATTACKS
from ..results import block_stem


def audit_pieces(n_blocks: int, n_images: int, world_size: int,
                 whole: Collection[int] = ()) -> list[tuple[int, int, int]]:
    """The audit's work as ``(block, first image, end image)``; piece ``p`` belongs to rank ``p % world_size``.

    Whole blocks when the ranks divide them evenly; otherwise every block is cut into
    ``world_size / gcd(n_blocks, world_size)`` image ranges, which makes the number of pieces a
    multiple of the number of ranks (each rank gets as many pieces, of nearly equal size). Blocks in
    ``whole`` (attacks fitted over the image set, such as ``universal``) are never cut: a range would
    fit its own pattern and differ from one process.
    """
    shards = min(world_size // math.gcd(n_blocks, world_size), n_images)
    bounds = [round(s * n_images / shards) for s in range(shards + 1)]
    return [(block, 0, n_images) if block in whole else (block, bounds[s], bounds[s + 1])
            for block in range(n_blocks) for s in range(1 if block in whole else shards)]


def merge_notes(pieces: list[list[dict]]) -> list[dict]:
    """Flags and attack config of a block from those of its image ranges (in image order).

    Per-sample flags (counts over samples) are summed and their message rewritten; the unbounded
    check looks at the first images of a sweep, so only the first range's result stands, as one
    process would have checked those same images.
    """
    from ..attacks.sanity import FLAG_ORDER, PER_SAMPLE_FLAGS, per_sample_flag

    config = None
    merged: dict[str, dict] = {}
    for index, notes in enumerate(pieces):
        for note in notes:
            if "config" in note:
                if config is None:
                    config = {**note["config"], "image_ids": []}
                config["image_ids"] += note["config"]["image_ids"]
            elif note["flag"] in PER_SAMPLE_FLAGS:
                total = merged.setdefault(note["flag"], {"count": 0, "of": 0})
                total["count"] += note["count"]
                total["of"] += note["of"]
            elif index == 0:
                merged[note["flag"]] = note
    flags = [per_sample_flag(name, **value) if name in PER_SAMPLE_FLAGS else value
             for name, value in merged.items()]
    flags.sort(key=lambda flag: FLAG_ORDER.index(flag["flag"]) if flag["flag"] in FLAG_ORDER else len(FLAG_ORDER))
    return flags + ([{"config": config}] if config is not None else [])


def run_sharded_audit(audit, plan, pool, models: dict, clean: dict, model_flags: list[dict]) -> pd.DataFrame:
    """Run this rank's share of ``audit`` (an :class:`aerobust.audit.Audit`); rank 0 merges and finishes.

    ``models``, ``clean`` and ``model_flags`` are what every rank's ``Audit.run`` prepared: the loaded
    models, their clean pass over all audited images (sliced here per image range) and model flags.
    """
    from tqdm.auto import tqdm

    world, store = audit.world, audit.store
    blocks = audit.config.blocks()
    stems = [block_stem(spec.label, attack, lam) for spec, attack, lam in blocks]
    whole = {b for b, (_, attack, _) in enumerate(blocks) if ATTACKS.get(attack).fits_over_image_set}
    n_images = len(plan.image_ids)
    pieces = audit_pieces(len(blocks), n_images, world.size, whole)

    def piece_of(start: int, stop: int) -> tuple[int, int] | None:
        return None if (start, stop) == (0, n_images) else (start, stop)

    def pending() -> list[tuple[int, int, int]]:
        return [(b, start, stop) for b, start, stop in pieces
                if not store.block_done(stems[b]) and not store.block_done(stems[b], piece_of(start, stop))]

    # Rank 0 decides what is left, so that every rank agrees even while others write.
    todo = world.on_main(pending)
    mine = [piece for p, piece in enumerate(pieces) if p % world.size == world.rank and piece in todo]
    model_info = {}
    progress = tqdm(total=len(mine), desc=f"audit rank {world.rank}", unit="piece",
                    disable=audit.quiet or not world.is_main)
    for spec in audit.config.models:
        model_blocks = {b for b, (s, _, _) in enumerate(blocks) if s is spec}
        model_todo = [piece for piece in todo if piece[0] in model_blocks]
        my_pieces = [piece for piece in mine if piece[0] in model_blocks]
        if not (my_pieces or world.is_main or model_todo):
            continue
        model, model_info[spec.label] = models[spec.label]
        head = None
        if model_todo and plan.labels is not None:
            # Rank 0 trains the latent classifier once; the other ranks load the file it saved.
            head = world.main_first(lambda: audit.classifier_head(spec, model, pool))
        for block, start, stop in my_pieces:
            _, attack_name, lam = blocks[block]
            frame, arrays, notes = audit.run_block(spec, model, attack_name, lam, plan.rows(start, stop), head,
                                                   {name: value[start:stop] for name, value in clean[spec.label].items()})
            store.save_block(stems[block], frame, arrays, notes, piece=piece_of(start, stop))
            progress.update(1)
    progress.close()
    world.barrier()
    return world.on_main(lambda: _merge_and_finish(audit, plan, model_info, model_flags, stems))


def _merge_and_finish(audit, plan, model_info: dict, model_flags: list[dict], stems: list[str]) -> pd.DataFrame:
    """Rank 0: every block assembled from its image ranges, then the single-process finish."""
    store = audit.store
    n_images = len(plan.image_ids)
    ranges = sorted({(start, stop) for _, start, stop in audit_pieces(len(stems), n_images, audit.world.size)})
    for stem in stems:
        if store.block_done(stem):
            continue
        parts = [store.read_block(stem, piece) for piece in ranges]
        # A stable sort by trial restores one process's row order: trial-major, images in plan order.
        frame = pd.concat([rows for rows, _, _ in parts], ignore_index=True)
        frame = frame.sort_values("trial", kind="stable", ignore_index=True)
        example = np.concatenate([example for _, example, _ in parts])[: audit.config.examples]
        store.save_block(stem, frame, {"example": example}, merge_notes([notes for _, _, notes in parts]))
        for piece in ranges:
            store.remove_piece(stem, piece)
    store.remove_pieces_dir_if_empty()
    results = audit.finish(plan, model_info, model_flags)
    # The single-process manifest, plus how many processes ran the audit.
    store.add_to_manifest("distributed", audit.world.describe())
    return results
