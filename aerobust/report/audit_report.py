"""``build_report``: every table, figure and the HTML page of one audit directory."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..errors import AerobustError
from ..metrics import resolve_msssim_settings
from ..output_folder import claim_output_folder
from ..runtime import write_manifest
from .columns import FLOAT_COLUMNS
from .ensemble import ensemble_wins, members_that_ran
from .figures import attack_budget, attack_loss_figure, example_grid_figure, robustness_fidelity_figure
from .flags import sanity_flags_table
from .page import html_page
from ..audit.store import load_results
from .statistics import fidelity_statistics, summary_statistics, table1_statistics, table3_statistics
from .columns import CLEAN_ATTACK, attack_title
from .tables import (ablation_order, spread_note, attack_panels, table2_statistics,
                     write_statistics_table)
from .writer import save_figure, write_table

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "x"


def write_tables_and_figures(results: pd.DataFrame, out_dir: Path, prefix: str = "", table2: bool = False,
                             manifest: dict | None = None) -> dict[str, object]:
    """Table 1 (whole and one panel per attack), Table 2 (ablation layout: when the models are labelled as
    the paper's ablation rows, or with ``table2``), Table 3, fidelity, the summary, the figures;
    returns {name: {format: path} or path}."""
    written: dict[str, object] = {}
    spread = spread_note(results, manifest)
    table1 = table1_statistics(results)
    attacked = [a for a in table1.columns.get_level_values("attack") if a != CLEAN_ATTACK]
    if attacked:
        written["table1_msssim"] = write_statistics_table(
            table1, out_dir, f"{prefix}table1_msssim", caption=f"MS-SSIM under attack (Table 1). {TABLE1_NOTE} {spread}")
        for attack, panel in attack_panels(table1).items():
            written[f"table1_msssim_{_slug(attack)}"] = write_statistics_table(
                panel, out_dir, f"{prefix}table1_msssim_{_slug(attack)}",
                caption=f"MS-SSIM under the {attack_title(attack)} (Table 1). {TABLE1_NOTE} {spread}")
        ablation = list(results["model"].unique()) if table2 else ablation_order(results["model"].unique())
        if ablation:
            written["table2_ablation"] = write_statistics_table(
                table2_statistics(table1, results, ablation), out_dir, f"{prefix}table2_ablation",
                caption=f"Ablation (Table 2 layout): MS-SSIM between the reference x_r and the adversarial "
                        f"reconstruction per attack, clean fidelity last. {spread}")
    table3 = table3_statistics(results)
    if table3 is not None:
        written["table3_latent_classifier"] = write_statistics_table(
            table3, out_dir, f"{prefix}table3_latent_classifier", decimals=2,
            caption=f"Accuracy (%) of the classifier on the codes, clean and under attack (Table 3). {spread}")
        for attack, panel in attack_panels(table3).items():
            written[f"table3_latent_classifier_{_slug(attack)}"] = write_statistics_table(
                panel, out_dir, f"{prefix}table3_latent_classifier_{_slug(attack)}", decimals=2,
                caption=f"Accuracy (%) of the classifier on the codes under the {attack_title(attack)} (Table 3). "
                        f"{spread}")
    written["fidelity"] = write_statistics_table(
        fidelity_statistics(results), out_dir, f"{prefix}fidelity",
        caption=f"Clean fidelity and code sensitivity. {FIDELITY_NOTE} {spread}")
    written["summary"] = write_statistics_table(
        summary_statistics(results), out_dir, f"{prefix}summary",
        caption=f"Every metric per model, attack and λ (empty: the attack does not record it). {spread}")
    written["fig2_attack_loss"] = save_figure(attack_loss_figure(results, manifest), out_dir,
                                              f"{prefix}fig2_attack_loss")
    written["robustness_vs_fidelity"] = save_figure(robustness_fidelity_figure(results, manifest), out_dir,
                                                    f"{prefix}robustness_vs_fidelity")
    written.update(_statistics_outputs(results, out_dir, prefix))
    wins = ensemble_wins(results, members_that_ran(manifest or {}))
    if wins is not None:
        written["ensemble_wins"] = write_table(wins, out_dir, f"{prefix}ensemble_wins")
    return written


EXAMPLES_PER_MODEL = 3
TABLE1_NOTE = ("x_r is the reference image: the target x_t for targeted attacks, the input x otherwise; x_a the "
               "adversarial input; x̃ reconstructions. MS-SSIM(x_r, x_a) says how visible the perturbation is.")
FIDELITY_NOTE = ("Clean: MS-SSIM and MSE between x and its reconstruction x̃ (no attack). Code sensitivity: "
                 "‖g(x_a) − g(x)‖ in units of the code separation (the median distance from g(x) to the codes "
                 "of the other audited images); 1 means the attack moved the code as far as a typical other "
                 "image's code lies.")


def _statistics_outputs(results: pd.DataFrame, out_dir: Path, prefix: str) -> dict[str, object]:
    """Intervals, paired tests (two or more models), universal share, AUDDC with its curve figure."""
    from ..distortion import distortion_curves
    from .analyses import distortion_figure, report_tables

    written: dict[str, object] = {name: write_table(table, out_dir, f"{prefix}{name}")
                                  for name, table in report_tables(results, FLOAT_COLUMNS).items()}
    curves = distortion_curves(results)
    if len(curves):
        written["fig_distortion_curve"] = save_figure(distortion_figure(curves), out_dir, f"{prefix}fig_distortion_curve")
    return written



def build_report(results_dir, out_dir=None, table2: bool = False) -> dict[str, Path]:
    """Rebuild every table, figure and the HTML page of an audit directory; returns the written paths.

    ``out_dir`` defaults to ``RESULTS_DIR/report``. Keys: ``table1_msssim.csv`` style names for tables,
    figure stems for PNGs, ``report.html`` and ``manifest.json``. ``table2``: write the ablation layout
    (Table 2) over all models even when they are not labelled as the paper's ablation rows.
    """
    audit = load_results(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else audit.directory / "report"
    refuse_audit_dir(audit.directory, out_dir)
    claim_output_folder(out_dir, "report", {"results_dir": str(audit.directory.resolve())})
    settings = resolve_msssim_settings(audit.metric_settings).as_dict() if audit.metric_settings else None
    written = write_tables_and_figures(audit.results, out_dir, table2=table2, manifest=audit.manifest)
    flags = sanity_flags_table(audit.manifest, audit.results)
    if len(flags):
        written["sanity_flags"] = write_table(
            flags, out_dir, "sanity_flags", caption="Sanity flags: count of the rows of a block that raised the flag, "
            "of the rows checked; a flag means the numbers of that block may overstate robustness.")
    examples = audit.examples()
    scoring = resolve_msssim_settings(audit.metric_settings) if audit.metric_settings else None
    figures = {}
    for model, attack, lam in examples:
        key = f"fig3_examples_{_slug(attack)}_lambda{_slug(lam)}"
        if key in figures:
            continue
        # each grid starts at other examples, so that the grids of an audit do not all show the same images
        figure = example_grid_figure(examples, attack, lam, per_model=EXAMPLES_PER_MODEL,
                                     offset=EXAMPLES_PER_MODEL * len(figures), metric_settings=scoring,
                                     budget=attack_budget(audit.manifest, attack))
        if figure is not None:
            figures[key] = save_figure(figure, out_dir, key)
    written.update(figures)
    title = f"aerobust audit report: {audit.directory.name}"
    page = html_page(title, written, settings, [(audit.directory, audit.manifest)], audit.results, flags,
                     command=f"aerobust report {audit.directory}")
    written["report.html"] = out_dir / "report.html"
    written["report.html"].write_text(page)
    written["manifest.json"] = write_manifest(
        out_dir, command="report", config={"results_dir": str(audit.directory.resolve())},
        seed=audit.manifest.get("seed"), device="none", metrics=settings,
        source_manifest=audit.manifest)
    return flatten_paths(written)


def refuse_audit_dir(results_dir: Path, out_dir: Path):
    if out_dir.resolve() == results_dir.resolve():
        raise AerobustError(f"--out {out_dir} is the audit directory itself, whose manifest.json the report "
                            f"must not overwrite; choose another directory")


def flatten_paths(written: dict) -> dict[str, Path]:
    flat = {}
    for name, value in written.items():
        if isinstance(value, dict):
            flat.update({Path(path).name: Path(path) for path in value.values()})
        else:
            flat[Path(value).name] = Path(value)
    return flat

