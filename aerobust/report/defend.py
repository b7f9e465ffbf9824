"""Tables, figures, a plain-language summary and the manifest of a defend run (``aerobust defend``), a view over
its :class:`~aerobust.classifier_defense.DefendResults` (pure: never re-runs anything)."""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..classifier_defense.detect import DETECTION_SCORES
from ..classifier_defense.ood import OOD_SCORES
from ..classifier_defense.purify import STALLED_FLAG
from ..classifier_defense.suite import DefendResults
from ..runtime import write_manifest
from .style import COLORS, paper_figure, styled
from .writer import save_figure, write_table

# ROC-AUC bands used in the summary's wording.
STRONG_AUC, PARTIAL_AUC = 0.9, 0.7


def auc_verdict(auc: float) -> str:
    if math.isnan(auc):
        return "not measured (no examples)"
    if auc >= STRONG_AUC:
        return "separates well"
    if auc >= PARTIAL_AUC:
        return "separates partly"
    if auc >= 0.5:
        return "barely better than chance"
    # below 0.5 the score ranks the inputs the wrong way round: an inverted detector, whose flipped score
    # would reach 1 - AUC
    return f"inverted detector: the score is LOWER on these inputs (1 - AUC = {1 - auc:.3f})"


def verdict_kind(text: str) -> str:
    """The kind of a purification verdict, without its numbers ("helps only against non-adaptive attacks")."""
    return re.split(r" \(|:", text, maxsplit=1)[0]


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
            counts = part["verdict"].map(verdict_kind).value_counts()
            lines.append("- Verdicts (paired tests over images, Holm-corrected over the purification table; the "
                         "evidence is in the summary table): "
                         + "; ".join(f"{v} ({n} settings)" for v, n in counts.items()) + ".")
            if counts.get("helps only against non-adaptive attacks", 0):
                lines.append("- Purification helps only against attacks that ignore it wherever the verdict says "
                             "so; do not count it as robustness.")
            stalled = part[part["flags"].str.contains(STALLED_FLAG, na=False)] if "flags" in part else part.iloc[:0]
            for (attack, norm), group in stalled.groupby(["attack", "norm"]):
                lines.append(f"- Flag {STALLED_FLAG}: the adaptive {attack} ({norm}) attack gives the same accuracy "
                             f"{group['adaptive_acc'].iloc[0]:.3f} at budgets "
                             f"{', '.join(f'{b:g}' for b in group['budget'])}: more budget bought it nothing, so "
                             "there it says nothing about adaptive robustness and no 'helps' verdict is given.")
        part = detection[detection["model"] == model] if len(detection) else detection
        for target, words in (("classifier", "plain"), ("purifier", "adaptive (purifier-aware)")):
            rows = part[part["attack_target"] == target] if len(part) else part
            if len(rows):
                best = rows[[f"auc_{s}" for s in DETECTION_SCORES]].max(axis=1)
                inverted = int((best < 0.5).sum())
                lines.append(f"- Consistency detection vs {words} adversarials: best-score ROC-AUC median "
                             f"{best.median():.3f} (range {best.min():.3f}-{best.max():.3f}) over {len(rows)} settings; "
                             "the detector was not attacked itself, so these are upper bounds."
                             + (f" In {inverted} setting(s) even the best score is an inverted detector (AUC < 0.5: "
                                "adversarial inputs score as MORE typical than clean ones)." if inverted else ""))
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


# --- tables: readable headers, grouped score columns, model first ----------------------------------------------

ATTACK_NAMES = {"fgsm": "FGSM", "pgd": "PGD", "cw": "C&W", "lbfgs": "L-BFGS", "deepfool": "DeepFool"}
NORM_NAMES = {"linf": "L∞", "l2": "L2"}
SCORE_NAMES = {"distinct_labels": "distinct labels", "label_entropy": "label-vote entropy",
               "softmax_entropy": "mean-softmax entropy", "reconstruction_error": "reconstruction MSE",
               "negative_prior_loglik": "negative prior log-likelihood"}
ATTACK_TARGETS = {"classifier": "plain", "purifier": "adaptive"}
HEADERS = {
    "model": "model", "attack": "attack", "budget": "budget ε", "n": "images",
    "clean_acc": "clean", "purified_clean_acc": "clean, purified", "adversarial_acc": "attacked",
    "purified_acc": "attacked, purified", "adaptive_acc": "adaptive attack", "mean_perturbation": "mean ‖δ‖",
    "attack_target": "attack on", "n_clean": "clean images", "n_adversarial": "adversarials",
    "auc": "ROC-AUC", "ood_set": "OOD set", "n_in": "in-dist. images", "n_ood": "OOD images",
    "prior": "prior", "bin": "bin", "confidence_min": "confidence min", "confidence_max": "confidence max",
    "mean_confidence": "mean confidence", "accuracy": "accuracy",
    "mean_reconstruction_error": "mean reconstruction MSE", "median_reconstruction_error": "median reconstruction MSE",
    "spearman_rho": "Spearman ρ (MSE, confidence)", "spearman_p": "p", "spearman_rho_vs_correct": "Spearman ρ (MSE, correct)",
    "spearman_p_vs_correct": "p (correct)", "analysis": "analysis", "setting": "setting", "result": "result",
    "verdict": "verdict", **SCORE_NAMES,
}
CAPTIONS = {
    "purification": "Classifier accuracy on the attacked images: attacked directly, attacked then purified "
                    "(reconstructed by the autoencoder), and under the adaptive attack that differentiates "
                    "through autoencoder and classifier.",
    "detection": "Consistency detection: ROC-AUC of clean against successful adversarial images (0.5 is chance) "
                 "per score; the detector itself was not attacked (upper bounds). Score means: detection.csv.",
    "ood": "Out-of-distribution detection: ROC-AUC of in-distribution against OOD images (0.5 is chance) per "
           "score. Score means: ood.csv.",
    "calibration_bins": "Classifier confidence bins (equal counts) with accuracy and reconstruction error.",
    "calibration_stats": "Rank correlation between reconstruction error and classifier confidence / correctness.",
    "summary": "Every finding of the defend run in words.",
}
ROW_KEYS = {"purification": ["model", "attack", "budget"],
            "detection": ["model", "attack_target", "attack", "budget"],
            "ood": ["model", "prior", "ood_set"], "calibration_bins": ["model", "bin"],
            "calibration_stats": ["model"], "summary": ["model", "analysis"]}
AUC_TABLES = ("detection", "ood")
TABLE_DIRECTIONS = {"purification": ({"adversarial_acc": "higher", "purified_acc": "higher", "adaptive_acc": "higher"},
                                     "more robust"),
                    "detection": ({"auc": "higher"}, "a better detector"), "ood": ({"auc": "higher"}, "a better detector")}


def _readable_table(stem: str, table: pd.DataFrame) -> pd.DataFrame:
    """The table as readers get it: row keys as the index (model first), score columns grouped by score."""
    table = table.copy()
    if "attack" in table and "norm" in table:  # "FGSM (L∞)": the norm names the budget's unit
        table["attack"] = [_attack_title(a, n) for a, n in zip(table["attack"], table["norm"])]
        table = table.drop(columns="norm")
    if "attack_target" in table:
        table["attack_target"] = table["attack_target"].map(lambda t: ATTACK_TARGETS.get(t, t))
    keys = [k for k in ROW_KEYS.get(stem, []) if k in table]
    if keys:
        table = table.set_index(keys)
    if stem in AUC_TABLES:  # one ROC-AUC column per score under one group header; the score means stay in the CSV
        aucs = [c for c in table.columns if c.startswith("auc_")]
        counts = [c for c in table.columns if c.startswith("n_")]
        table = table[counts + aucs]
        table.columns = pd.MultiIndex.from_tuples([(c, "") for c in counts] + [("auc", c[4:]) for c in aucs])
    return table


def _write_defend_table(table: pd.DataFrame, out_dir: Path, stem: str) -> None:
    """CSV exactly as computed (one row per result, full precision); the human formats readable."""
    write_table(table, out_dir, stem, formats=("csv",))
    directions, meaning = TABLE_DIRECTIONS.get(stem, (None, None))
    write_table(_readable_table(stem, table), out_dir, stem, formats=("md", "tex", "html"), float_format="{:.3f}",
                caption=CAPTIONS[stem], labels=HEADERS, directions=directions, direction_meaning=meaning,
                number_formats={"spearman_p": "{:.2g}", "spearman_p_vs_correct": "{:.2g}"})


# --- figures ---------------------------------------------------------------------------------------------------

def _attack_title(attack: str, norm: str) -> str:
    return f"{ATTACK_NAMES.get(attack, attack)} ({NORM_NAMES.get(norm, norm)})"


@styled
def _purification_figure(table: pd.DataFrame):
    """Accuracy against budget: one row of panels per model, one column per attack."""
    models, attacks = list(dict.fromkeys(table["model"])), list(dict.fromkeys(table["attack"]))
    figure, axes = paper_figure(len(models), len(attacks), width="double", height=1.25 * len(models) + 0.45,
                                sharey=True)
    curves = (("adversarial_acc", "o-", "attacked"), ("purified_acc", "s-", "attacked, then purified"),
              ("adaptive_acc", "^--", "adaptive attack (through AE + classifier)"))
    for i, model in enumerate(models):
        for j, attack in enumerate(attacks):
            part = table[(table["model"] == model) & (table["attack"] == attack)].sort_values("budget")
            axis = axes[i][j]
            if part.empty:
                axis.set_axis_off()
                continue
            for column, style, label in curves:
                axis.plot(part["budget"], part[column], style, label=label)
            axis.axhline(part["clean_acc"].iloc[0], color="grey", lw=0.8, ls=":", label="clean images")
            axis.set_ylim(-0.03, 1.03)
            axis.set_xticks(part["budget"].tolist())
            if i == 0:
                axis.set_title(_attack_title(attack, part["norm"].iloc[0]))
            if i == len(models) - 1:
                axis.set_xlabel(f"budget ε ({NORM_NAMES.get(part['norm'].iloc[0], part['norm'].iloc[0])})")
        axes[i][0].set_ylabel(f"{model}: accuracy")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=len(labels))
    return figure


@styled
def _detection_figure(table: pd.DataFrame):
    """Heat maps of ROC-AUC: rows attack and budget, columns model and attack kind, one panel per score."""
    import matplotlib.pyplot as plt

    rows = list(dict.fromkeys(zip(table["attack"], table["norm"], table["budget"])))
    rows.sort(key=lambda r: (list(dict.fromkeys(table["attack"])).index(r[0]), r[2]))
    columns = list(dict.fromkeys(zip(table["model"], table["attack_target"])))
    columns.sort(key=lambda c: (list(dict.fromkeys(table["model"])).index(c[0]), c[1] != "classifier"))
    cell = {(r.attack, r.norm, r.budget, r.model, r.attack_target): r for r in table.itertuples()}
    figure, axes = paper_figure(1, len(DETECTION_SCORES), width="double", height=0.16 * len(rows) + 1.0,
                                sharey=True)
    cmap = plt.get_cmap("RdBu").with_extremes(bad="#dddddd")  # red: inverted, white: chance, blue: detected
    image = None
    for axis, score in zip(axes[0], DETECTION_SCORES):
        values = np.array([[getattr(cell[(*r, *c)], f"auc_{score}") if (*r, *c) in cell else np.nan
                            for c in columns] for r in rows], dtype=float)
        image = axis.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
        for (y, x), value in np.ndenumerate(values):
            axis.text(x, y, "n/a" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=5.5,
                      color="white" if not np.isnan(value) and abs(value - 0.5) > 0.3 else "black")
        axis.set_title(SCORE_NAMES[score])
        axis.set_xticks(range(len(columns)), [f"{m}\n{ATTACK_TARGETS.get(t, t)}" for m, t in columns])
        axis.tick_params(axis="x", bottom=False, labelbottom=False, top=False, labeltop=True)
        axis.tick_params(axis="y", left=False)
        axis.grid(False)
        for edge in range(1, len(rows)):  # white lines between attacks and between models
            if rows[edge][0] != rows[edge - 1][0]:
                axis.axhline(edge - 0.5, color="white", lw=1.5)
        for edge in range(1, len(columns)):
            if columns[edge][0] != columns[edge - 1][0]:
                axis.axvline(edge - 0.5, color="white", lw=1.5)
    axes[0][0].set_yticks(range(len(rows)), [f"{_attack_title(a, n)} {b:g}" for a, n, b in rows])
    figure.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="ROC-AUC clean vs adversarial (0.5 = chance)")
    return figure


def _ood_bins(values: list[np.ndarray]) -> tuple[np.ndarray, bool]:
    """Bins over the full range of every value (nothing clipped); logarithmic when positive and spanning > 20x."""
    pooled = np.concatenate(values)
    low, high = float(pooled.min()), float(pooled.max())
    if high <= low:
        high = low + 1.0
    if low > 0 and high / low > 20:
        return np.geomspace(low, high, 41), True
    return np.linspace(low, high, 41), False


@styled
def _ood_figure(scores: dict, table: pd.DataFrame):
    """Histograms of each OOD score: in-distribution filled, each OOD set a line, ROC-AUC in the legend."""
    models = list(scores)
    figure, axes = paper_figure(len(models), len(OOD_SCORES), width="double", height=1.7 * len(models) + 0.5)
    for i, model in enumerate(models):
        for j, score in enumerate(OOD_SCORES):
            axis = axes[i][j]
            values = {name: s[score].numpy().astype(float) for name, s in scores[model].items()}
            finite = {name: v[np.isfinite(v)] for name, v in values.items()}
            edges, logarithmic = _ood_bins([v for v in finite.values() if len(v)])
            for name, v in finite.items():
                label = name
                if name != "in-distribution":
                    row = table[(table["model"] == model) & (table["ood_set"] == name)]
                    if len(row):
                        label = f"{name} (AUC {row[f'auc_{score}'].iloc[0]:.2f})"
                dropped = len(values[name]) - len(v)
                if dropped:
                    label += f", {dropped} non-finite not shown"
                weights = np.full(len(v), 1.0 / max(len(v), 1))
                if name == "in-distribution":
                    axis.hist(v, bins=edges, weights=weights, color="0.75", label=label)
                else:
                    axis.hist(v, bins=edges, weights=weights, histtype="step", lw=1.1, label=label)
            if logarithmic:
                axis.set_xscale("log")
            axis.set_title(f"{model}: {SCORE_NAMES.get(score, score)}")
            axis.set_xlabel(f"{SCORE_NAMES.get(score, score)} (higher = more unusual)"
                            + (", log scale" if logarithmic else ""))
            axis.set_ylabel("fraction of images")
            axis.set_ylim(0, axis.get_ylim()[1] * 1.7)  # headroom: the legend sits above the histograms
            axis.legend(loc="best", fontsize=6)
    return figure


@styled
def _calibration_figure(points: pd.DataFrame, bins: pd.DataFrame, stats: pd.DataFrame):
    """Reconstruction error against classifier confidence per model, wrong predictions in a second colour."""
    from matplotlib.lines import Line2D

    models = list(dict.fromkeys(points["model"]))
    figure, axes = paper_figure(1, len(models), width="double" if len(models) > 1 else "single",
                                height=2.4, sharey=True)
    for axis, model in zip(axes[0], models):
        part, summary = points[points["model"] == model], bins[bins["model"] == model]
        correct = part["correct"].astype(bool)
        axis.scatter(part.loc[correct, "confidence"], part.loc[correct, "reconstruction_error"], s=3, alpha=0.35,
                     color=COLORS[0], linewidths=0)
        axis.scatter(part.loc[~correct, "confidence"], part.loc[~correct, "reconstruction_error"], s=8, alpha=0.9,
                     color=COLORS[3], linewidths=0.8, marker="x")
        axis.plot(summary["mean_confidence"], summary["mean_reconstruction_error"], "ko-", ms=3)
        axis.set_yscale("log")
        axis.set_xlabel("classifier confidence (max softmax)")
        row = stats[stats["model"] == model]
        rho = f", Spearman ρ = {row['spearman_rho'].iloc[0]:.2f}" if len(row) else ""
        axis.set_title(f"{model} ({len(part)} images{rho})")
    axes[0][0].set_ylabel("reconstruction MSE (log scale)")
    handles = [Line2D([], [], ls="", marker="o", color=COLORS[0], label="correct prediction"),
               Line2D([], [], ls="", marker="x", color=COLORS[3], label="wrong prediction"),
               Line2D([], [], color="k", marker="o", ms=3, label="mean per confidence bin")]
    figure.legend(handles=handles, loc="outside lower center", ncol=3)
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
            _write_defend_table(table, out_dir, stem)
            written.append(stem)
    _write_defend_table(summary_table(results), out_dir, "summary")
    (out_dir / "findings.md").write_text(findings_text(results))
    drawn = {}
    if len(results.purification):
        drawn["purification"] = _purification_figure(results.purification)
    if len(results.detection):
        drawn["detection"] = _detection_figure(results.detection)
    if results.ood_scores:
        drawn["ood_scores"] = _ood_figure(results.ood_scores, results.ood)
    if len(results.calibration_points):
        drawn["calibration"] = _calibration_figure(results.calibration_points, results.calibration_bins,
                                                   results.calibration_stats)
    figures = []
    for stem, figure in drawn.items():
        png = save_figure(figure, out_dir, stem)
        figures += [png.name, png.with_suffix(".pdf").name]
    write_manifest(out_dir, command=command, config=config, seed=seed, device=device,
                   tables=[*written, "summary"], figures=figures, notes=results.notes, priors=results.priors,
                   sample_ids=results.sample_ids, **manifest_extra)
    return out_dir
