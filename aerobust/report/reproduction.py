"""``aerobust reproduce``'s report: Tables 1-3 in the paper's layout, Fig. 2 over seeds, findings.md and the
manifest. :func:`aerobust.reproduce.reproduce` computes every number (a :class:`Reproduction`); here they
become tables, a figure and a page, through the one writer and style."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..attacks.ensemble import ONE_SWEEP_MEMBERS
from ..output_folder import claim_output_folder
from ..reproduce import (DAMAGE_RECON, LAMBDAS, LATENT_TARGET, MAIN_ROWS, NORMALISED_LATENT, OURS, PAPER_TABLE1,
                         PAPER_TABLE2, PAPER_TABLE3, TABLE1_CELLS, TABLE1_ROWS, TABLE2_CELLS, TABLE2_ROWS, TABLE3_ROWS,
                         LengthStudy, Reproduction, attack_strength_text, seed_image_matrix)
from ..runtime import write_manifest
from ..stats import hierarchical_interval
from .ensemble import ensemble_wins
from .style import paper_figure, styled
from .writer import save_figure, write_table

# Panels of the paper's Fig. 2: title and y-label (quantity, unit, which way is a stronger attack).
FIG2_PANELS = {
    "latent": ("(a) latent-space attack (eq. 12)", "‖g(x_a) − g(x_t)‖₂, code units\n(lower = stronger attack)"),
    "max-damage": ("(b) maximum-damage attack (eq. 13)",
                   "‖f(g(x_a)) − f(g(x))‖₂, pixel units\n(higher = stronger attack)"),
}


def row_colors(count: int) -> list:
    """``count`` distinct colours for the rows other than the highlighted one (which is black)."""
    import matplotlib

    return [matplotlib.colormaps["tab10"](k % 10) for k in range(count)]


@styled
def attack_loss_over_seeds_figure(curves: pd.DataFrame, models: list[str], ours: str):
    """Fig. 2 over seeds: attack loss against lambda with its 95 % interval (``curves``: model, attack, lambda,
    mean, low, high); ``ours`` in black and thicker; one legend with every row under both panels."""
    figure, axes = paper_figure(1, 2, width="double", height=3.2)
    axes = axes[0]
    colors = dict(zip([m for m in models if m != ours], row_colors(len(models))))
    for axis, (attack, (title, label)) in zip(axes, FIG2_PANELS.items()):
        for model in models:
            rows = curves[(curves["model"] == model) & (curves["attack"] == attack)].sort_values("lambda")
            if rows.empty or np.isnan(rows["mean"]).all():
                continue
            highlighted = model == ours
            line, = axis.plot(rows["lambda"], rows["mean"], marker="o", label=model,
                              color="black" if highlighted else colors[model], linewidth=2.4 if highlighted else 1.2,
                              zorder=3 if highlighted else 2)
            axis.fill_between(rows["lambda"], rows["low"], rows["high"], color=line.get_color(), alpha=0.12,
                              linewidth=0)
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("λ (L2 budget, pixel units)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].text(0.98, 0.98, "codes of different scales (GMM prior ~10x the VAEs'):\nnot comparable across models",
                 fontsize=6, color="#B00000", transform=axes[0].transAxes, va="top", ha="right")
    handles, names = axes[1].get_legend_handles_labels()
    figure.legend(handles, names, loc="outside lower center", ncol=min(len(names), 5), fontsize=7)
    return figure

# Robustness against fidelity: the two robustness columns of Table 2 (the ones every row has).
ROBUSTNESS_PANELS = {"latent": "latent attack: MS-SSIM(x_t, x̃_a)\n(lower = more robust)",
                     "max-damage": "maximum damage: MS-SSIM(x̃, x̃_a)\n(higher = more robust)"}


def robustness_fidelity_points(per_image: pd.DataFrame, fidelity: pd.DataFrame, models) -> pd.DataFrame:
    """One row per (model, attack, lambda): the robustness column's mean with its hierarchical 95 % interval
    (seeds, then images) and the clean reconstruction MS-SSIM's mean over seeds with the seed range."""
    metrics = {attack: metric for attack, metric, _ in (LATENT_TARGET, DAMAGE_RECON)}
    points = []
    for model in models:
        clean = fidelity.loc[fidelity["model"] == model, "reconstruction_msssim"]
        if clean.empty:
            continue
        for attack, metric in metrics.items():
            for lam in LAMBDAS:
                values = seed_image_matrix(per_image, model, attack, metric, lam)
                if values.size == 0:
                    continue
                interval = hierarchical_interval(values)
                points.append({"model": model, "attack": attack, "lambda": lam, "robustness": interval.mean,
                               "low": interval.low, "high": interval.high, "seeds": values.shape[0],
                               "fidelity": clean.mean(), "fidelity_min": clean.min(), "fidelity_max": clean.max()})
    return pd.DataFrame(points)


@styled
def robustness_fidelity_figure(points: pd.DataFrame, models: list[str], ours: str):
    """Every row's robustness (y, 95 % interval over seeds then images) against its clean reconstruction
    MS-SSIM (x, mean over seeds with their range); columns lambda 1, 3, 5, rows the two attacks."""
    figure, axes = paper_figure(len(ROBUSTNESS_PANELS), len(LAMBDAS), width="double", height=4.6)
    colors = dict(zip([m for m in models if m != ours], row_colors(len(models))))
    for row, (attack, label) in enumerate(ROBUSTNESS_PANELS.items()):
        for column, lam in enumerate(LAMBDAS):
            axis = axes[row][column]
            for model in models:
                point = points[(points["model"] == model) & (points["attack"] == attack) & (points["lambda"] == lam)]
                if point.empty:
                    continue
                p = point.iloc[0]
                axis.errorbar(p["fidelity"], p["robustness"],
                              xerr=[[p["fidelity"] - p["fidelity_min"]], [p["fidelity_max"] - p["fidelity"]]],
                              yerr=[[p["robustness"] - p["low"]], [p["high"] - p["robustness"]]], fmt="o",
                              markersize=4 if model == ours else 3, capsize=2, label=model,
                              color="black" if model == ours else colors[model], zorder=3 if model == ours else 2)
            axis.set_title(f"λ = {lam:g} (L2 budget, pixel units)", fontsize=8)
            axis.ticklabel_format(useOffset=False)  # MS-SSIM values as they are, not as offsets from 1
            axis.grid(alpha=0.3)
            if column == 0:
                axis.set_ylabel(label, fontsize=7)
            if row == len(ROBUSTNESS_PANELS) - 1:
                axis.set_xlabel("clean MS-SSIM(x, x̃) (higher = sharper)", fontsize=7)
    handles, names = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, names, loc="outside lower center", ncol=min(len(names), 6), fontsize=7)
    return figure


# -- the tables ------------------------------------------------------------------------------------------
CELLS_NOTE = ("Cells: mean [95 % interval] over training seeds, then images (hierarchical bootstrap), the paper's "
              "value in parentheses.")


def _cell(values: np.ndarray, paper: float | None, decimals: int, scale: float = 1.0) -> str:
    """"mean [low, high]" over training seeds then images (hierarchical bootstrap), the paper's value after."""
    if values.size == 0:
        return "n/a"
    interval = hierarchical_interval(values)
    text = (f"{interval.mean * scale:.{decimals}f} [{interval.low * scale:.{decimals}f}, "
            f"{interval.high * scale:.{decimals}f}]")
    return text + ("" if paper is None else f" (paper {paper:.{decimals}f})")


def _fidelity_cells(fidelity: pd.DataFrame, model: str, paper_fid: float) -> dict[str, str]:
    """Fidelity beside robustness: clean reconstruction MS-SSIM over seeds (the mean over the seeds' test
    images, with the seed range) and the generated-sample distance."""
    rows = fidelity[fidelity["model"] == model]

    def seeds_text(column: str, decimals: int) -> str:
        values = rows[column]
        return (f"{values.mean():.{decimals}f} (seeds {values.min():.{decimals}f}-{values.max():.{decimals}f}, "
                f"n = {len(values)})")

    return {"clean MS-SSIM(x, x̃)": seeds_text("reconstruction_msssim", 3),
            "Fréchet distance, small classifier": seeds_text("frechet_distance_small_classifier", 1)
            + f" (paper FID {paper_fid:.2f})"}


def robustness_table(per_image: pd.DataFrame, fidelity: pd.DataFrame, models, cells, paper: dict) -> pd.DataFrame:
    """Tables 1 and 2: per model, each (attack, metric) cell per lambda, then the fidelity cells.

    ``paper[model]`` holds one list of three values (lambda 1, 3, 5) per cell, then the paper's FID.
    """
    rows = {}
    for model in models:
        row = {}
        for (attack, metric, title), paper_values in zip(cells, paper[model][:len(cells)]):
            for lam, paper_value in zip(LAMBDAS, paper_values):
                row[f"{title} λ = {lam:g}"] = _cell(seed_image_matrix(per_image, model, attack, metric, lam),
                                                     paper_value, 2)
        row.update(_fidelity_cells(fidelity, model, paper[model][-1]))
        rows[model] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


def table3(per_image: pd.DataFrame, clean_accuracy: pd.DataFrame, models) -> pd.DataFrame:
    """Latent-classifier accuracy (%): clean on every test image, under the latent attack at lambda = 1;
    ``models`` (the rows' labels) in order, Table 3's rows first."""
    rows = {}
    for model in [m for m in models if m in TABLE3_ROWS] + [m for m in models if m not in TABLE3_ROWS]:
        paper = PAPER_TABLE3.get(model, (None, None))
        clean = clean_accuracy[clean_accuracy["model"] == model].pivot_table(
            index="seed", columns="image_id", values="correct", aggfunc="first").to_numpy(dtype=float)
        attacked = seed_image_matrix(per_image, model, "latent", "classifier_correct", 1.0)
        rows[model] = {f"clean accuracy (%), {clean.shape[1] if clean.size else 0} test images":
                       _cell(clean, paper[0], 1, 100.0),
                       "accuracy under the latent attack λ = 1 (%), audited images": _cell(attacked, paper[1], 1, 100.0)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


def write_reproduction(reproduction: Reproduction) -> dict[str, Path]:
    """Tables 1-3 (CSV, Markdown, LaTeX, HTML), the other tables (CSV, Markdown), Fig. 2, robustness against
    fidelity (figure and CSV), findings.md and manifest.json in ``reproduction.out_dir``; returns the paths by
    name."""
    out_dir, per_image = reproduction.out_dir, reproduction.per_image
    written = {}
    claim_output_folder(out_dir, "reproduce")
    tables = {"table1_mnist": (robustness_table(per_image, reproduction.fidelity, TABLE1_ROWS, TABLE1_CELLS,
                                                PAPER_TABLE1), f"Table 1 (MNIST), reproduced. {CELLS_NOTE}"),
              "table2_ablation": (robustness_table(per_image, reproduction.fidelity, TABLE2_ROWS, TABLE2_CELLS,
                                                   PAPER_TABLE2), f"Table 2 (ablation), reproduced. {CELLS_NOTE}"),
              "table3_classifier": (table3(per_image, reproduction.clean_accuracy, reproduction.rows),
                                    f"Table 3 (latent classifier accuracy, %), reproduced. {CELLS_NOTE}")}
    for stem, (table, caption) in tables.items():
        written[stem] = write_table(table, out_dir, stem, formats=("csv", "md", "tex", "html"), caption=caption,
                                    label=f"tab:reproduction-{stem}")["md"]
    lengths, wins = reproduction.lengths, _ensemble_wins(reproduction)
    for stem, table in (("per_seed", reproduction.per_seed), ("fidelity", reproduction.fidelity),
                        ("orderings", reproduction.orderings), ("lipschitz_certificate", reproduction.certificate),
                        ("legacy_protocol", reproduction.legacy), ("sanity_flags", reproduction.flag_counts),
                        *([("training_length", lengths)] if lengths is not None else []),
                        *([("ensemble_wins", wins), ("ensemble_wins_pooled", pooled_ensemble_wins(wins))]
                          if wins is not None else [])):
        written[stem] = write_table(table, out_dir, stem, formats=("csv", "md"))["csv"]
    written["fig2"] = save_figure(attack_loss_over_seeds_figure(reproduction.curves, list(reproduction.rows), OURS),
                                  out_dir, "fig2_attack_loss")
    points = robustness_fidelity_points(per_image, reproduction.fidelity, reproduction.rows)
    written["robustness_fidelity"] = write_table(points, out_dir, "robustness_fidelity", formats=("csv",))["csv"]
    written["fig_robustness_fidelity"] = save_figure(
        robustness_fidelity_figure(points, list(reproduction.rows), OURS), out_dir, "fig_robustness_fidelity")
    written["findings"] = out_dir / "findings.md"
    written["findings"].write_text(findings_text(reproduction))
    written["manifest"] = write_manifest(
        out_dir, command=reproduction.command, config=dataclasses.asdict(reproduction.config),
        seed=reproduction.config.audit_seed, device=reproduction.device, threads=reproduction.threads,
        wall_time_s_this_invocation=reproduction.wall_s, msssim=reproduction.msssim.as_dict(),
        **reproduction.provenance)
    return written


def write_length_study(study: LengthStudy) -> dict[str, Path]:
    """``training_length.csv/.md``, a short ``findings.md`` (sizes, attack, verdicts) and ``manifest.json``."""
    out_dir, config = study.out_dir, study.config
    claim_output_folder(out_dir, "reproduce-lengths")
    written = {"training_length": write_table(study.lengths, out_dir, "training_length", formats=("csv", "md"))["csv"]}
    counts = study.lengths["verdict"].value_counts().to_dict()
    written["findings"] = out_dir / "findings.md"
    written["findings"].write_text("\n".join([
        "# Ours against GMM-DAE by training length", "",
        f"Generated by `{study.command}` on {study.device} with {study.threads} torch thread(s); wall time of this "
        f"invocation {study.wall_s / 60:.1f} min (a resumed invocation counts only its own part).", "",
        f"- Training: {config.train_images} mnist-5k training images padded to 32 px, {list(config.training_lengths)} "
        f"epochs, batch 100, Adam {config.lr:g}; training seeds {list(config.seeds[:config.length_seeds])} per length.",
        f"- Audit: {config.images} test images x {config.trials} trials, lambda in {list(LAMBDAS)}, "
        f"{attack_strength_text(config)}, exact L2-box projection.",
        f"- Verdicts ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))}): difference Ours minus GMM-DAE "
        "(> 0: Ours more robust) with its 95 % interval from a hierarchical paired bootstrap (seeds, then images), "
        "Holm over every (length, attack, lambda) of this study.", "",
        study.lengths.round(4).to_markdown(index=False), ""]))
    written["manifest"] = write_manifest(
        out_dir, command=study.command, config=dataclasses.asdict(config), seed=config.audit_seed,
        device=study.device, threads=study.threads, wall_time_s_this_invocation=study.wall_s,
        runs_dir=str(study.runs_dir))
    return written


# -- findings --------------------------------------------------------------------------------------------
OTHER_DATASETS = (
    "The paper's other blocks are not reproduced here (this machine is offline; only MNIST ships with the "
    "package's test data). With the data downloadable, the same protocol runs as "
    "`aerobust audit --data fashion-mnist --download ...`, `--data svhn --download` and `--data celeba "
    "--download` after training each row with `aerobust train --data <same> --defense <row's defense>`; "
    "`aerobust reproduce` itself is MNIST-only.")


def _verdict_lines(orderings: pd.DataFrame) -> list[str]:
    lines = []
    for (group, better, worse, attack), rows in orderings.groupby(["group", "better", "worse", "attack"], sort=False):
        parts = []
        for _, r in rows.iterrows():
            if r["verdict"] == "no data":
                parts.append(f"λ={r['lambda']:g}: no data")
                continue
            parts.append(f"λ={r['lambda']:g}: {r['verdict']} ({r['difference']:+.3f} [{r['ci_low']:+.3f}, "
                         f"{r['ci_high']:+.3f}], Holm p {r['p_holm']:.3g})")
        lines.append(f"- {group} — {better} vs {worse}, {attack}: " + "; ".join(parts))
    return lines


def _ensemble_wins(reproduction: Reproduction) -> pd.DataFrame | None:
    """Per (model, attack, lambda), over every seed: how often the ensemble's extra restarts gave the worst case."""
    if reproduction.members is None:
        return None
    return ensemble_wins(reproduction.members, ONE_SWEEP_MEMBERS)


def pooled_ensemble_wins(wins: pd.DataFrame) -> pd.DataFrame:
    """The per-model win table summed over models: per attack and lambda, rows and the extra restarts' wins."""
    pooled = wins.groupby(["attack", "lambda"], sort=False)[["rows", "extra-restarts wins"]].sum()
    pooled["extra-restarts share"] = pooled["extra-restarts wins"] / pooled["rows"]
    return pooled.reset_index()


def _ensemble_lines(reproduction: Reproduction) -> list[str]:
    config, wins = reproduction.config, _ensemble_wins(reproduction)
    if wins is None:
        return ["No ensemble in this run (--ensemble-restarts 0): each sample's score is the attack's alone."]
    return [f"Each sample's score is the worst case of the attack as configured and the same with "
            f"{config.ensemble_restarts} more random restart(s) (one sweep; `ensemble_wins.csv` per model, "
            "`ensemble_wins_pooled.csv` below). A win counts any strict improvement, however small; where the "
            "extra restarts win often, the attack alone would have overstated robustness. Samples (every model "
            "and seed) whose worst case came from an extra restart:", "",
            pooled_ensemble_wins(wins).round(4).to_markdown(index=False), "",
            "The reference L-BFGS-B is not a member here (one scipy run per sample); the legacy comparison "
            f"(`legacy_protocol.csv`) runs it on {config.legacy_images} images of two models instead."]


def _blurriness_lines(orderings: pd.DataFrame) -> list[str]:
    """Does normalising the latent column by the target's own reconstruction change the verdicts?"""
    raw = orderings[(orderings["group"] == "Table 1: Ours beats every baseline") & (orderings["attack"] == "latent")]
    normalised = orderings[orderings["metric"] == NORMALISED_LATENT[1]]
    if raw.empty or normalised.empty:
        return ["No normalised latent column (no latent attack rows)."]
    joined = raw.merge(normalised, on=["worse", "lambda"], suffixes=("_raw", "_normalised"))
    changed = joined[joined["verdict_raw"] != joined["verdict_normalised"]]
    lines = [f"The latent column MS-SSIM(x_t, x̃_a) divided by MS-SSIM(x_t, x̃_t), the score a reconstruction of the "
             f"target itself gets: a blurry model cannot reach a high raw score because even its own reconstruction "
             f"of x_t scores low, so the raw column can make it look robust. Of {len(joined)} (baseline, λ) verdicts "
             f"of 'Ours beats every baseline' on the latent column, {len(changed)} change when normalised:"]
    lines += [f"- vs {r['worse']}, λ={r['lambda']:g}: {r['verdict_raw']} → {r['verdict_normalised']}"
              for _, r in changed.iterrows()] or ["- none"]
    return lines


def findings_text(reproduction: Reproduction) -> str:
    """findings.md: scope, sizes against the paper, every verdict, fidelity beside robustness, why numbers differ."""
    config, orderings, fidelity = reproduction.config, reproduction.orderings, reproduction.fidelity
    certificate, legacy, lengths = reproduction.certificate, reproduction.legacy, reproduction.lengths
    msssim, flag_counts = reproduction.msssim, reproduction.flag_counts
    counts = orderings["verdict"].value_counts().to_dict()
    below = int((legacy["strength_ratio_ours_over_legacy"] < 0.95).sum())
    ratio_text = ("Not run in this invocation (--legacy-images 0, or its models were not trained here)."
                  if legacy.empty else legacy.groupby(["attack", "model", "lambda"])[
                      "strength_ratio_ours_over_legacy"].describe(percentiles=[0.05, 0.5])[
                      ["count", "min", "5%", "50%", "max"]].round(3).to_markdown())
    certificate_ok = bool((certificate["measured_max_damage_max"] <= certificate["certified_max_damage"]
                           * (1 + 1e-5)).all()) if len(certificate) else None
    main_seeds = list(config.seeds)
    other_seeds = list(config.seeds[:config.other_row_seeds])
    lines = [
        "# Reproducing the reference paper's MNIST tables: findings", "",
        f"Generated by `{reproduction.command}` on {reproduction.device} with {reproduction.threads} torch thread(s); "
        f"wall time of this invocation {reproduction.wall_s / 60:.1f} min (a resumed invocation counts only its own part). Tables: "
        "`table1_mnist.md`, `table2_ablation.md`, `table3_classifier.md` (cells: mean [95 % interval over training "
        "seeds, then images], the paper's value in parentheses); every per-seed number in `per_seed.csv`; every "
        "verdict in `orderings.csv`.", "",
        "## Scope", OTHER_DATASETS, "",
        "## Sizes (this run) against the paper",
        f"- Training: {config.train_images} mnist-5k training images padded to 32 px, {config.epochs} epochs, "
        f"batch 100, Adam {config.lr:g} (every row alike); seeds {main_seeds} for {', '.join(MAIN_ROWS)}, seeds "
        f"{other_seeds} for the other rows. The paper trains on the 60k MNIST images for hundreds of epochs at "
        "2e-4, once.",
        f"- Audit: {config.images} test images (one fixed plan for every model and seed) x {config.trials} trials, "
        f"lambda in {list(LAMBDAS)}, {attack_strength_text(config)} "
        "(worst case kept), exact L2-box projection; the paper: 100 images x 10 trials, L-BFGS-B.",
        f"- MS-SSIM: preset `{config.msssim}` ({json.dumps(msssim.as_dict())}).",
        f"- Latent classifier: MLP head, {config.classifier_epochs} epochs on {config.classifier_images} "
        "training codes; clean accuracy on every mnist-5k test image, accuracy under the latent-space attack "
        "(eq. 12) at lambda = 1 on the audited images.",
        "- Fidelity: Fréchet distance of the features of a small CNN trained here (not Inception; not comparable "
        f"in scale with the paper's FID) between {config.generated_samples} generated samples and as many test "
        f"images; clean reconstruction MSE and MS-SSIM on {int(fidelity['test_images'].iloc[0])} test images in "
        "`fidelity.csv`.", "",
        "## Which of the paper's orderings hold",
        f"Verdict counts over {len(orderings)} (claim, lambda) pairs: "
        + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + ". Each claim is tested on the difference "
        "better minus worse (signed so that > 0 means the paper's ordering), with a 95 % interval and p-value "
        "from a hierarchical paired bootstrap (training seeds of each model resampled independently, then the "
        "shared images), Holm-corrected over ALL claims: 'holds' needs an adjusted p < 0.05 and an interval "
        "above 0, 'reversed' one below 0, anything else is 'not established' at this sample size. A model that "
        "ignores its input scores as 'robust' on the maximum-damage column: read every robustness cell beside "
        "the clean reconstruction MS-SSIM in Tables 1 and 2.", "", *_verdict_lines(orderings), "",
        "## Is the latent column a blurriness effect?", *_blurriness_lines(orderings), "",
        "## Attack ensemble: which member gave each sample's worst case", *_ensemble_lines(reproduction), "",
        "## Sanity flags of the audits (summed over seeds and models)",
        (flag_counts.to_markdown(index=False) if len(flag_counts) else "No flag was raised."), "",
        "## Fidelity beside robustness (mean over seeds; per seed in `fidelity.csv`)",
        "A robust-looking model with poor clean reconstructions is not robust, it ignores its input.", "",
        fidelity.groupby("model", sort=False)[["reconstruction_msssim", "reconstruction_mse",
                                               "frechet_distance_small_classifier"]].mean().round(4).to_markdown(),
        "",
    ]
    if lengths is not None and len(lengths):
        lines += ["## Ours against GMM-DAE by training length",
                  f"Training seeds {list(config.seeds[:config.length_seeds])} per length; difference Ours minus GMM-DAE (> 0: Ours more robust), "
                  "95 % hierarchical interval, Holm over this study:", "",
                  lengths.round(4).to_markdown(index=False), ""]
    lines += [
        "## Why numbers differ from the paper",
        "- Budget: far less training (data and epochs) than the paper; small models trained briefly have "
        "blurrier reconstructions, which raises MS-SSIM between any two reconstructions and changes every "
        "column's scale (the normalised latent column above tests how much of the latent column this explains).",
        "- Attack strength: our optimizer keeps the worst case over restarts and projects exactly onto the L2 ball "
        "intersected with the pixel box; the reference code rescaled onto the ball (below: the strength ratio on "
        "the same images). A stronger attack lowers every robustness column.",
        "- MS-SSIM settings: the paper's numbers came from an older implementation; we use the preset named "
        "above and record it; other settings move values by several hundredths.",
        "- Seeds: the paper reports one training run; here every interval includes the spread over training seeds.",
        "",
        "## Protocol differences from the reference code",
        "- Its attack scripts fix the attacked image index inside the loop, so their 'mean over 100 images' is a "
        f"mean over restarts of one image; here {config.images} distinct test images are attacked.",
        "- Its maximum-damage L-BFGS-B used memory 100 and pgtol 1e-20 (our preset "
        "`aerobust.attacks.optimizers.REFERENCE_CODE_LBFGS`) and enforced the budget by rescaling the noise "
        "onto the ball; our audit uses batched projected steps with exact projection.",
        f"- Our attack against that legacy protocol on the same {config.legacy_images} images and targets "
        f"(L-BFGS-B maxiter {config.legacy_maxiter}; strength ratio > 1 means ours is the stronger attack; "
        f"{below} of {len(legacy)} (image, λ, model, attack) ratios are below 0.95, every ratio in "
        "`legacy_protocol.csv`):", "", ratio_text, "",
        "## LipschitzVAE certificate",
        ("No LipschitzVAE rows." if certificate_ok is None else
         f"The certified bound M_f M_mu lambda on the mean-path reconstruction change "
         f"{'bounds every measured maximum-damage loss' if certificate_ok else 'is VIOLATED by a measured loss'}"
         " (`lipschitz_certificate.csv`: constants from the exact spectral norms, per seed and lambda)."), "",
        "## Training cost",
        "Per-epoch times of this run are in `fidelity.csv` (iteration_ms_median) but were taken on a shared "
        "machine in whatever order the rows ran; cost ratios between defenses (the paper: SE about 2x Ours) are "
        "quoted only from `bench/train_cost.py`, which alternates the rows and reports its spread.", "",
    ]
    return "\n".join(lines)
