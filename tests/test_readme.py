"""Every demo figure the README quotes equals the committed reports/demo file it comes from, and every
number the reports' own READMEs and the reproduction's findings quote is one of their committed CSVs'."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- demo figures: reports/demo/audit/report/table1_msssim.csv -->"
# README column header -> the CSV column (attack/metric/lambda) it quotes
COLUMNS = {
    "clean MS-SSIM(x, x̃)": "clean/msssim_input_recon",
    "max-damage MS-SSIM(x̃_r, x̃_a), λ = 1": "max-damage/msssim_recon_advrecon/1",
    "max-damage MS-SSIM(x̃_r, x̃_a), λ = 3": "max-damage/msssim_recon_advrecon/3",
    "latent-space MS-SSIM(x_t, x̃_a), λ = 1": "latent/msssim_target_advrecon/1",
}


def _quoted_table() -> pd.DataFrame:
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index(MARKER) + 1
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    header, body = rows[0], [r for r in rows[1:] if not set("".join(r)) <= set("-:")]
    return pd.DataFrame(body, columns=header).set_index(header[0])


def test_readme_demo_figures_equal_the_committed_report():
    quoted = _quoted_table()
    table = pd.read_csv(ROOT / "reports" / "demo" / "audit" / "report" / "table1_msssim.csv", index_col=0)
    assert set(quoted.columns) == set(COLUMNS) and len(quoted) == 2
    for model, row in quoted.iterrows():
        for header, key in COLUMNS.items():
            mean, std, n = table.loc[model, f"{key}/mean"], table.loc[model, f"{key}/std"], table.loc[model, f"{key}/n"]
            # a clean column is one value per image, the same in every trial: a mean without std
            assert row[header] == (f"{mean:.3f} ± {std:.3f}" if np.isfinite(std) else f"{mean:.3f}"), (model, header)
            assert n == table.loc[model, f"{key}/rows"]  # no row of a quoted cell was dropped
    # the sentence under the table quotes the same numbers, not others
    prose = (ROOT / "README.md").read_text().split(MARKER)[1].split("\n\n")[1]
    cells = " ".join(quoted.to_numpy().ravel())
    for number in re.findall(r"\d\.\d{3}", prose):
        assert number in cells, number


# Prose numbers: a decimal not glued to a version string or an identifier ("2.11.0", "fig2", "x1.5b").
# Durations ("3.1 min") are how long a run took, not results.
PROSE_NUMBER = re.compile(r"(?<![\w.])[-+−]?\d+\.\d+(?:e-?\d+)?(?![\w.]*\d)(?!\w)(?! ?(?:min|s|h|ms)\b)")
# An estimate with its 95 % interval as prose quotes it: "53.4 % [43.3, 63.7]", "+0.040 [+0.018, +0.062]".
ESTIMATE_WITH_INTERVAL = re.compile(r"([-+−]?\d+\.\d+)(?: ?%| points)? \[([-+−]?\d+\.\d+), ([-+−]?\d+\.\d+)\]")
# The reports' READMEs and the reproduction's findings: each quotes only numbers of its own folder's CSVs.
REPORT_DOCUMENTS = sorted(ROOT.glob("reports/*/README.md")) + [ROOT / "reports" / "reproduction" / "findings.md"]


def _numbers_in(tree) -> list[float]:
    if isinstance(tree, dict):
        return [x for value in tree.values() for x in _numbers_in(value)]
    if isinstance(tree, list):
        return [x for value in tree for x in _numbers_in(value)]
    return [float(tree)] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


# Columns naming the model a CSV row is about: a quoted number of such a row counts only in a passage naming that model.
MODEL_COLUMNS = ("model", "better", "worse", "model_a", "model_b")


def _rows_of(frame: pd.DataFrame):
    """(model names, values) per row: its numeric cells and the numbers written in its text cells
    ("0.191 [0.166, 0.215]"); rows of a CSV without a model column carry no names."""
    names = [c for c in MODEL_COLUMNS if c in frame.columns]
    for _, row in frame.iterrows():
        values = [float(v) for v in row if isinstance(v, (int, float)) and not isinstance(v, bool)]
        values += [float(n) for v in row if isinstance(v, str) for n in re.findall(r"-?\d+\.?\d*(?:e-?\d+)?", v)]
        yield {str(row[c]) for c in names}, np.array(values, float)


def _quotable_rows(folder: Path) -> list[tuple[set, np.ndarray]]:
    """Every value a report folder's prose may quote, with the models it is about: the cells of its summary
    CSVs, their means over seeds (per-seed CSVs), their quantiles over images (per-image CSVs), each image's
    clean fidelity from the audit's results.csv, and the settings in its manifests (about no model)."""
    rows = []
    for path in folder.rglob("*.csv"):
        if "records" in path.parts:
            continue
        frame = pd.read_csv(path)
        keys = [c for c in frame.columns if c not in frame.select_dtypes("number").columns]
        if path.name == "results.csv":  # row-level: only each image's clean fidelity (one value per image)
            clean = [c for c in frame.columns if c.endswith("_input_recon")]
            rows += _rows_of(frame.groupby(["model", "image_id"])[clean].mean().reset_index())
            continue
        if not {"seed", "image_id"} & set(frame.columns):  # per-seed and per-image rows: only their aggregates
            rows += _rows_of(frame)
        if "seed" in frame.columns and keys:
            rows += _rows_of(frame.drop(columns="seed").groupby(keys).mean(numeric_only=True).reset_index())
        if "image_id" in frame.columns:
            per_cell = frame.drop(columns="image_id").groupby(keys + [c for c in ("lambda",) if c in frame.columns])
            for quantile in (0, 0.05, 0.5, 1):
                rows += _rows_of(per_cell.quantile(quantile, numeric_only=True).reset_index())
    for path in folder.rglob("manifest.json"):
        if "records" not in path.parts:
            rows.append((set(), np.array(_numbers_in(json.loads(path.read_text())), float)))
    return rows


def _passages(text: str) -> list[str]:
    """Paragraphs of prose and single table rows, without code spans and indented command blocks."""
    text = re.sub(r"`[^`]*`", "", text)
    passages = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line for line in block.splitlines() if not line.startswith("    ")]
        table = [line for line in lines if line.lstrip().startswith("|")]
        passages += table + ["\n".join(line for line in lines if line not in table)]
    return passages


def _named(passage: str, names: set) -> bool:
    return any(re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", passage) for name in names)


def _matches(number: str, values: np.ndarray) -> np.ndarray:
    """Which values round to ``number`` at the precision quoted, either sign, also as a percentage."""
    decimals = len(number.split(".")[1].split("e")[0])
    value = abs(float(number.replace("−", "-")))
    tolerance = 0.5 * 10 ** -decimals * (1 + 1e-9)
    return (np.abs(np.abs(values) - value) <= tolerance) | (np.abs(100 * np.abs(values) - value) <= tolerance)


def _consecutive(numbers, values: np.ndarray) -> bool:
    """Whether the numbers are consecutive values of a row (an estimate and its interval's two ends)."""
    hits = [_matches(n.group(), values) for n in numbers]
    count = len(values) - len(hits) + 1
    return count > 0 and bool(np.logical_and.reduce([hit[k:k + count] for k, hit in enumerate(hits)]).any())


def unmatched_numbers(text: str, rows: list[tuple[set, np.ndarray]]) -> list[str]:
    """The decimals of ``text`` that no quotable value of a model the passage names rounds to at the
    precision quoted; an estimate with its interval, "0.191 [0.166, 0.215]", must be three consecutive
    values of one row."""
    missing = []
    for passage in _passages(text):
        if not PROSE_NUMBER.search(passage):
            continue
        models = {name for names, _ in rows for name in names if _named(passage, {name})}
        # a passage naming models may quote their rows and rows about no model; one naming none, any row
        allowed = [v[np.isfinite(v)] for names, v in rows if not models or not names or names & models]
        for estimate in ESTIMATE_WITH_INTERVAL.finditer(passage):
            numbers = [PROSE_NUMBER.fullmatch(n) for n in estimate.groups()]
            if all(numbers) and not any(_consecutive(numbers, v) for v in allowed):
                missing.append(estimate.group())
        values = np.concatenate(allowed + [np.array([])])
        missing += [n for n in PROSE_NUMBER.findall(ESTIMATE_WITH_INTERVAL.sub("", passage))
                    if not _matches(n, values).any()]
    return missing


@pytest.mark.parametrize("document", REPORT_DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_report_prose_quotes_only_numbers_of_its_committed_csvs(document):
    text = document.read_text()
    assert len(PROSE_NUMBER.findall(text)) >= 10  # the check has numbers to check
    assert unmatched_numbers(text, _quotable_rows(document.parent)) == []


def test_the_prose_check_catches_an_estimate_off_in_its_last_digit():
    document = ROOT / "reports" / "reproduction" / "findings.md"
    rows = _quotable_rows(document.parent)
    estimates = ESTIMATE_WITH_INTERVAL.findall(document.read_text())
    assert len(estimates) >= 10
    for mean, low, high in estimates:
        decimals = len(mean.split(".")[1])
        assert unmatched_numbers(f"{mean} [{low}, {high}]", rows) == []
        value = float(mean.replace("−", "-"))  # moved away from 0, which a count of 0 in the row would match
        tampered = f"{value + math.copysign(5 * 10 ** -decimals, value):+.{decimals}f} [{low}, {high}]"
        assert unmatched_numbers(f"it is {tampered}", rows) == [tampered], tampered
    assert unmatched_numbers("versions 2.11.0, `--lambda 0.123456`, fig2.5x and 3.1 min are not quotes", rows) == []
