"""The protocol of an audit: what must agree for two audits' numbers to be compared.

Data, split, padding/resizing, images, trials, seed, lambdas, every attack's settings (less the
run-only ones that change speed or bookkeeping, never the numbers) and the MS-SSIM settings (less the
preset's name: equal numbers score equally whatever they were called). ``id`` is the hash of that
block; records carry it, and the leaderboard and ``compare`` refuse mixed protocols unless told to mix.
A low module (no report or audit import), so that both the records and the report package use it.
"""
from __future__ import annotations

import hashlib
import json
from typing import Sequence

# Run-only attack settings: they change speed or bookkeeping, never the numbers.
RUN_ONLY_ATTACK_KEYS = ("batch_size", "device", "image_ids", "lambdas", "trials", "seed", "class", "history",
                        "attack_loss", "delta_norm")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_hash(value) -> str:
    """sha256 of the JSON of ``value`` with sorted keys and no spaces: equal content, equal hash."""
    return sha256_bytes(json.dumps(value, sort_keys=True, separators=(",", ":")).encode())


def protocol_block(config: dict, attacks: dict, msssim: dict) -> dict:
    """The protocol of an audit config, its attacks' settings and its MS-SSIM settings, with its ``id``."""
    block = {
        "data": config["data"], "split": config["split"], "pad_to": config.get("pad_to"),
        "resize": config.get("resize"), "images": int(config["images"]), "trials": int(config["trials"]),
        "seed": int(config["seed"]), "lambdas": sorted(float(v) for v in config["lambdas"]),
        "attacks": {name: {k: v for k, v in settings.items() if k not in RUN_ONLY_ATTACK_KEYS}
                    for name, settings in sorted(attacks.items())},
        "msssim": {k: v for k, v in msssim.items() if k != "preset"},
    }
    return {"id": canonical_hash(block), **block}


def protocol_of_manifest(manifest: dict) -> dict:
    """The protocol block of an audit's manifest; config keys an older or hand-made manifest lacks read as unset."""
    config = {"data": None, "split": None, "images": 0, "trials": 0, "seed": 0, "lambdas": [],
              **(manifest.get("config") or {})}
    return protocol_block(config, manifest.get("attacks") or {}, manifest.get("metrics") or {})


def differing_protocol_keys(protocols: Sequence[dict]) -> list[str]:
    """The protocol keys (data, images, trials, lambdas, attack settings, MS-SSIM settings, ...) that differ."""
    first = protocols[0]
    keys = set().union(*protocols) - {"id"}
    return sorted(k for k in keys if any(p.get(k) != first.get(k) for p in protocols))
