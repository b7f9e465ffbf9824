"""Several audits in one report, refused when their scores are not comparable."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ..errors import AerobustError
from ..metrics import resolve_msssim_settings
from ..output_folder import claim_output_folder
from ..protocol import differing_protocol_keys, protocol_of_manifest
from ..runtime import write_manifest
from .audit_report import flatten_paths, refuse_audit_dir, write_tables_and_figures
from .page import html_page
from ..audit.store import AuditResults, load_results
from .statistics import table1_statistics

def compare(dirs: Sequence, *, mix_protocols: bool = False) -> pd.DataFrame:
    """One Table-1 layout over several audit directories (models of all of them).

    Raises AerobustError when the audits ran under different protocols (budgets, attack settings,
    MS-SSIM settings, data, lambdas: the leaderboard's rule) unless ``mix_protocols``.
    """
    return table1_statistics(_combined(dirs, mix_protocols)[0])


def write_comparison(dirs: Sequence, out_dir, *, mix_protocols: bool = False) -> dict[str, Path]:
    """Tables, Fig. 2 and an HTML page over several audits, with the shared metric settings."""
    results, audits, settings = _combined(dirs, mix_protocols)
    out_dir = Path(out_dir)
    for audit in audits:
        refuse_audit_dir(audit.directory, out_dir)
    claim_output_folder(out_dir, "compare", {"results_dirs": [str(a.directory.resolve()) for a in audits]})
    written = write_tables_and_figures(results, out_dir, prefix="comparison_", manifest=audits[0].manifest)
    page = html_page("aerobust comparison", written, settings,
                      [(audit.directory, audit.manifest) for audit in audits], results, None,
                      command="aerobust compare " + " ".join(str(a.directory) for a in audits) + f" --out {out_dir}")
    written["report.html"] = out_dir / "report.html"
    written["report.html"].write_text(page)
    written["manifest.json"] = write_manifest(
        out_dir, command="compare", config={"results_dirs": [str(a.directory.resolve()) for a in audits],
                                            "mix_protocols": mix_protocols},
        seed=None, device="none", metrics=settings)
    return flatten_paths(written)


def _comparable(settings: dict | None) -> dict | None:
    if not settings:
        return None
    values = resolve_msssim_settings(settings).as_dict()
    values.pop("preset")  # a name only; equal numbers score equally whatever they were called
    return values


def _scored_sample(audit: AuditResults) -> dict:
    """What an audit's numbers average over: its data and the (image, trial) rows it attacked."""
    config = audit.manifest.get("config") or {}
    return {"data": [config.get(k) for k in ("data", "split", "pad_to", "resize")],
            "images": sorted(set(audit.results["image_id"].tolist())),
            "trials": sorted(set(audit.results["trial"].tolist()))}


def _combined(dirs: Sequence, mix_protocols: bool = False):
    if len(dirs) < 1:
        raise AerobustError("compare needs at least one audit directory")
    audits = [load_results(d) for d in dirs]
    reference = _comparable(audits[0].metric_settings)
    for audit in audits:
        if reference is None or _comparable(audit.metric_settings) is None:
            raise AerobustError(f"{audit.directory}/manifest.json records no MS-SSIM settings ('metrics'), so its "
                                f"scores cannot be compared; rerun that audit")
        if _comparable(audit.metric_settings) != reference:
            differing = sorted(k for k in reference if reference[k] != _comparable(audit.metric_settings).get(k))
            raise AerobustError(
                f"{audit.directory} scored MS-SSIM with other settings than {audits[0].directory} (differing: "
                f"{', '.join(differing)}); their numbers are not comparable, rerun the audits with one setting")
    reference_sample = _scored_sample(audits[0])
    for audit in audits[1:]:
        sample = _scored_sample(audit)
        differing = [k for k in reference_sample if sample[k] != reference_sample[k]]
        if differing:
            raise AerobustError(
                f"{audit.directory} scored other {', '.join(differing)} than {audits[0].directory}, so their means "
                "and counts are not comparable; compare audits run with the same --data, --images, --trials, --seed")
    # the remaining protocol (budgets, attack settings, lambdas, seed), by the leaderboard's rule
    protocols = [protocol_of_manifest(audit.manifest) for audit in audits]
    if len({p["id"] for p in protocols}) > 1 and not mix_protocols:
        raise AerobustError(
            f"the audits ran under different protocols (differing: {', '.join(differing_protocol_keys(protocols))}); "
            "their numbers are not comparable. Rerun them under one protocol, or pass --mix-protocols to compare "
            "them anyway")
    frames = []
    seen: dict[str, int] = {}
    for audit in audits:
        for model in dict.fromkeys(audit.results["model"]):
            seen[model] = seen.get(model, 0) + 1
    names = [a.directory.name for a in audits]
    for index, audit in enumerate(audits):
        frame = audit.results.copy()
        source = names[index] if names.count(names[index]) == 1 else f"{names[index]}#{index + 1}"
        frame["model"] = [m if seen[m] == 1 else f"{m} [{source}]" for m in frame["model"]]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True), audits, resolve_msssim_settings(audits[0].metric_settings).as_dict()

