"""Tables, figures, a plain-language summary and the manifest of a defend run (pure: never re-runs anything)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..reporting import save_figure, write_table
from ..runtime import write_manifest
from .detect import DETECTION_SCORES
from .ood import OOD_SCORES
from .suite import DefendResults

# ROC-AUC bands used in the summary's wording.
STRONG_AUC, PARTIAL_AUC = 0.9, 0.7


def auc_verdict(auc: float) -> str:
    if math.isnan(auc):
        return "not measured (no examples)"
    if auc >= STRONG_AUC:
        return "separates well"
    if auc >= PARTIAL_AUC:
        return "separates partly"
    if auc > 1 - PARTIAL_AUC:
        return "barely better than chance"
    return "inverted: the score is lower on these inputs"


def _auc_text(row, scores) -> str:
    return ", ".join(f"{s} {row[f'auc_{s}']:.3f}" for s in scores)


def summary_table(results: DefendResults) -> pd.DataFrame:
    """One row per finding: model, analysis, setting, the numbers in words, and a verdict."""
    rows = []
    for _, r in results.purification.iterrows():
        rows.append({"model": r["model"], "analysis": "purify",
                     "setting": f"{r['attack']} {r['norm']} {r['budget']:g}",
                     "result": (f"accuracy clean {r['clean_acc']:.3f} (purified {r['purified_clean_acc']:.3f}); "
                                f"attacked {r['adversarial_acc']:.3f}, purified {r['purified_acc']:.3f}, "
                                f"adaptive {r['adaptive_acc']:.3f}"),
                     "verdict": r["verdict"]})
    for _, r in results.detection.iterrows():
        best = max(r[f"auc_{s}"] for s in DETECTION_SCORES)
        kind = "plain" if r["attack_target"] == "classifier" else "adaptive (purifier-aware, detector-unaware)"
        rows.append({"model": r["model"], "analysis": "detect",
                     "setting": f"{r['attack']} {r['norm']} {r['budget']:g}, {kind}, n_adv {r['n_adversarial']}",
                     "result": "ROC-AUC " + _auc_text(r, DETECTION_SCORES),
                     "verdict": auc_verdict(best)})
    for _, r in results.ood.iterrows():
        best = max(r[f"auc_{s}"] for s in OOD_SCORES)
        rows.append({"model": r["model"], "analysis": "ood", "setting": f"{r['ood_set']} (prior {r['prior']})",
                     "result": "ROC-AUC " + _auc_text(r, OOD_SCORES), "verdict": auc_verdict(best)})
    for _, r in results.calibration_stats.iterrows():
        rho = r["spearman_rho"]
        strength = "weak" if abs(rho) < 0.3 else "moderate" if abs(rho) < 0.6 else "strong"
        direction = "lower loss goes with higher confidence" if rho < 0 else "lower loss goes with LOWER confidence"
        rows.append({"model": r["model"], "analysis": "calibrate", "setting": f"{r['n']} images",
                     "result": f"Spearman rho(loss, confidence) {rho:.3f} (p {r['spearman_p']:.2g})",
                     "verdict": f"{strength}: {direction}"})
    return pd.DataFrame(rows, columns=["model", "analysis", "setting", "result", "verdict"])


def findings_text(results: DefendResults) -> str:
    """Plain-language answers, per model, computed from the tables (Markdown)."""
    lines = ["# Can the autoencoder protect the classifier, and does it flag inputs that are off?", ""]
    purification, detection = results.purification, results.detection
    models = list(dict.fromkeys([*purification.get("model", []), *detection.get("model", []),
                                 *results.ood.get("model", []), *results.calibration_stats.get("model", [])]))
    for model in models:
        lines.append(f"## {model}")
        part = purification[purification["model"] == model] if len(purification) else purification
        if len(part):
            lines.append(
                f"- Purification: clean accuracy {part['clean_acc'].iloc[0]:.3f} becomes "
                f"{part['purified_clean_acc'].iloc[0]:.3f} after reconstruction. Averaged over "
                f"{len(part)} attack/budget settings, accuracy is {part['adversarial_acc'].mean():.3f} attacked, "
                f"{part['purified_acc'].mean():.3f} attacked then purified, and {part['adaptive_acc'].mean():.3f} "
                "when the attack differentiates through autoencoder + classifier (the honest number).")
            for (norm, budget), group in part.groupby(["norm", "budget"]):
                lines.append(f"  - worst case over {', '.join(group['attack'])} at {norm} {budget:g}: attacked "
                             f"{group['adversarial_acc'].min():.3f}, purified {group['purified_acc'].min():.3f}, "
                             f"adaptive {group['adaptive_acc'].min():.3f}")
            counts = part["verdict"].value_counts()
            lines.append("- Verdicts: " + "; ".join(f"{v} ({n})" for v, n in counts.items()) + ".")
            if counts.get("helps only against non-adaptive attacks", 0):
                lines.append("- Purification helps only against attacks that ignore it wherever the verdict says "
                             "so; do not count it as robustness.")
        part = detection[detection["model"] == model] if len(detection) else detection
        for target, words in (("classifier", "plain"), ("purifier", "adaptive (purifier-aware)")):
            rows = part[part["attack_target"] == target] if len(part) else part
            if len(rows):
                best = rows[[f"auc_{s}" for s in DETECTION_SCORES]].max(axis=1)
                lines.append(f"- Consistency detection vs {words} adversarials: best-score ROC-AUC median "
                             f"{best.median():.3f} (range {best.min():.3f}-{best.max():.3f}) over {len(rows)} settings; "
                             "the detector was not attacked itself, so these are upper bounds.")
        part = results.ood[results.ood["model"] == model] if len(results.ood) else results.ood
        if len(part):
            lines.append("- OOD ROC-AUC (reconstruction error / prior likelihood): " + "; ".join(
                f"{r['ood_set']} {r['auc_reconstruction_error']:.3f} / {r['auc_negative_prior_loglik']:.3f}"
                for _, r in part.iterrows()) + ".")
        part = results.calibration_stats
        part = part[part["model"] == model] if len(part) else part
        if len(part):
            lines.append(f"- Calibration: Spearman rho between reconstruction loss and classifier confidence "
                         f"{part['spearman_rho'].iloc[0]:.3f} (p {part['spearman_p'].iloc[0]:.2g}, "
                         f"n {part['n'].iloc[0]}).")
        lines.append("")
    lines += [f"Note: {note}" for note in results.notes]
    return "\n".join(lines).rstrip() + "\n"


def _purification_figure(table: pd.DataFrame):
    import matplotlib.pyplot as plt

    models, attacks = sorted(table["model"].unique()), list(dict.fromkeys(table["attack"]))
    figure, axes = plt.subplots(len(models), len(attacks), figsize=(3.2 * len(attacks), 2.8 * len(models)),
                                squeeze=False, sharey=True)
    for i, model in enumerate(models):
        for j, attack in enumerate(attacks):
            part = table[(table["model"] == model) & (table["attack"] == attack)].sort_values("budget")
            axis = axes[i][j]
            for column, style in (("adversarial_acc", "o-"), ("purified_acc", "s-"), ("adaptive_acc", "^--")):
                axis.plot(part["budget"], part[column], style, label=column.replace("_acc", ""))
            axis.axhline(part["clean_acc"].iloc[0], color="grey", lw=0.8, label="clean")
            axis.set_title(f"{model}: {attack}", fontsize=9)
            axis.set_xlabel(f"budget ({part['norm'].iloc[0]})")
            axis.set_ylim(-0.02, 1.02)
        axes[i][0].set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=7)
    figure.tight_layout()
    return figure


def _detection_figure(table: pd.DataFrame):
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(max(6, 0.35 * len(table)), 3.2))
    labels = [f"{r.model} {r.attack} {r.budget:g} {'adapt' if r.attack_target == 'purifier' else 'plain'}"
              for r in table.itertuples()]
    positions = np.arange(len(table))
    width = 0.8 / len(DETECTION_SCORES)
    for k, score in enumerate(DETECTION_SCORES):
        axis.bar(positions + k * width, table[f"auc_{score}"], width, label=score)
    axis.axhline(0.5, color="grey", lw=0.8)
    axis.set_xticks(positions + width, labels, rotation=75, ha="right", fontsize=7)
    axis.set_ylabel("ROC-AUC clean vs adversarial")
    axis.set_ylim(0, 1)
    axis.legend(fontsize=7)
    return figure


def _ood_figure(scores: dict):
    import matplotlib.pyplot as plt

    models = list(scores)
    figure, axes = plt.subplots(len(models), len(OOD_SCORES), figsize=(10, 3 * len(models)), squeeze=False)
    for i, model in enumerate(models):
        for j, score in enumerate(OOD_SCORES):
            values = {name: s[score].numpy() for name, s in scores[model].items()}
            finite = np.concatenate([v[np.isfinite(v)] for v in values.values()])
            edges = np.linspace(np.quantile(finite, 0.005), np.quantile(finite, 0.995), 50)
            for name, v in values.items():
                axes[i][j].hist(np.clip(v, edges[0], edges[-1]), bins=edges, histtype="step", density=True,
                                label=name)
            axes[i][j].set_title(f"{model}: {score}", fontsize=9)
    axes[0][-1].legend(fontsize=7)
    figure.tight_layout()
    return figure


def _calibration_figure(points: pd.DataFrame, bins: pd.DataFrame):
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(points["model"]))
    figure, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 3.5), squeeze=False)
    for axis, model in zip(axes[0], models):
        part, summary = points[points["model"] == model], bins[bins["model"] == model]
        axis.scatter(part["confidence"], part["reconstruction_error"], s=4, alpha=0.3,
                     c=np.where(part["correct"], "tab:blue", "tab:red"))
        axis.plot(summary["mean_confidence"], summary["mean_reconstruction_error"], "ko-", label="bin mean")
        axis.set_yscale("log")
        axis.set_xlabel("classifier confidence (red: wrong)")
        axis.set_ylabel("reconstruction MSE")
        axis.set_title(model, fontsize=9)
        axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def write_defend_report(results: DefendResults, out_dir: str | os.PathLike, *, command: str, config: dict,
                        seed: int, device, **manifest_extra) -> Path:
    """Write every table (CSV/MD/TeX/HTML), the figures, summary, findings.md and manifest.json; returns ``out_dir``."""
    out_dir = Path(out_dir)
    tables = {"purification": results.purification, "detection": results.detection, "ood": results.ood,
              "calibration_bins": results.calibration_bins, "calibration_stats": results.calibration_stats}
    written = []
    for stem, table in tables.items():
        if len(table):
            write_table(table, out_dir, stem)
            written.append(stem)
    summary = summary_table(results)
    write_table(summary, out_dir, "summary")
    (out_dir / "findings.md").write_text(findings_text(results))
    figures = []
    if len(results.purification):
        figures.append(save_figure(_purification_figure(results.purification), out_dir, "purification").name)
    if len(results.detection):
        figures.append(save_figure(_detection_figure(results.detection), out_dir, "detection").name)
    if results.ood_scores:
        figures.append(save_figure(_ood_figure(results.ood_scores), out_dir, "ood_scores").name)
    if len(results.calibration_points):
        figures.append(save_figure(_calibration_figure(results.calibration_points, results.calibration_bins),
                                   out_dir, "calibration").name)
    write_manifest(out_dir, command=command, config=config, seed=seed, device=device,
                   tables=[*written, "summary"], figures=figures, notes=results.notes, priors=results.priors,
                   sample_ids=results.sample_ids, **manifest_extra)
    return out_dir
