"""How strong one audit's attacks are against other audits of the same plan, per sample.

``--audit`` is the audit under test, each ``--reference NAME=FOLDER`` another audit of the same models,
data and seed (content hashes and settings must match, and the images both attacked must have the same
targets: one clear line otherwise) that ran the attacks with other settings (more steps, another
optimizer), on the same images or some of them (a smaller --images draws the first of the same
sequence). Per reference, attack and lambda the rows of ``results.csv`` are paired on (trial, image
id) and the per-sample loss ratio is oriented so that >= 1 means the audit under test is at least as
strong (max-damage maximizes its loss, the latent attack minimizes its distance): count, median, 5th
percentile, minimum, maximum, the share of samples at least as strong, and the median losses of both.
Writes ``--out`` (CSV); last line one JSON object with the smallest 5th percentile per reference.

    python bench/audit_strength.py --audit reports/taef2 \\
        --reference pqn1000=reports/taef2/convergence/pqn1000 --out reports/taef2/convergence.csv
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from common import strength_ratio

PAIRING = ["model", "attack", "lambda", "trial", "image_id"]


def _refuse(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _what_was_attacked(folder: Path) -> tuple[dict, dict, dict]:
    """Per image id its target ids (one per trial; None without a targeted attack), the data settings and
    seed, and the models' content hashes."""
    manifest = json.loads((folder / "manifest.json").read_text())
    config, plan = manifest["config"], json.loads((folder / "plan.json").read_text())
    targets = plan["target_ids"]
    by_image = {image: None if targets is None else tuple(trial[n] for trial in targets)
                for n, image in enumerate(plan["image_ids"])}
    models = {label: (model["weights_sha256"], model.get("code_sha256")) for label, model in manifest["models"].items()}
    data = {key: config[key] for key in ("data", "split", "resize", "pad_to", "seed")}
    return by_image, data, models


def _shared_images(ours: tuple, theirs: tuple) -> list[int]:
    """The images both audits attacked, when they share data, seed and models and those images' targets
    (where both drew targets; an audit without a targeted attack draws none); else an empty list."""
    (images, *rest), (other_images, *other_rest) = ours, theirs
    shared = [image for image in images if image in other_images]
    same_targets = all(None in (images[i], other_images[i]) or images[i] == other_images[i] for i in shared)
    return shared if rest == other_rest and same_targets else []


def strength_table(audit: Path, references: dict[str, Path]) -> pd.DataFrame:
    attacked = _what_was_attacked(audit)
    mine = pd.read_csv(audit / "results.csv")
    # Whether each attack maximizes its loss, as the audit recorded it (a plugin attack need not be registered here).
    maximizes = {name: attack["objective"]["maximize"]
                 for name, attack in json.loads((audit / "manifest.json").read_text())["attacks"].items()}
    rows = []
    for name, folder in references.items():
        if not _shared_images(attacked, _what_was_attacked(folder)):
            _refuse(f"{folder} shares no image with {audit} (or audited other data, seed, models or targets); "
                    "compare audits of one plan (same --data, --seed and models; --images may differ)")
        paired = mine.merge(pd.read_csv(folder / "results.csv"), on=PAIRING, suffixes=("", "_reference"),
                            validate="one_to_one")
        for (model, attack, lam), group in paired.groupby(["model", "attack", "lambda"], sort=True):
            ours, theirs = group["attack_loss"], group["attack_loss_reference"]
            ratio = strength_ratio(ours, theirs, maximizes[attack])
            rows.append({"reference": name, "model": model, "attack": attack, "lambda": lam, "samples": len(ratio),
                         "ratio_median": ratio.median(), "ratio_p05": ratio.quantile(0.05), "ratio_min": ratio.min(),
                         "ratio_max": ratio.max(), "share_at_least_as_strong": float((ratio >= 1).mean()),
                         "loss_median": ours.median(), "loss_median_reference": theirs.median()})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audit", type=Path, required=True)
    parser.add_argument("--reference", action="append", required=True, metavar="NAME=FOLDER")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not all("=" in item for item in args.reference):
        _refuse("give each --reference as NAME=FOLDER, e.g. pgd2000=runs/taef2-pgd2000")
    references = {name: Path(folder) for name, folder in (item.split("=", 1) for item in args.reference)}
    table = strength_table(args.audit, references)
    table.round(4).to_csv(args.out, index=False)
    print(table.round(4).to_string(index=False))
    print(json.dumps({"bench": "audit_strength", "audit": str(args.audit),
                      "ratio_p05_min": table.groupby("reference")["ratio_p05"].min().round(4).to_dict()}))


if __name__ == "__main__":
    main()
