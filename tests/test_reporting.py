"""The table writer and figure saver every report uses: clean headers, honest cells, booktabs LaTeX."""
from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings as hypothesis_settings, strategies as st

from aerobust.report.writer import Label, latex_text, save_figure, write_table


def _statistics_table() -> pd.DataFrame:
    """A Table-1-like frame: rows per model, columns (attack, metric, lambda, mean|std)."""
    keys = [(attack, metric, lam, stat) for attack in ("latent", "max-damage") for metric in ("msssim_a", "msssim_b")
            for lam in ("1", "3") for stat in ("mean", "std")]
    columns = pd.MultiIndex.from_tuples(keys, names=["attack", "metric", "lambda", "statistic"])
    values = np.arange(2 * len(keys), dtype=float).reshape(2, len(keys)) / 100 + 0.5
    table = pd.DataFrame(values, columns=columns, index=pd.Index(["ae", "coupled_ks"], name="model"))
    table.loc["ae", ("latent", "msssim_a", "1", "std")] = np.nan  # a cell measured once: no std to show
    return table


class _Rows(HTMLParser):
    """Rows of an HTML table as lists of (tag, text, colspan, rowspan); the caption separately."""

    def __init__(self):
        super().__init__()
        self.rows, self.caption, self._cell, self._in_caption = [], "", None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("th", "td"):
            self._cell = [tag, "", int(attrs.get("colspan", 1)), int(attrs.get("rowspan", 1))]
        elif tag == "caption":
            self._in_caption = True

    def handle_endtag(self, tag):
        if tag in ("th", "td"):
            self.rows[-1].append(tuple(self._cell))
            self._cell = None
        elif tag == "caption":
            self._in_caption = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data
        elif self._in_caption:
            self.caption += data


def _html_rows(path) -> _Rows:
    parser = _Rows()
    parser.feed(path.read_text())
    return parser


def _latex_body(text: str) -> list[str]:
    """The tabular rows between \\toprule and \\bottomrule, rules removed, split at '\\\\'."""
    inner = text[text.index("\\toprule") + len("\\toprule"):text.index("\\bottomrule")]
    inner = re.sub(r"\\(midrule|cmidrule\(lr\)\{\d+-\d+\})", "", inner)
    return [row.strip() for row in inner.split("\\\\") if row.strip()]


def _latex_cells(row: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)&", row)]


def _latex_width(cell: str) -> int:
    match = re.match(r"\\multicolumn\{(\d+)\}", cell)
    return int(match.group(1)) if match else 1


def _latex_column_count(text: str) -> int:
    spec = re.search(r"\\begin\{tabular\}\{(.*)\}\n", text).group(1)
    spec = re.sub(r"@\{[^}]*\}", "", spec)
    return len(re.findall(r"p\{[^}]*\}|[lrc]", spec))


def check_booktabs_structure(text: str) -> None:
    """What the writer promises about every .tex file (used by the tests below and the property test)."""
    for environment in ("table", "tabular"):
        assert text.count(f"\\begin{{{environment}}}") == text.count(f"\\end{{{environment}}}") == 1
    assert text.index("\\begin{table}") < text.index("\\begin{tabular}") < text.index("\\end{tabular}") \
        < text.index("\\end{table}")
    rules = [text.index(rule) for rule in ("\\toprule", "\\midrule", "\\bottomrule")]
    assert rules == sorted(rules) and text.count("\\midrule") == 1
    columns = _latex_column_count(text)
    for row in _latex_body(text):
        assert sum(_latex_width(cell) for cell in _latex_cells(row)) == columns, row
    for first, last in re.findall(r"\\cmidrule\(lr\)\{(\d+)-(\d+)\}", text):
        assert 1 <= int(first) <= int(last) <= columns
    assert len(re.findall(r"(?<!\\)\{", text)) == len(re.findall(r"(?<!\\)\}", text))


def test_headers_have_no_empty_rows_and_fold_the_index_name(tmp_path):
    written = write_table(_statistics_table(), tmp_path, "t1")
    rows = _html_rows(written["html"]).rows
    header = [row for row in rows if row and all(tag == "th" for tag, *_ in row)]
    assert len(header) == 3  # attack, metric, lambda: the statistic level is folded into the cells
    assert all(any(text.strip() for _, text, *_ in row) for row in header)
    assert header[0][0][1] == "model" and header[0][0][3] == 3  # the index name spans the header rows
    assert [(text, span) for _, text, span, _ in header[0][1:]] == [("latent", 4), ("max-damage", 4)]
    body = [row for row in rows if row and row[0][0] == "td"]
    assert [row[0][1] for row in body] == ["ae", "coupled_ks"] and all(len(row) == 1 + 8 for row in body)
    markdown = written["md"].read_text().splitlines()
    assert markdown[0].startswith("| model | latent, msssim a, 1 |") and set(markdown[1]) <= set("|:-")
    assert all(line.startswith("| ae") or line.startswith("| coupled_ks") for line in markdown[2:4])
    latex = written["tex"].read_text()
    check_booktabs_structure(latex)
    header_rows = _latex_body(latex)[:3]
    assert all(any(cell for cell in _latex_cells(row)) for row in header_rows)
    assert _latex_cells(header_rows[-1])[0] == "model"


def test_a_lone_value_is_printed_without_plus_minus(tmp_path):
    table = _statistics_table()
    written = write_table(table, tmp_path, "t1", float_format="{:.2f}")
    lone, paired = table[("latent", "msssim_a", "1", "mean")]["ae"], table[("latent", "msssim_a", "3", "mean")]["ae"]
    paired_std = table[("latent", "msssim_a", "3", "std")]["ae"]
    ae_row = next(line for line in written["md"].read_text().splitlines() if line.startswith("| ae"))
    cells = [cell.strip() for cell in ae_row.strip("|").split("|")]
    assert cells[1] == f"{lone:.2f}" and cells[2] == f"{paired:.2f} ± {paired_std:.2f}"
    html_cells = [row for row in _html_rows(written["html"]).rows if row and row[0][1] == "ae"][0]
    assert html_cells[1][1] == f"{lone:.2f}" and "±" not in html_cells[1][1]
    latex_row = _latex_cells(next(row for row in _latex_body(written["tex"].read_text()) if row.startswith("ae")))
    assert latex_row[1:5] == [f"{lone:.2f}", "", f"{paired:.2f}", rf"$\pm$\,{paired_std:.2f}"]
    zero = pd.DataFrame({("acc", "mean"): [84.0], ("acc", "std"): [0.0]}, index=pd.Index(["m"], name="model"))
    text = write_table(zero, tmp_path, "zero", formats=("md",), float_format="{:.2f}")["md"].read_text()
    assert "84.00 ± 0.00" in text  # a measured std of zero is a number, not a missing one


def test_intervals_are_shown_where_both_ends_exist(tmp_path):
    table = pd.DataFrame({("auc", "mean"): [0.8, 0.7], ("auc", "low"): [0.75, np.nan], ("auc", "high"): [0.85, 0.9]},
                         index=pd.Index(["a", "b"], name="model"))
    text = write_table(table, tmp_path, "ci", formats=("md",), float_format="{:.2f}")["md"].read_text()
    assert "| a | 0.80 [0.75, 0.85] |" in text and "| b | 0.70 |" in text


def test_whole_numbers_print_without_decimals(tmp_path):
    flags = pd.DataFrame({"model": ["ae"], "lambda": [3.0], "count": [2.0], "of": [10], "ratio": [0.5]})
    text = write_table(flags, tmp_path, "flags", formats=("md",))["md"].read_text()
    assert text.splitlines()[2] == "| ae | 3 | 2 | 10 | 0.5000 |"
    assert text.splitlines()[0] == "| model | lambda | count | of | ratio |"  # a RangeIndex is not printed
    forced = write_table(flags, tmp_path, "forced", formats=("md",), number_formats={"lambda": "{:.1f}"})
    assert "| ae | 3.0 | 2 |" in forced["md"].read_text()


def test_arrows_mark_directions_and_the_caption_explains_them(tmp_path):
    table = pd.DataFrame({"accuracy": [0.9], "loss": [0.1], "images": [100]}, index=pd.Index(["ae"], name="model"))
    written = write_table(table, tmp_path, "dir", caption="Accuracy & loss.", directions={"accuracy": "higher",
                                                                                        "loss": "lower"},
                          labels={"loss": Label("loss ‖x‖", r"loss $\|x\|$")})
    markdown = written["md"].read_text()
    assert markdown.splitlines()[0] == "| model | accuracy ↑ | loss ‖x‖ ↓ | images |"
    assert "Table: Accuracy & loss. ↑: higher is more robust; ↓: lower is more robust." in markdown
    parser = _html_rows(written["html"])
    assert [text for _, text, *_ in parser.rows[0]] == ["model", "accuracy ↑", "loss ‖x‖ ↓", "images"]
    assert parser.caption.endswith("↓: lower is more robust.")
    latex = written["tex"].read_text()
    assert r"accuracy $\uparrow$ & loss $\|x\|$ $\downarrow$ & images \\" in latex
    assert r"\caption{Accuracy \& loss. $\uparrow$: higher is more robust" in latex
    assert re.search(r"\\label\{tab:dir-[0-9a-f]{8}\}", latex)  # unique: the stem and a hash of the content
    with pytest.raises(ValueError, match="higher"):
        write_table(table, tmp_path, "bad", directions={"loss": "down"})


def test_latex_escaping_keeps_markup_and_escapes_plain_text():
    assert latex_text("coupled_ks 5% #1 {x}") == r"coupled\_ks 5\% \#1 \{x\}"
    assert latex_text("budget ε ± 0.1") == r"budget $\epsilon$ $\pm$ 0.1"
    assert latex_text(r"$\lambda = 1$") == r"$\lambda = 1$"
    # "\\" is a line break, never a label's markup: in a table cell it ends the row (found by the property test below)
    assert latex_text("\\\\\\&") == r"\textbackslash{}\textbackslash{}\textbackslash{}\&"


def test_csv_keeps_full_precision_and_index(tmp_path):
    table = _statistics_table()
    flat = table.copy()
    flat.columns = ["/".join(key) for key in table.columns]
    path = write_table(flat, tmp_path, "full", formats=("csv",))["csv"]
    read = pd.read_csv(path, index_col=0)
    assert read.index.name == "model" and np.allclose(read.to_numpy(), flat.to_numpy(), equal_nan=True)


_TEXT = st.text(alphabet=st.sampled_from(list("ab_%&$#{}~^\\ λ±x1")), max_size=6)


@hypothesis_settings(max_examples=25, deadline=None)
@given(n_rows=st.integers(0, 4), n_groups=st.integers(1, 3), n_metrics=st.integers(1, 2),
       stds=st.lists(st.one_of(st.none(), st.floats(0, 5)), min_size=24, max_size=24),
       names=st.lists(_TEXT, min_size=4, max_size=4), with_index=st.booleans())
def test_latex_structure_holds_for_any_table(tmp_path_factory, n_rows, n_groups, n_metrics, stds, names, with_index):
    """Any frame (grouped statistics, missing stds, LaTeX specials in names) gives balanced booktabs LaTeX."""
    keys = [(f"{names[0]}{g}", f"{names[1]}{m}", stat) for g in range(n_groups) for m in range(n_metrics)
            for stat in ("mean", "std")]
    data = {key: [float(r) + 0.25 if key[2] == "mean" else (np.nan if stds[r] is None else stds[r])
                  for r in range(n_rows)] for key in keys}
    table = pd.DataFrame(data, columns=pd.MultiIndex.from_tuples(keys))
    if with_index:
        table.index = pd.Index([f"{names[2]}{r}" for r in range(n_rows)], name=names[3] or None)
    out = tmp_path_factory.mktemp("prop")
    written = write_table(table, out, "t", formats=("tex", "md"), caption=f"caption {names[2]}")
    check_booktabs_structure(written["tex"].read_text())
    lines = written["md"].read_text().split("\n\nTable:")[0].splitlines()
    counts = {len(re.split(r"(?<!\\)\|", line)) for line in lines}
    assert len(counts) == 1 and len(lines) == 2 + n_rows


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed (apt-get install "
                    "texlive-latex-base texlive-latex-recommended to check that the .tex compiles)")
def test_latex_compiles_with_pdflatex_and_booktabs(tmp_path):
    write_table(_statistics_table(), tmp_path, "t1", caption="Table 1.", directions={"msssim_a": "higher"},
                labels={"msssim_b": Label("b", r"MS-SSIM($x, \tilde{x}_a$)")})
    write_table(pd.DataFrame({"model": ["a_b"], "lambda": [3.0], "message": ["50% of ε-ball " * 4]}), tmp_path, "flags")
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\\usepackage{booktabs,graphicx}\\begin{document}\n"
                                      "\\input{t1.tex}\n\\input{flags.tex}\n\\end{document}\n")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0


def test_save_figure_writes_a_pdf_beside_the_png_reproducibly(tmp_path):
    from aerobust.report.style import paper_figure, paper_style

    def draw():
        with paper_style():
            figure, axes = paper_figure(1, 2, width="double")
            axes[0][0].plot([0, 1], [1, 0], label="line")
            axes[0][1].imshow(np.eye(3))
            return figure

    png = save_figure(draw(), tmp_path / "a", "fig")
    assert png == tmp_path / "a" / "fig.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pdf = png.with_suffix(".pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    save_figure(draw(), tmp_path / "b", "fig")
    assert (tmp_path / "b" / "fig.pdf").read_bytes() == pdf.read_bytes()


def test_paper_style_sets_print_sizes_without_touching_global_defaults():
    import matplotlib

    from aerobust.report.style import DOUBLE_COLUMN_IN, PAPER_RC, paper_figure, styled

    before = matplotlib.rcParams["font.size"]

    @styled
    def draw():
        figure, axes = paper_figure(2, 3, width="double")
        return figure, axes[0][0].set_title("t").get_fontsize()

    figure, title_size = draw()
    assert figure.get_size_inches()[0] == pytest.approx(DOUBLE_COLUMN_IN) and title_size == PAPER_RC["axes.titlesize"]
    assert matplotlib.rcParams["font.size"] == before
    with pytest.raises(ValueError, match="single"):
        paper_figure(width="poster")
    import matplotlib.pyplot as plt
    plt.close(figure)


def test_defend_report_writes_readable_tables_and_figures(tmp_path):
    """The defend report from small synthetic results: grouped AUC tables, PNG + PDF figures, log-scale OOD bins."""
    from aerobust.report.defend import _ood_bins, write_defend_report
    from aerobust.classifier_defense.suite import DefendResults

    generator = np.random.default_rng(0)
    purification = pd.DataFrame([{"attack": attack, "norm": norm, "budget": budget, "n": 20, "clean_acc": 0.9,
                                  "purified_clean_acc": 0.85, "adversarial_acc": 0.5 - budget / 10,
                                  "purified_acc": 0.6, "adaptive_acc": 0.3, "mean_perturbation": budget,
                                  "verdict": "no help", "model": model}
                                 for model in ("ae", "vae") for attack, norm in (("fgsm", "linf"), ("cw", "l2"))
                                 for budget in ((0.1, 0.2) if norm == "linf" else (1.0, 2.0))])
    detection = purification[["attack", "norm", "budget", "model"]].merge(
        pd.DataFrame({"attack_target": ["classifier", "purifier"]}), how="cross")
    detection = detection.assign(n_clean=20, n_adversarial=8, **{
        f"{stat}_{score}": generator.random(len(detection))
        for score in ("distinct_labels", "label_entropy", "softmax_entropy") for stat in ("auc", "clean_mean", "adv_mean")})
    scores = {"in-distribution": {"reconstruction_error": torch.rand(50) * 0.02 + 0.01,
                                  "negative_prior_loglik": torch.randn(50) + 20},
              "uniform-noise": {"reconstruction_error": torch.rand(50) + 0.5,
                                "negative_prior_loglik": torch.randn(50) + 25}}
    ood = pd.DataFrame([{"ood_set": "uniform-noise", "n_in": 50, "n_ood": 50, "auc_reconstruction_error": 1.0,
                         "auc_negative_prior_loglik": 0.9, "model": model, "prior": "standard-normal"}
                        for model in ("ae", "vae")])
    points = pd.DataFrame({"model": np.repeat(["ae", "vae"], 30), "confidence": generator.random(60),
                           "reconstruction_error": generator.random(60) * 0.05 + 0.001,
                           "correct": generator.random(60) > 0.2})
    bins = pd.DataFrame({"model": ["ae", "ae", "vae", "vae"], "bin": [0, 1, 0, 1], "n": 15,
                         "mean_confidence": [0.3, 0.8, 0.3, 0.8], "accuracy": [0.5, 0.9, 0.6, 0.9],
                         "mean_reconstruction_error": [0.03, 0.02, 0.03, 0.02]})
    stats = pd.DataFrame({"spearman_rho": [-0.2, -0.3], "spearman_p": [0.01, 0.001], "n": 30, "model": ["ae", "vae"]})
    results = DefendResults(purification=purification, detection=detection, ood=ood, calibration_bins=bins,
                            calibration_stats=stats, calibration_points=points,
                            ood_scores={"ae": scores, "vae": scores}, notes=[], priors={}, sample_ids=[0, 1])
    write_defend_report(results, tmp_path, command="test", config={}, seed=0, device="cpu")
    for figure in ("purification", "detection", "ood_scores", "calibration"):
        assert (tmp_path / f"{figure}.png").stat().st_size > 0 and (tmp_path / f"{figure}.pdf").stat().st_size > 0
    header = _html_rows(tmp_path / "detection.html").rows[:2]
    assert [text for _, text, *_ in header[0]][-1] == "ROC-AUC ↑" and header[0][-1][2] == 3
    assert [text for _, text, *_ in header[1]] == ["distinct labels", "label-vote entropy", "mean-softmax entropy"]
    for stem in ("purification", "detection", "ood", "calibration_bins", "calibration_stats", "summary"):
        check_booktabs_structure((tmp_path / f"{stem}.tex").read_text())
    assert pd.read_csv(tmp_path / "detection.csv").shape == detection.shape  # the CSV keeps every column
    edges, logarithmic = _ood_bins([scores["in-distribution"]["reconstruction_error"].numpy(),
                                    scores["uniform-noise"]["reconstruction_error"].numpy()])
    assert logarithmic and edges[0] <= 0.03 and edges[-1] >= 0.5  # the full range: nothing piles up at a clip edge
    assert not _ood_bins([np.array([18.0, 22.0]), np.array([25.0, 30.0])])[1]


def test_a_shared_complete_count_goes_to_the_caption_and_the_others_stay_in_their_cells(tmp_path):
    columns = pd.MultiIndex.from_tuples([(metric, stat) for metric in ("a", "b", "c") for stat in ("mean", "std", "n", "rows")],
                                        names=["metric", "statistic"])
    table = pd.DataFrame([[0.5, 0.1, 1000, 1000, 0.6, 0.1, 1000, 1000, 0.7, np.nan, 100, 100],
                          [0.4, 0.1, 1000, 1000, 0.3, 0.2, 800, 1000, np.nan, np.nan, 0, 100]],
                         columns=columns, index=pd.Index(["m1", "m2"], name="model"))
    written = write_table(table, tmp_path, "counts", float_format="{:.2f}", caption="Counts.")
    markdown = written["md"].read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]]
            for line in markdown.splitlines() if line.startswith("| m")}
    assert rows["m1"] == ["0.50 ± 0.10", "0.60 ± 0.10", "0.70 (n=100)"]
    assert rows["m2"] == ["0.40 ± 0.10", "0.30 ± 0.20 (n=800 of 1000)", "– (n=0 of 100)"]
    assert "cells without n average 1000" in markdown
    latex = written["tex"].read_text()
    check_booktabs_structure(latex)
    assert r"($n$=800 of 1000)" in latex and "cells without n average 1000" in latex
