"""Reports: pure functions from a saved audit directory to tables, figures and one HTML page.

An audit directory holds ``results.csv`` (long format, one row per model, attack, lambda, trial and
image; columns in ``RESULT_COLUMNS``), ``manifest.json`` (``"metrics"``: the MS-SSIM settings,
``"config"``: the audit config) and optionally ``examples.npz`` (keys ``MODEL::ATTACK::LAMBDA``, each
``(K, 5, C, H, W)`` in [0, 1]: input, clean reconstruction, adversarial input, adversarial
reconstruction, target; the target is all-NaN for untargeted attacks). Nothing here runs a model.

Every "mean ± std" is taken over trials: the mean over images within a trial first, then the mean
and the sample standard deviation (ddof=1) of those trial means; one trial has no std.
"""
from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .errors import AerobustError
from .metrics import resolve_msssim_settings
from .reporting import save_figure, write_table
from .runtime import write_manifest

LATENT_ATTACK = "latent"
MAX_DAMAGE_ATTACK = "max-damage"
CLASSIFIER_ATTACK = "latent-classifier"
KNOWN_ATTACK_ORDER = (LATENT_ATTACK, MAX_DAMAGE_ATTACK, CLASSIFIER_ATTACK)

KEY_COLUMNS = ("model", "attack", "lambda", "trial", "image_id")
RESULT_COLUMNS = (
    "model", "attack", "lambda", "trial", "image_id", "target_id", "label", "target_label",
    "attack_loss", "l2_delta", "msssim_input_adv", "msssim_target_advrecon", "msssim_input_advrecon",
    "msssim_recon_advrecon", "l2_recon_advrecon", "l2_target_advrecon", "latent_target_distance",
    "classifier_correct", "clean_classifier_correct",
)
INTEGER_COLUMNS = ("trial", "image_id", "target_id", "label", "target_label")
FLOAT_COLUMNS = tuple(c for c in RESULT_COLUMNS if c not in ("model", "attack", "lambda", *INTEGER_COLUMNS))
EXAMPLE_COLUMNS = ("input x", "clean reconstruction", "adversarial x_a", "adversarial reconstruction",
                   "target x_t")


@dataclass(frozen=True)
class Metric:
    """A per-row result column and how tables name it (plain text and LaTeX)."""

    column: str
    text: str
    latex: str
    percent: bool = False


METRICS_BY_COLUMN = {m.column: m for m in (
    Metric("attack_loss", "attack loss", "attack loss"),
    Metric("l2_delta", "‖x_a − x‖", r"$\|x_a - x\|_2$"),
    Metric("msssim_input_adv", "MS-SSIM(x_r, x_a), x_r = x", r"MS-SSIM($x_r, x_a$), $x_r = x$"),
    Metric("msssim_target_advrecon", "MS-SSIM(x_r, x̃_a), x_r = x_t ↓",
           r"MS-SSIM($x_r, \tilde{x}_a$), $x_r = x_t$ $\downarrow$"),
    Metric("msssim_input_advrecon", "MS-SSIM(x, x̃_a)", r"MS-SSIM($x, \tilde{x}_a$)"),
    Metric("msssim_recon_advrecon", "MS-SSIM(x̃_r, x̃_a) ↑", r"MS-SSIM($\tilde{x}_r, \tilde{x}_a$) $\uparrow$"),
    Metric("l2_recon_advrecon", "‖x̃_a − x̃_r‖", r"$\|\tilde{x}_a - \tilde{x}_r\|_2$"),
    Metric("l2_target_advrecon", "‖x̃_a − x_t‖", r"$\|\tilde{x}_a - x_t\|_2$"),
    Metric("latent_target_distance", "‖g(x_a) − g(x_t)‖", r"$\|g(x_a) - g(x_t)\|_2$"),
    Metric("classifier_correct", "accuracy under attack (%) ↑", r"accuracy under attack (\%) $\uparrow$", True),
    Metric("clean_classifier_correct", "clean accuracy (%) ↑", r"clean accuracy (\%) $\uparrow$", True),
)}

ATTACK_TITLES = {LATENT_ATTACK: "latent-space attack", MAX_DAMAGE_ATTACK: "maximum-damage attack",
                 CLASSIFIER_ATTACK: "latent-classifier attack"}


@dataclass
class AuditResults:
    """One audit directory, read: the results table, its manifest, and where the examples are."""

    directory: Path
    results: pd.DataFrame
    manifest: dict
    examples_path: Path | None = None
    _examples: dict | None = field(default=None, repr=False)

    @property
    def metric_settings(self) -> dict:
        return self.manifest.get("metrics") or {}

    def examples(self) -> dict[tuple[str, str, str], np.ndarray]:
        """``{(model, attack, lambda text): array (K, 5, C, H, W)}``; empty without examples.npz."""
        if self._examples is None:
            self._examples = {} if self.examples_path is None else read_examples(self.examples_path)
        return self._examples


def lambda_text(value: float) -> str:
    return "{:g}".format(float(value))


def load_results(results_dir) -> AuditResults:
    """Read and check an audit directory; every problem is one AerobustError that says what to fix."""
    directory = Path(results_dir)
    if not directory.is_dir():
        raise AerobustError(f"results directory {directory} does not exist; pass the --out directory of "
                            f"an `aerobust audit` run")
    csv_path = directory / "results.csv"
    if not csv_path.is_file():
        raise AerobustError(f"{directory} has no results.csv; pass the --out directory of an `aerobust audit` run")
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise AerobustError(f"{directory} has no manifest.json, so the metric settings of its scores are "
                            f"unknown; rerun the audit")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AerobustError(f"{manifest_path} is not valid JSON ({exc}); rerun the audit") from None
    if not isinstance(manifest, dict):
        raise AerobustError(f"{manifest_path} must hold a JSON object; rerun the audit")
    examples_path = directory / "examples.npz"
    return AuditResults(directory, read_results_csv(csv_path), manifest,
                        examples_path if examples_path.is_file() else None)


def read_results_csv(path) -> pd.DataFrame:
    """Parse and type-check a results.csv written by the audit."""
    try:
        frame = pd.read_csv(path, dtype={"model": str, "attack": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise AerobustError(f"{path} is not a readable results CSV ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}); rerun the audit") from None
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise AerobustError(f"{path} lacks the columns {', '.join(missing)}; it was not written by "
                            f"`aerobust audit` (or by an older version): rerun the audit")
    if frame.empty:
        raise AerobustError(f"{path} has no rows; the audit wrote nothing, rerun it")
    for column in ("model", "attack"):
        if frame[column].isna().any():
            raise AerobustError(f"{path}: column {column} has empty cells; rerun the audit")
    for column in ("lambda", *FLOAT_COLUMNS, *INTEGER_COLUMNS):
        converted = pd.to_numeric(frame[column], errors="coerce")
        if (converted.isna() & frame[column].notna()).any():
            bad = frame.loc[converted.isna() & frame[column].notna(), column].iloc[0]
            raise AerobustError(f"{path}: column {column} holds a non-number ({bad!r}); rerun the audit")
        frame[column] = converted
    for column in ("lambda", "trial", "image_id"):
        if frame[column].isna().any():
            raise AerobustError(f"{path}: column {column} has empty cells; rerun the audit")
    frame[list(INTEGER_COLUMNS)] = frame[list(INTEGER_COLUMNS)].fillna(-1).astype("int64")
    frame["lambda"] = frame["lambda"].astype(float)
    return frame


def read_examples(path) -> dict[tuple[str, str, str], np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise AerobustError(f"{path} is not a readable .npz file ({exc}); rerun the audit") from None
    examples = {}
    with archive:
        for key in archive.files:
            parts = key.split("::")
            array = archive[key]
            if len(parts) != 3:
                raise AerobustError(f"{path}: key {key!r} is not MODEL::ATTACK::LAMBDA; rerun the audit")
            if array.ndim != 5 or array.shape[1] != len(EXAMPLE_COLUMNS) or array.shape[2] not in (1, 3):
                raise AerobustError(f"{path}: {key} has shape {array.shape}, expected (K, 5, C, H, W) with C 1 "
                                    f"or 3; rerun the audit")
            examples[(parts[0], parts[1], parts[2])] = array.astype(np.float32)
    return examples


# --- statistics -----------------------------------------------------------------------------------

def trial_statistics(results: pd.DataFrame, column: str,
                     by: Sequence[str] = ("model", "attack", "lambda")) -> pd.DataFrame:
    """Mean over images within each trial, then mean, std (ddof=1) and count of those trial means.

    Returns one row per ``by`` group (in order of first appearance) with columns mean, std, trials.
    NaN cells (e.g. target metrics of untargeted attacks) are skipped; a group without any value
    has mean NaN and trials 0.
    """
    by = list(by)
    per_trial = results.groupby([*by, "trial"], sort=False)[column].mean()
    grouped = per_trial.groupby(level=by, sort=False)
    return pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1), "trials": grouped.count()})


def _ordered_attacks(results: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(results["attack"]))
    return [a for a in KNOWN_ATTACK_ORDER if a in present] + [a for a in present if a not in KNOWN_ATTACK_ORDER]


def _has_values(results: pd.DataFrame, attack: str, column: str) -> bool:
    return bool(results.loc[results["attack"] == attack, column].notna().any())


def _table1_metrics(results: pd.DataFrame, attack: str) -> list[str]:
    """The paper's two columns for an attack: targeted ones are scored against their target."""
    if _has_values(results, attack, "msssim_target_advrecon"):
        return ["msssim_target_advrecon", "msssim_input_adv"]
    return ["msssim_recon_advrecon", "msssim_input_adv"]


def _wide(results: pd.DataFrame, cells: Iterable[tuple[str, str]]) -> pd.DataFrame:
    """Rows per model; columns (attack, metric column, lambda, mean|std) for the (attack, column) cells."""
    models = list(dict.fromkeys(results["model"]))
    blocks = []
    for attack, column in cells:
        rows = results[results["attack"] == attack]
        stats = trial_statistics(rows, column, by=("model", "lambda"))
        scale = 100.0 if METRICS_BY_COLUMN.get(column, Metric(column, column, column)).percent else 1.0
        for lam in sorted(rows["lambda"].unique()):
            part = stats.xs(lam, level="lambda")[["mean", "std"]] * scale
            part.columns = pd.MultiIndex.from_tuples([(attack, column, lambda_text(lam), s) for s in part.columns])
            blocks.append(part)
    if not blocks:
        return pd.DataFrame(index=pd.Index(models, name="model"))
    table = pd.concat(blocks, axis=1).reindex(models)
    table.index.name = "model"
    table.columns.names = ["attack", "metric", "lambda", "statistic"]
    return table


def table1_statistics(results: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 1 as numbers: per model, per attack, its MS-SSIM columns per lambda.

    Targeted attacks (the latent-space attack) give MS-SSIM(x_t, x̃_a) and MS-SSIM(x, x_a);
    untargeted ones (maximum damage) MS-SSIM(x̃, x̃_a) and MS-SSIM(x, x_a). Columns are a
    MultiIndex (attack, metric, lambda, mean|std).
    """
    return _wide(results, [(a, c) for a in _ordered_attacks(results) for c in _table1_metrics(results, a)])


def table3_statistics(results: pd.DataFrame) -> pd.DataFrame | None:
    """The paper's Table 3: latent-classifier accuracy (%) clean and under every attack, per lambda.

    None when the audit had no latent classifier.
    """
    if results["clean_classifier_correct"].isna().all() and results["classifier_correct"].isna().all():
        return None
    # clean correctness does not depend on the attack: count every (model, trial, image) once
    clean_rows = results.dropna(subset=["clean_classifier_correct"]).drop_duplicates(["model", "trial", "image_id"])
    clean = trial_statistics(clean_rows, "clean_classifier_correct", by=("model",))[["mean", "std"]] * 100
    clean.columns = pd.MultiIndex.from_tuples([("clean", "clean_classifier_correct", "", s) for s in clean.columns])
    attacked = _wide(results, [(a, "classifier_correct") for a in _ordered_attacks(results)
                               if _has_values(results, a, "classifier_correct")])
    table = pd.concat([clean, attacked], axis=1).reindex(attacked.index)
    table.index.name = "model"
    table.columns.names = ["attack", "metric", "lambda", "statistic"]
    return table


def summary_statistics(results: pd.DataFrame) -> pd.DataFrame:
    """Every metric that has values, per (model, attack, lambda): columns (metric, mean|std)."""
    columns = [c for c in FLOAT_COLUMNS if results[c].notna().any() and c != "clean_classifier_correct"]
    parts = []
    for column in columns:
        stats = trial_statistics(results, column)[["mean", "std"]]
        if METRICS_BY_COLUMN[column].percent:
            stats = stats * 100
        stats.columns = pd.MultiIndex.from_tuples([(column, s) for s in stats.columns])
        parts.append(stats)
    table = pd.concat(parts, axis=1)
    table.columns.names = ["metric", "statistic"]
    model_rank = {m: i for i, m in enumerate(dict.fromkeys(results["model"]))}
    attack_rank = {a: i for i, a in enumerate(_ordered_attacks(results))}
    order = sorted(range(len(table)), key=lambda i: (model_rank[table.index[i][0]], attack_rank[table.index[i][1]],
                                                     table.index[i][2]))
    return table.iloc[order]


# --- formatting -----------------------------------------------------------------------------------

def _mean_std_text(mean: float, std: float, decimals: int, plus_minus: str) -> str:
    if pd.isna(mean):
        return ""
    if pd.isna(std):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f}{plus_minus}{std:.{decimals}f}"


def mean_std_strings(stats: pd.DataFrame, decimals: int = 3, plus_minus: str = " ± ") -> pd.DataFrame:
    """Collapse the last column level (mean|std) into "0.551 ± 0.020" strings."""
    keys = list(dict.fromkeys(c[:-1] for c in stats.columns))
    data = {key: [_mean_std_text(m, s, decimals, plus_minus)
                  for m, s in zip(stats[(*key, "mean")], stats[(*key, "std")])] for key in keys}
    table = pd.DataFrame(data, index=stats.index)
    if keys:
        table.columns = pd.MultiIndex.from_tuples(keys, names=stats.columns.names[:-1]) \
            if len(keys[0]) > 1 else pd.Index([k[0] for k in keys], name=stats.columns.names[0])
    return table


def _label(level: str, value: str, latex: bool) -> str:
    if level == "attack":
        text = ATTACK_TITLES.get(value, f"{value} attack") if value != "clean" else "no attack"
        return _latex_escape(text) if latex else text
    if level == "metric":
        metric = METRICS_BY_COLUMN.get(value)
        if metric is None:
            return _latex_escape(value) if latex else value
        return metric.latex if latex else metric.text
    if level == "lambda":
        if value == "":
            return ""
        return f"$\\lambda = {value}$" if latex else f"λ = {value}"
    return _latex_escape(str(value)) if latex else str(value)


def _latex_escape(text: str) -> str:
    return re.sub(r"([&%$#_{}])", r"\\\1", str(text)).replace("~", r"\textasciitilde{}")


def _relabel(table: pd.DataFrame, latex: bool) -> pd.DataFrame:
    """Human column labels (metric names, "λ = 1"); LaTeX-safe ones and escaped row labels for .tex."""
    table = table.copy()
    names = list(table.columns.names)
    keys = [key if isinstance(key, tuple) else (key,) for key in table.columns]
    labels = [tuple(_label(level, value, latex) for level, value in zip(names, key)) for key in keys]
    table.columns = (pd.MultiIndex.from_tuples(labels) if len(names) > 1
                     else pd.Index([label[0] for label in labels]))
    if latex:
        escape = (lambda key: tuple(_latex_escape(v) for v in key)) if table.index.nlevels > 1 else _latex_escape
        table.index = table.index.map(escape)
    return table


def _flat_columns(table: pd.DataFrame, separator: str) -> pd.DataFrame:
    table = table.copy()
    if isinstance(table.columns, pd.MultiIndex):
        table.columns = [separator.join(str(part) for part in key if str(part)) for key in table.columns]
    return table


def _rows_as_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Human tables keep the model as row label and show the other row keys (attack, lambda) as columns."""
    if table.index.nlevels == 1:
        return table
    keys = table.index.to_frame(index=False)
    if "lambda" in keys:
        keys["lambda"] = keys["lambda"].map(lambda_text)
    flat = table.reset_index(drop=True)
    inner = keys.iloc[:, 1:]
    if isinstance(flat.columns, pd.MultiIndex):
        inner.columns = pd.MultiIndex.from_tuples([(name,) + ("",) * (flat.columns.nlevels - 1) for name in inner])
    merged = pd.concat([inner, flat], axis=1)
    merged.index = pd.Index(keys.iloc[:, 0], name=keys.columns[0])
    return merged


def write_statistics_table(stats: pd.DataFrame, out_dir, stem: str, decimals: int = 3) -> dict[str, Path]:
    """CSV with separate numeric mean/std columns; Markdown, LaTeX and HTML with "mean ± std" cells.

    CSV columns are named ``attack/metric/lambda/mean`` (levels joined by '/').
    """
    written = write_table(_flat_columns(stats, "/"), out_dir, stem, formats=("csv",))
    human = mean_std_strings(stats, decimals)
    plain = _relabel(human, latex=False)
    written.update(write_table(_rows_as_columns(_flat_columns(plain, ", ")), out_dir, stem, formats=("md",)))
    latex = _relabel(mean_std_strings(stats, decimals, r" $\pm$ "), latex=True)
    written.update(write_table(_rows_as_columns(latex), out_dir, stem, formats=("tex",)))
    written.update(write_table(_rows_as_columns(plain), out_dir, stem, formats=("html",)))
    return written


# --- figures --------------------------------------------------------------------------------------

def attack_loss_figure(results: pd.DataFrame):
    """Fig. 2: attack loss against lambda, one panel per attack, mean ± std over trials per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = _ordered_attacks(results)
    figure, axes = plt.subplots(1, len(attacks), figsize=(4.2 * len(attacks), 3.4), squeeze=False)
    stats = trial_statistics(results, "attack_loss").reset_index()
    for axis, attack in zip(axes[0], attacks):
        for model in dict.fromkeys(results["model"]):
            rows = stats[(stats["attack"] == attack) & (stats["model"] == model)].sort_values("lambda")
            if rows.empty or rows["mean"].isna().all():
                continue
            line, = axis.plot(rows["lambda"], rows["mean"], marker="o", label=model)
            band = rows["std"].fillna(0.0)
            axis.fill_between(rows["lambda"], rows["mean"] - band, rows["mean"] + band,
                              color=line.get_color(), alpha=0.2)
        axis.set_title(ATTACK_TITLES.get(attack, attack))
        axis.set_xlabel("λ (L2 budget)")
        axis.set_ylabel("attack loss")
        axis.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5),
                      bbox_to_anchor=(0.5, 1.08), frameon=False)
    figure.tight_layout()
    return figure


def example_grid_figure(examples: dict, attack: str, lam: str, per_model: int = 2):
    """Fig. 3: rows of input | clean reconstruction | adversarial input | its reconstruction | target."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(model, grid) for (model, a, l), array in examples.items() if a == attack and l == lam
            for grid in array[:per_model]]
    if not rows:
        return None
    has_target = any(not np.isnan(grid[4]).all() for _, grid in rows)
    columns = EXAMPLE_COLUMNS if has_target else EXAMPLE_COLUMNS[:4]
    figure, axes = plt.subplots(len(rows), len(columns), figsize=(1.5 * len(columns) + 1.2, 1.5 * len(rows)),
                                squeeze=False)
    previous_model = None
    for row, (model, grid) in enumerate(rows):
        for col, title in enumerate(columns):
            axis = axes[row][col]
            image = grid[col]
            axis.set_xticks([])
            axis.set_yticks([])
            if np.isnan(image).all():
                axis.set_facecolor("#eeeeee")
            elif image.shape[0] == 1:
                axis.imshow(image[0], cmap="gray", vmin=0, vmax=1)
            else:
                axis.imshow(np.clip(image.transpose(1, 2, 0), 0, 1))
            if row == 0:
                axis.set_title(title, fontsize=8)
        if model != previous_model:
            axes[row][0].set_ylabel(model, fontsize=8)
            previous_model = model
    figure.suptitle(f"{ATTACK_TITLES.get(attack, attack)}, λ = {lam}", fontsize=10)
    figure.tight_layout()
    return figure


# --- the report -----------------------------------------------------------------------------------

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "x"


def _write_tables_and_figures(results: pd.DataFrame, out_dir: Path, prefix: str = "") -> dict[str, object]:
    """Table 1, Table 3, the summary and Fig. 2; returns {name: {format: path} or path}."""
    written: dict[str, object] = {}
    table1 = table1_statistics(results)
    if len(table1.columns):
        written["table1_msssim"] = write_statistics_table(table1, out_dir, f"{prefix}table1_msssim")
    table3 = table3_statistics(results)
    if table3 is not None:
        written["table3_latent_classifier"] = write_statistics_table(
            table3, out_dir, f"{prefix}table3_latent_classifier", decimals=2)
    written["summary"] = write_statistics_table(summary_statistics(results), out_dir, f"{prefix}summary")
    written["fig2_attack_loss"] = save_figure(attack_loss_figure(results), out_dir, f"{prefix}fig2_attack_loss")
    written.update(_statistics_outputs(results, out_dir, prefix))
    return written


def _statistics_outputs(results: pd.DataFrame, out_dir: Path, prefix: str) -> dict[str, object]:
    """Intervals, paired tests (two or more models), universal share, AUDDC with its curve figure."""
    from .distortion import distortion_curves, distortion_figure
    from .stats import report_tables

    written: dict[str, object] = {name: write_table(table, out_dir, f"{prefix}{name}")
                                  for name, table in report_tables(results, FLOAT_COLUMNS).items()}
    curves = distortion_curves(results)
    if len(curves):
        written["fig_distortion_curve"] = save_figure(distortion_figure(curves), out_dir, f"{prefix}fig_distortion_curve")
    return written


FLAG_COLUMNS = ["model", "attack", "lambda", "flag", "count", "of", "message"]


def sanity_flags_table(manifest: dict) -> pd.DataFrame:
    """The attacks' sanity flags recorded in an audit manifest, one row per (model, attack, lambda, flag)."""
    rows = [{k: flag.get(k) for k in FLAG_COLUMNS} for flag in manifest.get("flags") or []]
    return pd.DataFrame(rows, columns=FLAG_COLUMNS)


def build_report(results_dir, out_dir=None) -> dict[str, Path]:
    """Rebuild every table, figure and the HTML page of an audit directory; returns the written paths.

    ``out_dir`` defaults to ``RESULTS_DIR/report``. Keys: ``table1_msssim.csv`` style names for tables,
    figure stems for PNGs, ``report.html`` and ``manifest.json``.
    """
    audit = load_results(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else audit.directory / "report"
    _refuse_audit_dir(audit.directory, out_dir)
    settings = resolve_msssim_settings(audit.metric_settings).as_dict() if audit.metric_settings else None
    written = _write_tables_and_figures(audit.results, out_dir)
    flags = sanity_flags_table(audit.manifest)
    if len(flags):
        written["sanity_flags"] = write_table(flags, out_dir, "sanity_flags")
    examples = audit.examples()
    figures = {}
    for model, attack, lam in examples:
        key = f"fig3_examples_{_slug(attack)}_lambda{_slug(lam)}"
        if key in figures:
            continue
        figure = example_grid_figure(examples, attack, lam)
        if figure is not None:
            figures[key] = save_figure(figure, out_dir, key)
    written.update(figures)
    title = f"aerobust audit report: {audit.directory.name}"
    page = _html_page(title, written, settings, [(audit.directory, audit.manifest)], audit.results)
    written["report.html"] = out_dir / "report.html"
    written["report.html"].write_text(page)
    written["manifest.json"] = write_manifest(
        out_dir, command="report", config={"results_dir": str(audit.directory.resolve())},
        seed=audit.manifest.get("seed"), device="none", metrics=settings,
        source_manifest=audit.manifest)
    return _flatten_paths(written)


def _refuse_audit_dir(results_dir: Path, out_dir: Path):
    if out_dir.resolve() == results_dir.resolve():
        raise AerobustError(f"--out {out_dir} is the audit directory itself, whose manifest.json the report "
                            f"must not overwrite; choose another directory")


def _flatten_paths(written: dict) -> dict[str, Path]:
    flat = {}
    for name, value in written.items():
        if isinstance(value, dict):
            flat.update({Path(path).name: Path(path) for path in value.values()})
        else:
            flat[Path(value).name] = Path(value)
    return flat


def compare(dirs: Sequence) -> pd.DataFrame:
    """One Table-1 layout over several audit directories (models of all of them).

    Raises AerobustError when the audits scored with different MS-SSIM settings.
    """
    return table1_statistics(_combined(dirs)[0])


def write_comparison(dirs: Sequence, out_dir) -> dict[str, Path]:
    """Tables, Fig. 2 and an HTML page over several audits, with the shared metric settings."""
    results, audits, settings = _combined(dirs)
    out_dir = Path(out_dir)
    for audit in audits:
        _refuse_audit_dir(audit.directory, out_dir)
    written = _write_tables_and_figures(results, out_dir, prefix="comparison_")
    page = _html_page("aerobust comparison", written, settings,
                      [(audit.directory, audit.manifest) for audit in audits], results)
    written["report.html"] = out_dir / "report.html"
    written["report.html"].write_text(page)
    written["manifest.json"] = write_manifest(
        out_dir, command="compare", config={"results_dirs": [str(a.directory.resolve()) for a in audits]},
        seed=None, device="none", metrics=settings)
    return _flatten_paths(written)


def _comparable(settings: dict | None) -> dict | None:
    if not settings:
        return None
    values = resolve_msssim_settings(settings).as_dict()
    values.pop("preset")  # a name only; equal numbers score equally whatever they were called
    return values


def _combined(dirs: Sequence):
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


# --- HTML -----------------------------------------------------------------------------------------

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1400px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: .2em;
       margin-top: 2em; }
table.aerobust-table, table.settings { border-collapse: collapse; font-size: 0.85em; margin: .5em 0; }
table.aerobust-table th, table.aerobust-table td, table.settings th, table.settings td {
       border: 1px solid #ddd; padding: 3px 7px; text-align: right; white-space: nowrap; }
table.aerobust-table thead th { background: #f2f4f7; text-align: center; }
table.settings th { text-align: left; background: #f7f7f7; }
table.settings td { text-align: left; }
.scroll { overflow-x: auto; } img { max-width: 100%; } .note { color: #555; font-size: .9em; }
.examples img { max-width: 560px; margin: 0 1em 1em 0; } .examples { display: flex; flex-wrap: wrap; }
pre { background: #f7f7f7; padding: .7em; font-size: .8em; overflow-x: auto; }
"""


def _image_tag(path: Path, alt: str) -> str:
    encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def _settings_table(values: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v))}</td></tr>"
                   for k, v in values.items())
    return f'<table class="settings">{rows}</table>'


def _manifest_fields(manifest: dict) -> dict:
    versions = manifest.get("versions") or {}
    fields = {key: manifest.get(key) for key in ("command", "created", "seed", "device", "platform")}
    fields.update({f"version {k}": versions.get(k) for k in ("aerobust", "torch", "pytorch-msssim") if k in versions})
    return {k: v for k, v in fields.items() if v is not None}


def _html_page(title: str, written: dict, settings: dict | None, sources, results: pd.DataFrame) -> str:
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    counts = (f"{results['model'].nunique()} model(s), {results['attack'].nunique()} attack(s), "
              f"λ ∈ {{{', '.join(lambda_text(v) for v in sorted(results['lambda'].unique()))}}}, "
              f"{results['trial'].nunique()} trial(s), {results['image_id'].nunique()} image(s), "
              f"{len(results)} rows.")
    parts.append(f"<p class='note'>{html.escape(counts)} Every cell is the mean ± standard deviation over trials "
                 f"of the per-trial mean over images.</p>")
    sections = (
        ("table1_msssim", "Table 1: MS-SSIM under attack",
         "x_r is the reference image: the target x_t for targeted attacks, the input x otherwise; x̃ are "
         "reconstructions. ↓: lower means a more robust model; ↑: higher means a more robust model."),
        ("table3_latent_classifier", "Table 3: latent-space classifier accuracy (%)", ""),
        ("summary", "All metrics per model, attack and λ", ""),
        ("intervals", "95 % intervals of every cell", "Percentile cluster bootstrap over images, each image "
         "resampled with all of its trials (2000 resamples); counts of images, trials and rows beside each mean."),
        ("paired_tests", "Paired tests between models", "Same images and targets; per-image trial means, "
         "sign-flip permutation test of the mean difference (model_b − model_a), Holm-corrected over the table; "
         "holds: p_holm < 0.05."),
        ("universal_share", "Universal perturbation against per-image maximum damage",
         "share = mean ‖x̃_a − x̃_r‖ of the universal attack / that of the max-damage attack, same rows."),
        ("auddc", "AUDDC (area under the distortion-distortion curve)", "Higher = more robust; needs λ = 0 "
         "in the grid. The curve is the figure below."),
    )
    for key, heading, note in sections:
        if key in written:
            fragment = Path(written[key]["html"]).read_text()
            parts.append(f"<h2>{html.escape(heading)}</h2>"
                         + (f"<p class='note'>{html.escape(note)}</p>" if note else "")
                         + f"<div class='scroll'>{fragment}</div>")
    if len(sources) == 1 and "flags" in sources[0][1]:
        parts.append("<h2>Sanity flags</h2><p class='note'>Checks in the spirit of AutoAttack's: zero or NaN "
                     "gradients, attack loss not monotone in λ, an unbounded latent attack that misses its target, "
                     "an attack weaker than random noise of the same norm. A flag means the numbers of that block "
                     "may overstate robustness.</p>")
        parts.append(f"<div class='scroll'>{Path(written['sanity_flags']['html']).read_text()}</div>"
                     if "sanity_flags" in written else "<p>No flag was raised.</p>")
    parts.append("<h2>Figure 2: attack loss against λ</h2>" + _image_tag(written["fig2_attack_loss"], "attack loss"))
    if "fig_distortion_curve" in written:
        parts.append("<h2>Distortion-distortion curve</h2>" + _image_tag(written["fig_distortion_curve"], "AUDDC"))
    example_keys = [k for k in written if k.startswith("fig3_")]
    if example_keys:
        parts.append("<h2>Figure 3: examples</h2><p class='note'>input | clean reconstruction | adversarial input | "
                     "adversarial reconstruction | target (targeted attacks)</p>")
        parts.append("<div class='examples'>" + "".join(_image_tag(written[k], k) for k in example_keys) + "</div>")
    parts.append("<h2>MS-SSIM settings</h2>")
    parts.append(_settings_table(settings) if settings else "<p>No MS-SSIM settings recorded.</p>")
    for directory, manifest in sources:
        parts.append(f"<h2>Audit {html.escape(str(directory))}</h2>" + _settings_table(_manifest_fields(manifest)))
        if manifest.get("config") is not None:
            parts.append("<details><summary>audit config</summary><pre>"
                         + html.escape(json.dumps(manifest["config"], indent=2, sort_keys=True)) + "</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)
