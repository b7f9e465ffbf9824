"""The reference paper's MNIST tables, reproduced under one protocol: ``aerobust reproduce``.

Trains every row of the paper's Tables 1-3 (VAE, beta-VAE, beta-TCVAE, LipschitzVAE, SE, AAVE,
GMM-DAE, Augmented in both cross-block readings, Ours = coupled-ks) on mnist-5k for several training
seeds, audits every checkpoint with the paper's two attacks on one fixed plan of test images and
targets (the same for every seed and model, so comparisons are paired), and writes, under ``out``:

* ``table1_mnist``, ``table2_ablation``, ``table3_classifier``: the paper's layout, each cell
  ``mean ± std over seeds [paper value]``; ``per_seed.csv``: every per-seed number behind them;
* ``fig2_attack_loss.png``: attack loss against lambda, mean ± std over seeds;
* ``fidelity``: clean reconstruction quality and a Fréchet distance of generated samples;
* ``lipschitz_certificate``: the LipschitzVAE bound beside its measured maximum damage;
* ``legacy_protocol``: our PGD against the reference code's L-BFGS-B settings on the same images;
* ``orderings``: every ordering the paper claims, per seed, with its verdict; ``findings.md``;
  ``manifest.json``.

Checkpoints and audits go to ``runs_dir`` (not committed); a rerun resumes both (training's
``resume`` and the audit's finished blocks), so an interrupted reproduction continues where it stopped.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats
import torch

from .attacks.optimizers import REFERENCE_CODE_LBFGS
from .audit import AuditConfig, ModelSpec, run_audit
from .checkpoints import resolve_model
from .datasets import load_dataset
from .defenses.lipschitz import certified_reconstruction_bound
from .errors import AerobustError
from .metrics import l2_distance, ms_ssim, resolve_msssim_settings
from .registry import ATTACKS
from .report.writer import save_figure, write_table
from .runtime import resolve_device, write_manifest
from .training import has_training_run, train

VAE_ARCH, AE_ARCH, LIPSCHITZ_ARCH = "mlp-vae-32", "mlp-ae-32", "mlp-vae-lipschitz-32"


@dataclasses.dataclass(frozen=True)
class Row:
    label: str
    defense: str
    architecture: str
    options: tuple = ()


ROWS = (
    Row("VAE", "vae", VAE_ARCH), Row("beta-VAE", "beta-vae", VAE_ARCH), Row("beta-TCVAE", "beta-tcvae", VAE_ARCH),
    Row("LipschitzVAE", "lipschitz-vae", LIPSCHITZ_ARCH), Row("SE", "smooth-encoder", VAE_ARCH),
    Row("AAVE", "aave", VAE_ARCH), Row("GMM-DAE", "gmm-dae", AE_ARCH),
    Row("Augmented-free", "augmented", AE_ARCH, (("cross_block", "free"),)),
    Row("Augmented-penalized", "augmented", AE_ARCH, (("cross_block", "penalized"),)),
    Row("Ours", "coupled-ks", AE_ARCH),
)
OURS = "Ours"
TABLE1_ROWS = ("VAE", "beta-VAE", "beta-TCVAE", "LipschitzVAE", "SE", "AAVE", OURS)
TABLE2_ROWS = ("GMM-DAE", "Augmented-free", "Augmented-penalized", OURS)
TABLE3_ROWS = ("VAE", "beta-TCVAE", "LipschitzVAE", "SE", OURS)
LAMBDAS = (1.0, 3.0, 5.0)
# Margins smaller than this on every seed are ties: the paper's tables print two decimals (MS-SSIM)
# and accuracy fractions differ by less than one percentage point.
TIE_TOLERANCE = 0.01

# (attack, result column, title, lower is a stronger defense?)
LATENT_TARGET = ("latent", "msssim_target_advrecon", "latent: MSSSIM(x_r, x~_a) (lower = more robust)")
LATENT_INPUT = ("latent", "msssim_input_adv", "latent: MSSSIM(x_r, x_a)")
DAMAGE_RECON = ("max-damage", "msssim_recon_advrecon", "max damage: MSSSIM(x~_r, x~_a) (higher = more robust)")
DAMAGE_INPUT = ("max-damage", "msssim_input_adv", "max damage: MSSSIM(x_r, x_a)")
TABLE1_CELLS = (LATENT_TARGET, LATENT_INPUT, DAMAGE_RECON, DAMAGE_INPUT)
TABLE2_CELLS = (LATENT_TARGET, DAMAGE_RECON)

# The paper's MNIST values (reference/robust-gmm-dae-paper.txt, Tables 1-3), per cell in TABLE1_CELLS
# order and lambda 1, 3, 5, then FID.
PAPER_TABLE1 = {
    "VAE": ([0.55, 0.78, 0.89], [0.99, 0.94, 0.87], [0.64, 0.27, 0.08], [0.98, 0.93, 0.86], 43.21),
    "beta-VAE": ([0.52, 0.73, 0.86], [0.99, 0.92, 0.86], [0.65, 0.36, 0.22], [0.98, 0.93, 0.87], 42.72),
    "beta-TCVAE": ([0.53, 0.69, 0.83], [0.98, 0.92, 0.86], [0.73, 0.38, 0.28], [0.98, 0.93, 0.87], 45.61),
    "LipschitzVAE": ([0.50, 0.68, 0.79], [0.98, 0.93, 0.89], [0.75, 0.41, 0.33], [0.98, 0.93, 0.86], 59.45),
    "SE": ([0.49, 0.62, 0.68], [0.98, 0.92, 0.86], [0.90, 0.60, 0.54], [0.98, 0.93, 0.86], 47.34),
    "AAVE": ([0.49, 0.59, 0.62], [0.98, 0.91, 0.83], [0.80, 0.65, 0.59], [0.97, 0.89, 0.86], 48.47),
    "Ours": ([0.38, 0.47, 0.60], [0.95, 0.90, 0.80], [0.92, 0.82, 0.69], [0.98, 0.89, 0.78], 39.37),
}
# Table 2 has one Augmented row; both of our readings are compared with it.
PAPER_TABLE2 = {
    "GMM-DAE": ([0.54, 0.70, 0.82], [0.75, 0.37, 0.30], 38.89),
    "Augmented-free": ([0.47, 0.59, 0.71], [0.79, 0.56, 0.54], 40.16),
    "Augmented-penalized": ([0.47, 0.59, 0.71], [0.79, 0.56, 0.54], 40.16),
    "Ours": ([0.38, 0.47, 0.60], [0.92, 0.82, 0.69], 39.37),
}
PAPER_TABLE3 = {"VAE": (92.16, 58.85), "beta-TCVAE": (93.02, 61.06), "LipschitzVAE": (90.78, 62.00),
                "SE": (93.81, 68.65), "Ours": (96.08, 91.78)}


@dataclasses.dataclass
class ReproductionConfig:
    """Sizes of one reproduction; ``quick()`` is the minutes-long smoke size."""

    seeds: tuple = (0, 1, 2)
    epochs: int = 30
    # The paper: 2e-4 for hundreds of epochs on 60k images. At 2e-4 and 20 epochs on 4k images the models
    # barely trained (seed 0: GMM-DAE/Ours training reconstruction MSE 0.043-0.045, latent classifiers
    # 28-51% clean on the audited images), so every row uses 1e-3.
    lr: float = 1e-3
    train_images: int = 4000
    images: int = 100
    trials: int = 3
    steps: int = 50
    restarts: int = 1
    msssim: str = "paper"
    classifier_epochs: int = 30
    classifier_images: int = 4000
    generated_samples: int = 500
    fidelity_images: int = 1000  # test images whose clean reconstructions are scored (mnist-5k has 1,000)
    legacy_images: int = 5
    legacy_maxiter: int = 15000
    legacy_models: tuple = ("VAE", OURS)
    audit_seed: int = 0

    @classmethod
    def quick(cls) -> "ReproductionConfig":
        return cls(epochs=2, train_images=500, images=10, trials=1, steps=10, classifier_epochs=5,
                   classifier_images=1000, generated_samples=200, legacy_images=2, legacy_maxiter=200)

    def validate(self):
        if len(self.seeds) < 1 or len(set(self.seeds)) != len(self.seeds):
            raise AerobustError(f"give distinct training seeds; got {list(self.seeds)}")
        for key in ("epochs", "train_images", "images", "trials", "steps", "restarts", "classifier_epochs",
                    "generated_samples", "fidelity_images", "legacy_maxiter"):
            if getattr(self, key) < 1:
                raise AerobustError(f"{key} must be at least 1; got {getattr(self, key)}")
        if not self.lr > 0:
            raise AerobustError(f"the learning rate must be positive; got {self.lr}")
        resolve_msssim_settings(self.msssim)


def _audit_config(config: ReproductionConfig, checkpoints: dict[str, Path]) -> AuditConfig:
    attack = {"steps": config.steps, "restarts": config.restarts}
    return AuditConfig(models=[ModelSpec(label, checkpoint=str(path)) for label, path in checkpoints.items()],
                       data="mnist-5k", split="test", pad_to=32, attacks=("latent", "max-damage"),
                       lambdas=LAMBDAS, images=config.images, trials=config.trials, seed=config.audit_seed,
                       attack_options={"latent": dict(attack), "max-damage": dict(attack)}, msssim=config.msssim,
                       classifier_epochs=config.classifier_epochs, classifier_images=config.classifier_images)


# -- per-seed numbers --------------------------------------------------------------------------------------
def per_seed_statistics(results: pd.DataFrame, seed: int) -> pd.DataFrame:
    """One row per (model, attack, lambda, metric): the mean over every image and trial, and their count."""
    metrics = ["attack_loss", "msssim_target_advrecon", "msssim_input_adv", "msssim_recon_advrecon",
               "classifier_correct", "clean_classifier_correct"]
    long = results.melt(id_vars=["model", "attack", "lambda"], value_vars=metrics, var_name="metric").dropna()
    grouped = long.groupby(["model", "attack", "lambda", "metric"], sort=False)["value"]
    stats = grouped.agg(["mean", "count"]).reset_index().rename(columns={"mean": "value", "count": "n"})
    stats.insert(0, "seed", seed)
    return stats


def _seed_values(per_seed: pd.DataFrame, model: str, attack: str, metric: str, lam: float) -> pd.Series:
    rows = per_seed[(per_seed["model"] == model) & (per_seed["attack"] == attack) & (per_seed["metric"] == metric)
                    & (per_seed["lambda"] == lam)]
    return rows.set_index("seed")["value"].sort_index()


def _cell(values: pd.Series, paper: float | None, decimals: int, scale: float = 1.0) -> str:
    if values.empty:
        return "n/a"
    mean, std = values.mean() * scale, values.std(ddof=1) * scale if len(values) > 1 else float("nan")
    text = f"{mean:.{decimals}f}" + ("" if np.isnan(std) else f" ± {std:.{decimals}f}")
    return text + ("" if paper is None else f" [{paper:.{decimals}f}]")


def _fidelity_cells(fidelity: pd.DataFrame, model: str, paper_fid: float) -> dict[str, str]:
    """Fidelity beside robustness: clean reconstruction MS-SSIM and the generated-sample distance."""
    rows = fidelity[fidelity["model"] == model]
    return {"clean recon. MSSSIM(x, x~)": _cell(rows["reconstruction_msssim"].reset_index(drop=True), None, 2),
            "Fréchet distance (small classifier) [paper: FID]":
                _cell(rows["frechet_distance_small_classifier"].reset_index(drop=True), None, 1)
                + f" [FID {paper_fid:.2f}]"}


def robustness_table(per_seed: pd.DataFrame, fidelity: pd.DataFrame, models, cells, paper: dict) -> pd.DataFrame:
    """Tables 1 and 2: per model, each (attack, metric) cell per lambda, then the fidelity cells.

    ``paper[model]`` holds one list of three values (lambda 1, 3, 5) per cell, then the paper's FID.
    """
    rows = {}
    for model in models:
        row = {}
        for (attack, metric, title), paper_values in zip(cells, paper[model][:len(cells)]):
            for lam, paper_value in zip(LAMBDAS, paper_values):
                row[f"{title} λ={lam:g}"] = _cell(_seed_values(per_seed, model, attack, metric, lam), paper_value, 2)
        row.update(_fidelity_cells(fidelity, model, paper[model][-1]))
        rows[model] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


def table3(per_seed: pd.DataFrame) -> pd.DataFrame:
    rows = {}
    for model in [m for m in (r.label for r in ROWS) if m in TABLE3_ROWS] + \
            [r.label for r in ROWS if r.label not in TABLE3_ROWS]:
        paper = PAPER_TABLE3.get(model, (None, None))
        clean = _seed_values(per_seed, model, "latent", "clean_classifier_correct", 1.0)
        attacked = _seed_values(per_seed, model, "latent", "classifier_correct", 1.0)
        rows[model] = {"clean acc. (%)": _cell(clean, paper[0], 1, 100.0),
                       "acc. under latent attack λ=1 (%)": _cell(attacked, paper[1], 1, 100.0)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


# -- orderings ------------------------------------------------------------------------------------------
def _claims() -> list[tuple[str, str, str, str, str, float, bool]]:
    """(group, better, worse, attack, metric, lambda, higher is better) for every ordering the paper states."""
    claims = []
    robust = (("latent", "msssim_target_advrecon", False), ("max-damage", "msssim_recon_advrecon", True))
    for baseline in TABLE1_ROWS[:-1]:
        claims += [("Table 1: Ours beats every baseline", OURS, baseline, a, m, lam, up)
                   for a, m, up in robust for lam in LAMBDAS]
    for augmented in ("Augmented-free", "Augmented-penalized"):
        claims += [("Table 2: Ours beats Augmented", OURS, augmented, a, m, lam, up)
                   for a, m, up in robust for lam in LAMBDAS]
        claims += [("Table 2: Augmented beats GMM-DAE", augmented, "GMM-DAE", a, m, lam, up)
                   for a, m, up in robust for lam in LAMBDAS]
    claims += [("Table 2: Ours beats GMM-DAE", OURS, "GMM-DAE", a, m, lam, up) for a, m, up in robust for lam in LAMBDAS]
    claims += [("Sec. 4: GMM-DAE beats VAE", "GMM-DAE", "VAE", a, m, lam, up) for a, m, up in robust for lam in LAMBDAS]
    for baseline in TABLE3_ROWS[:-1]:
        claims.append(("Table 3: Ours' latent classifier is most accurate under attack", OURS, baseline, "latent",
                       "classifier_correct", 1.0, True))
    return claims


def ordering_verdicts(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per claim: the per-seed differences (better minus worse, signed so > 0 means the claim holds),
    whether it holds on every seed, and a one-sided paired t-test over seeds."""
    rows = []
    for group, better, worse, attack, metric, lam, higher in _claims():
        a = _seed_values(per_seed, better, attack, metric, lam)
        b = _seed_values(per_seed, worse, attack, metric, lam)
        seeds = a.index.intersection(b.index)
        diff = (a[seeds] - b[seeds]) * (1 if higher else -1)
        tie = len(diff) > 0 and bool((diff.abs() < TIE_TOLERANCE).all())
        p_value = float("nan")
        # Ties and identical margins have no meaningful t statistic (scipy warns of precision loss).
        if len(diff) > 1 and not tie and float(diff.std(ddof=1)) > 1e-9:
            p_value = float(scipy.stats.ttest_1samp(diff.to_numpy(), 0.0, alternative="greater").pvalue)
        if len(diff) == 0:
            verdict = "no data"
        elif tie:
            verdict = "tie (every seed within 0.01)"
        elif bool((diff > 0).all()):
            verdict = "holds (every seed)"
        elif p_value < 0.05:
            verdict = "holds (paired t-test)"
        elif bool((diff < 0).all()):
            verdict = "reversed (every seed)"
        else:
            verdict = "not established"
        rows.append({"group": group, "better": better, "worse": worse, "attack": attack, "metric": metric,
                     "lambda": lam, "better_mean": a[seeds].mean(), "worse_mean": b[seeds].mean(),
                     "seeds": len(diff), "seeds_holding": int((diff > 0).sum()),
                     "per_seed_margin": ", ".join(f"{v:+.3f}" for v in diff), "p_value": p_value,
                     "verdict": verdict})
    return pd.DataFrame(rows)


# -- figures, fidelity, certificate, legacy protocol ------------------------------------------------------
def attack_loss_figure(per_seed: pd.DataFrame, models: list[str]):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    titles = {"latent": "(a) latent-space attack (eq. 12), lower = stronger attack",
              "max-damage": "(b) maximum-damage attack (eq. 13), higher = stronger attack"}
    for axis, attack in zip(axes, ("latent", "max-damage")):
        for model in models:
            stats = [_seed_values(per_seed, model, attack, "attack_loss", lam) for lam in LAMBDAS]
            means = np.array([s.mean() for s in stats])
            stds = np.array([s.std(ddof=1) if len(s) > 1 else 0.0 for s in stats])
            line, = axis.plot(LAMBDAS, means, marker="o", label=model)
            axis.fill_between(LAMBDAS, means - stds, means + stds, color=line.get_color(), alpha=0.15)
        axis.set_title(titles[attack], fontsize=9)
        axis.set_xlabel("λ (L2 budget)")
        axis.set_ylabel("attack loss (mean ± std over seeds)")
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    figure.tight_layout()
    return figure


def _fidelity_row(label: str, seed: int, result, steps_per_epoch: int, test, features, reference, msssim) -> dict:
    from .adapter import wrap
    from .fidelity import decode_codes, frechet_distance_small_classifier

    model = wrap(result.model, device="cpu")
    with torch.no_grad(), model.frozen():
        recon = model.reconstruct(test.images)
        codes = result.defense.sample_codes(len(reference), torch.Generator().manual_seed(seed))
    generated = decode_codes(model, codes.cpu())
    history = pd.DataFrame(result.history)
    return {"model": label, "seed": seed, "test_images": len(test),
            "reconstruction_mse": float((recon - test.images).pow(2).mean()),
            "reconstruction_l2": float(l2_distance(recon, test.images).mean()),
            "reconstruction_msssim": float(ms_ssim(test.images, recon, msssim).mean()),
            "frechet_distance_small_classifier": frechet_distance_small_classifier(generated, reference, features),
            "generated_samples": len(reference),
            "iteration_ms_median": 1000 * float(history["epoch_time_s"].median()) / steps_per_epoch,
            "epochs": len(history)}


def lipschitz_certificate(per_seed: pd.DataFrame, sidecars: dict[tuple[int, str], dict],
                          max_damage: dict[int, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for (seed, label), sidecar in sidecars.items():
        constants = sidecar.get("defense_config", {}).get("lipschitz_constants")
        if constants is None:
            continue
        for lam in LAMBDAS:
            losses = max_damage[seed]
            losses = losses[(losses["model"] == label) & (losses["lambda"] == lam)]["attack_loss"]
            rows.append({"model": label, "seed": seed, "lambda": lam, "lipschitz_mean_path": constants["mean"],
                         "lipschitz_decoder": constants["decoder"],
                         "certified_max_damage": certified_reconstruction_bound(lam, constants["mean"],
                                                                                constants["decoder"]),
                         "measured_max_damage_max": float(losses.max()),
                         "measured_max_damage_mean": float(losses.mean()), "attacked": int(losses.count())})
    return pd.DataFrame(rows)


def legacy_comparison(config: ReproductionConfig, checkpoints: dict[str, Path], plan_ids: list[int], device
                      ) -> pd.DataFrame:
    """Maximum-damage loss of our PGD over that of the reference code's L-BFGS-B, same images and lambdas."""
    pool = load_dataset("mnist-5k", "test", pad_to=32)
    position = {int(i): k for k, i in enumerate(pool.ids.tolist())}
    index = torch.tensor([position[i] for i in plan_ids[: config.legacy_images]])
    x, ids = pool.images[index], pool.ids[index]
    ours = ATTACKS.create("max-damage", steps=config.steps, restarts=config.restarts)
    legacy = ATTACKS.create("max-damage", **REFERENCE_CODE_LBFGS, lbfgs_maxiter=config.legacy_maxiter,
                            sanity_checks=False)
    rows = []
    for label in config.legacy_models:
        model, _ = resolve_model(checkpoint=checkpoints[label], device=device)
        timings, losses = {}, {}
        for name, attack in (("ours", ours), ("legacy", legacy)):
            start = time.perf_counter()
            losses[name] = attack.sweep(model, x.to(model.device), list(LAMBDAS), 1, config.audit_seed,
                                        image_ids=ids).attack_loss.cpu()[:, 0]
            timings[name] = time.perf_counter() - start
        for li, lam in enumerate(LAMBDAS):
            for k in range(len(x)):
                rows.append({"model": label, "lambda": lam, "image_id": int(ids[k]),
                             "ours_pgd_loss": float(losses["ours"][li, k]),
                             "legacy_lbfgs_loss": float(losses["legacy"][li, k]),
                             "ratio_ours_over_legacy": float(losses["ours"][li, k] / losses["legacy"][li, k]),
                             "ours_seconds_all": timings["ours"], "legacy_seconds_all": timings["legacy"]})
    return pd.DataFrame(rows)


# -- the whole reproduction --------------------------------------------------------------------------------
def reproduce(out_dir, runs_dir, config: ReproductionConfig | None = None, *, device: str = "auto",
              quiet: bool = False, command: str = "aerobust reproduce") -> dict[str, Path]:
    """Train, audit and tabulate every row for every seed (resuming whatever is already done)."""
    config = config or ReproductionConfig()
    config.validate()
    started = time.perf_counter()
    out_dir, runs_dir = Path(out_dir), Path(runs_dir)
    if runs_dir.resolve().is_relative_to(out_dir.resolve()):
        raise AerobustError("--runs must lie outside --out: checkpoints and audit blocks are not part of the report")
    dev = resolve_device(device)
    msssim = resolve_msssim_settings(config.msssim)
    train_set = load_dataset("mnist-5k", "train", pad_to=32, limit=config.train_images)
    test_set = load_dataset("mnist-5k", "test", pad_to=32)
    from .fidelity import SmallClassifierFeatures

    features = SmallClassifierFeatures(train_set.images, train_set.labels, epochs=3, seed=0, device="cpu")
    # mnist-5k's test split is sorted by class: a seeded half is the real reference of the Fréchet distance.
    order = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(0))
    reference = test_set.images[order[: config.generated_samples]]
    fidelity_set = test_set.subset(order[: config.fidelity_images])
    per_seed_frames, fidelity_rows, sidecars, max_damage, checkpoints_by_seed = [], [], {}, {}, {}
    for seed in config.seeds:
        checkpoints = {}
        for row in ROWS:
            run_dir = runs_dir / f"seed{seed}" / row.label
            result = train(row.defense, row.architecture, train_set, epochs=config.epochs, lr=config.lr, seed=seed,
                           device=dev, out_dir=run_dir, resume=has_training_run(run_dir), quiet=quiet,
                           arch_kwargs={"input_shape": list(train_set.image_shape)}, **dict(row.options))
            checkpoints[row.label] = run_dir / "model.pt"
            sidecars[(seed, row.label)] = json.loads((run_dir / "model.json").read_text())
            steps = len(train_set) // result.config["batch_size"]
            fidelity_rows.append(_fidelity_row(row.label, seed, result, steps, fidelity_set, features, reference,
                                               msssim))
        results = run_audit(_audit_config(config, checkpoints), runs_dir / f"audit-seed{seed}", device=str(dev),
                            quiet=quiet, report=False)
        per_seed_frames.append(per_seed_statistics(results, seed))
        max_damage[seed] = results[results["attack"] == "max-damage"]
        checkpoints_by_seed[seed] = checkpoints
    per_seed = pd.concat(per_seed_frames, ignore_index=True)
    fidelity = pd.DataFrame(fidelity_rows)
    plan_ids = json.loads((runs_dir / f"audit-seed{config.seeds[0]}" / "plan.json").read_text())["image_ids"]
    legacy = legacy_comparison(config, checkpoints_by_seed[config.seeds[0]], plan_ids, dev)
    orderings = ordering_verdicts(per_seed)
    certificate = lipschitz_certificate(per_seed, sidecars, max_damage)

    written = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {"table1_mnist": robustness_table(per_seed, fidelity, TABLE1_ROWS, TABLE1_CELLS, PAPER_TABLE1),
              "table2_ablation": robustness_table(per_seed, fidelity, TABLE2_ROWS, TABLE2_CELLS, PAPER_TABLE2),
              "table3_classifier": table3(per_seed)}
    for stem, table in tables.items():
        written[stem] = write_table(table, out_dir, stem, formats=("csv", "md", "tex", "html"))["md"]
    for stem, table in (("per_seed", per_seed), ("fidelity", fidelity), ("orderings", orderings),
                        ("lipschitz_certificate", certificate), ("legacy_protocol", legacy)):
        written[stem] = write_table(table, out_dir, stem, formats=("csv", "md"))["csv"]
    written["fig2"] = save_figure(attack_loss_figure(per_seed, [r.label for r in ROWS]), out_dir, "fig2_attack_loss")
    wall = time.perf_counter() - started
    written["findings"] = out_dir / "findings.md"
    written["findings"].write_text(findings_text(config, orderings, fidelity, certificate, legacy, msssim, wall,
                                                 command))
    write_manifest(out_dir, command=command, config=dataclasses.asdict(config), seed=config.audit_seed, device=dev,
                   threads=torch.get_num_threads(), wall_time_s_this_invocation=wall, msssim=msssim.as_dict(),
                   rows=[dataclasses.asdict(r) for r in ROWS], runs_dir=str(runs_dir),
                   train_data={"spec": "mnist-5k", "split": "train", "n": len(train_set), "pad_to": 32},
                   test_data={"spec": "mnist-5k", "split": "test", "n": len(test_set), "pad_to": 32},
                   checkpoint_sha256={f"seed{s}/{label}": sidecar.get("weights_sha256")
                                      for (s, label), sidecar in sidecars.items()},
                   defense_configs={f"seed{s}/{label}": sidecar.get("defense_config")
                                    for (s, label), sidecar in sidecars.items()},
                   audit_plan_image_ids=plan_ids, legacy_attack={**REFERENCE_CODE_LBFGS,
                                                                 "lbfgs_maxiter": config.legacy_maxiter})
    written["manifest"] = out_dir / "manifest.json"
    return written


# -- findings --------------------------------------------------------------------------------------------
def _verdict_lines(orderings: pd.DataFrame) -> list[str]:
    lines = []
    for (group, better, worse, attack), rows in orderings.groupby(["group", "better", "worse", "attack"], sort=False):
        verdicts = ", ".join(f"λ={lam:g}: {v} ({m})" for lam, v, m in
                             zip(rows["lambda"], rows["verdict"], rows["per_seed_margin"]))
        lines.append(f"- {group} — {better} vs {worse}, {attack}: {verdicts}")
    return lines


def findings_text(config, orderings, fidelity, certificate, legacy, msssim, wall, command) -> str:
    counts = orderings["verdict"].value_counts().to_dict()
    ratio = legacy.groupby(["model", "lambda"])["ratio_ours_over_legacy"].agg(["median", "min", "max", "count"])
    cost = fidelity.groupby("model")["iteration_ms_median"].median()
    certificate_ok = bool((certificate["measured_max_damage_max"] <= certificate["certified_max_damage"]
                           * (1 + 1e-5)).all()) if len(certificate) else None
    lines = [
        "# Reproducing the reference paper's MNIST tables: findings", "",
        f"Generated by `{command}` (wall time of this invocation {wall / 60:.1f} min, "
        f"{torch.get_num_threads()} torch thread(s)). Tables: `table1_mnist.md`, `table2_ablation.md`, "
        "`table3_classifier.md` (cells: mean ± std over training seeds [paper value]); every per-seed number "
        "in `per_seed.csv`; verdicts in `orderings.csv`.", "",
        "## Sizes (this run) against the paper",
        f"- Training: {config.train_images} mnist-5k training images padded to 32 px, {config.epochs} epochs, "
        f"batch 100, Adam {config.lr:g} (every row alike), seeds {list(config.seeds)}; the paper trains on the 60k "
        "MNIST images for hundreds of epochs at 2e-4, once.",
        f"- Audit: {config.images} test images (one fixed plan for every model and seed) x {config.trials} trials, "
        f"lambda in {list(LAMBDAS)}, PGD {config.steps} steps x {config.restarts} restart(s), exact L2-box "
        "projection; the paper: 100 images x 10 trials, L-BFGS-B.",
        f"- MS-SSIM: preset `{config.msssim}` ({json.dumps(msssim.as_dict())}).",
        f"- Latent classifier: MLP head, {config.classifier_epochs} epochs on {config.classifier_images} "
        "training codes; accuracy under the latent-space attack (eq. 12) at lambda = 1.",
        "- Fidelity: Fréchet distance of the features of a small CNN trained here (not Inception; not comparable "
        f"in scale with the paper's FID) between {config.generated_samples} generated samples and as many test "
        f"images; clean reconstruction MSE and MS-SSIM on {int(fidelity['test_images'].iloc[0])} test images in "
        "`fidelity.csv`.", "",
        "## Which of the paper's orderings hold",
        f"Verdict counts over {len(orderings)} (claim, lambda) pairs: "
        + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + ". An ordering is claimed only when it "
        "holds on every seed or a one-sided paired t-test over seeds gives p < 0.05; margins are per seed, "
        "signed so that > 0 means the paper's ordering holds; margins within 0.01 on every seed are ties. A "
        "model that ignores its input scores as 'robust' on the maximum-damage column: read every robustness "
        "cell beside the clean reconstruction MS-SSIM in Tables 1 and 2.", "", *_verdict_lines(orderings), "",
        "## Fidelity beside robustness (mean over seeds; per seed in `fidelity.csv`)",
        "A robust-looking model with poor clean reconstructions is not robust, it ignores its input.", "",
        fidelity.groupby("model", sort=False)[["reconstruction_msssim", "reconstruction_mse",
                                               "frechet_distance_small_classifier"]].mean().round(4).to_markdown(),
        "",
        "## Why numbers differ from the paper",
        "- Budget: far less training (data and epochs) than the paper; small models trained briefly have "
        "blurrier reconstructions, which raises MS-SSIM between any two reconstructions and changes every "
        "column's scale.",
        "- Attack strength: our PGD keeps the worst case over restarts and projects exactly onto the L2 ball "
        "intersected with the pixel box; the reference code rescaled onto the ball (see below for the loss "
        "ratio on the same images). A stronger attack lowers every robustness column.",
        "- MS-SSIM settings: the paper's numbers came from an older implementation; we use the preset named "
        "above and record it; other settings move values by several hundredths.",
        "- Seeds: the paper reports one training run; here every cell is a mean over training seeds, and the std "
        "shows how much a single run can move.", "",
        "## Protocol differences from the reference code",
        "- Its attack scripts fix the attacked image index inside the loop, so their 'mean over 100 images' is a "
        f"mean over restarts of one image; here {config.images} distinct test images are attacked.",
        "- Its maximum-damage L-BFGS-B used memory 100 and pgtol 1e-20 (our preset "
        "`aerobust.attacks.optimizers.REFERENCE_CODE_LBFGS`) and enforced the budget by rescaling the noise "
        "onto the ball; our audit uses batched PGD with exact projection.",
        f"- Our attack against that legacy protocol, maximum-damage loss ratio ours / legacy on the same "
        f"{config.legacy_images} images (L-BFGS-B maxiter {config.legacy_maxiter}; > 1 means ours is stronger):",
        "", ratio.round(3).to_markdown(), "",
        "## LipschitzVAE certificate",
        ("No LipschitzVAE rows." if certificate_ok is None else
         f"The certified bound M_f M_mu lambda on the mean-path reconstruction change "
         f"{'bounds every measured maximum-damage loss' if certificate_ok else 'is VIOLATED by a measured loss'}"
         " (`lipschitz_certificate.csv`: constants from the exact spectral norms, per seed and lambda)."), "",
        "## Training cost per iteration (median epoch time / steps, this run)",
        "", cost.round(2).to_frame("ms per iteration").to_markdown(),
        "", f"SE over Ours: {cost.get('SE', float('nan')) / cost.get(OURS, float('nan')):.2f}x "
        "(the paper: about 2x; timed on a shared machine, see bench/train_cost.py for an alternating measurement).",
        "",
    ]
    return "\n".join(lines)
