"""Every demo figure the README quotes equals the committed reports/demo file it comes from."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

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
            mean, low, high = (table.loc[model, f"{key}/{s}"] for s in ("mean", "low", "high"))
            # the cell is the mean with its 95 % interval over images, never the trial spread
            assert row[header] == f"{mean:.3f} [{low:.3f}, {high:.3f}]", (model, header)
            assert table.loc[model, f"{key}/n"] == table.loc[model, f"{key}/rows"]  # no image of a quoted cell dropped
    # the sentences under the table quote the table's numbers or the report's paired tests, not others
    prose = (ROOT / "README.md").read_text().split(MARKER)[1].split("\n\n")[1]
    cells = " ".join(quoted.to_numpy().ravel())
    paired = pd.read_csv(ROOT / "reports" / "demo" / "audit" / "report" / "paired_tests.csv")
    tested = {f"{abs(v):.3f}" for column in ("difference", "ci_low", "ci_high") for v in paired[column].dropna()}
    tested |= {f"{v:.3f}" for v in paired["p_holm"].dropna()}
    for number in re.findall(r"\d\.\d{3}", prose):
        assert number in cells or number in tested, number


# raw per-row data, not tables a README can quote from
PER_ROW_FILES = ("results.csv", "margins.csv", "per_seed.csv", "legacy_protocol.csv")


def _report_values(folder: Path) -> set[str]:
    """Every number of a report folder's CSVs and manifests (and its generated findings), in the ways prose
    quotes them: 1 to 4 decimals, unsigned, and as a percentage."""
    texts: set[str] = set()

    def add(value: float):
        for v in (value, abs(value), 100 * value, abs(100 * value)):
            texts.update(f"{v:.{d}f}" for d in range(0, 5))

    for csv in folder.rglob("*.csv"):
        if csv.name in PER_ROW_FILES:  # thousands of raw rows would match almost any number by chance
            continue
        frame = pd.read_csv(csv)
        for column in frame.columns:
            values = pd.to_numeric(frame[column], errors="coerce").dropna()
            for value in values:
                add(float(value))
            for cell in frame[column].dropna().astype(str):  # numbers inside text cells ("0.45 [0.43, 0.47]")
                for number in re.findall(r"[-+]?\d+\.?\d*", cell):
                    add(float(number))
    for generated in list(folder.rglob("manifest.json")) + list(folder.rglob("findings.md")):
        for number in re.findall(r"[-+]?\d+\.\d+", generated.read_text()):
            add(float(number))
    return texts


def _quoted_numbers(text: str) -> list[str]:
    """Decimal numbers in prose (not in code spans, where commands and file names live)."""
    prose = re.sub(r"`[^`]*`", " ", text)
    prose = re.sub(r"^    .*$", " ", prose, flags=re.M)  # indented command blocks
    return re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", prose)


def test_the_number_check_catches_a_number_that_no_table_holds(tmp_path):
    pd.DataFrame({"model": ["a"], "score": [0.4567]}).to_csv(tmp_path / "table.csv", index=False)
    values = _report_values(tmp_path)
    assert "0.457" in values and "45.7" in values
    assert [n for n in _quoted_numbers("a scores 0.457 (45.7 %), not 0.512; `cmd --x 0.9`") if n not in values] == \
        ["0.512"]


def test_report_readmes_and_findings_quote_only_numbers_of_their_committed_csvs():
    missing = {}
    for readme in sorted((ROOT / "reports").glob("*/README.md")) + [ROOT / "reports" / "reproduction" / "findings.md"]:
        values = _report_values(readme.parent)
        lost = [number for number in _quoted_numbers(readme.read_text()) if number not in values]
        if lost:
            missing[str(readme.relative_to(ROOT))] = lost
    assert missing == {}


INTERVAL = re.compile(r"([-+]?\d+\.(\d+)) \[([-+]?\d+\.\d+), ([-+]?\d+\.\d+)\]")


def _row_texts(folder: Path) -> list[set[str]]:
    """Per CSV row of a report folder: its numbers as texts (1-4 decimals, unsigned too), numbers inside
    text cells included: a quoted "mean [low, high]" must come from ONE row, not three places."""
    rows = []
    for csv in folder.rglob("*.csv"):
        if csv.name in PER_ROW_FILES:
            continue
        for record in pd.read_csv(csv).astype(str).itertuples(index=False):
            texts = set()
            for cell in record:
                for number in re.findall(r"[-+]?\d+\.?\d*(?:e[-+]?\d+)?", str(cell)):
                    value = float(number)
                    for v in (value, abs(value), 100 * value, abs(100 * value)):
                        texts.update(f"{v:.{d}f}" for d in range(1, 5))
            rows.append(texts)
    return rows


def test_quoted_intervals_come_from_one_row_of_a_committed_table():
    missing = {}
    for readme in sorted((ROOT / "reports").glob("*/README.md")) + [ROOT / "README.md"]:
        folder = readme.parent if readme.parent != ROOT else ROOT / "reports" / "demo"
        # a README may quote another report it names ("`reports/demo/audit/report`")
        named = {ROOT / "reports" / name for name in re.findall(r"`reports/([\w-]+)", readme.read_text())}
        rows = [row for source in {folder, *named} for row in _row_texts(source)]
        prose = re.sub(r"`[^`]*`", " ", readme.read_text())
        for mean, _, low, high in INTERVAL.findall(prose):
            triple = {t.lstrip("+") for t in (mean, low, high)}
            if not any(triple <= row for row in rows):
                missing.setdefault(str(readme.relative_to(ROOT)), []).append(f"{mean} [{low}, {high}]")
    assert missing == {}
