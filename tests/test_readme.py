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
            mean, std, n = table.loc[model, f"{key}/mean"], table.loc[model, f"{key}/std"], table.loc[model, f"{key}/n"]
            # a clean column is one value per image, the same in every trial: a mean without std
            assert row[header] == (f"{mean:.3f} ± {std:.3f}" if np.isfinite(std) else f"{mean:.3f}"), (model, header)
            assert n == table.loc[model, f"{key}/rows"]  # no row of a quoted cell was dropped
    # the sentence under the table quotes the same numbers, not others
    prose = (ROOT / "README.md").read_text().split(MARKER)[1].split("\n\n")[1]
    cells = " ".join(quoted.to_numpy().ravel())
    for number in re.findall(r"\d\.\d{3}", prose):
        assert number in cells, number
