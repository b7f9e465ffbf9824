"""Writing tables and figures: the one output path every report (audit, training, defend) uses.

``write_table`` renders one DataFrame as CSV (full precision, for programs) and as Markdown, LaTeX and
an HTML fragment (for readers). The human formats share one layout:

- the row index becomes the leading text columns, its names folded into the header (no empty rows);
- MultiIndex columns become grouped headers (HTML ``colspan``, LaTeX ``\\multicolumn`` + ``\\cmidrule``);
- a last column level of ``mean`` / ``std`` (or ``mean`` / ``low`` / ``high``) collapses into one cell
  "mean ± std" (or "mean [low, high]"); where the std or interval is missing the mean is printed alone;
  with ``n`` (and ``rows``) in that level too, the complete count most cells share is said once in the
  caption and the other cells carry their own "(n=100)" or "(n=800 of 1000)" (n: rows with a value;
  rows: all rows of the cell);
- numbers are right-aligned with a fixed number of decimals per column, so they align on the decimal
  point; float columns that hold only whole numbers (lambda, counts) print without decimals;
- ``directions`` puts ↑ / ↓ after a header ("higher / lower is more robust") and explains it in the caption.

The LaTeX is a ``table`` float with ``\\caption``, a unique ``\\label`` and booktabs rules; it needs only
``\\usepackage{booktabs, graphicx}`` (written as a comment at the top of every .tex file). A table wider than
the text width is scaled down to it (``\\resizebox``, only when wider); the audit report also writes
Table 1 and Table 3 one attack per file, which fit a 6.5 in text width unscaled. A "mean ± std" cell spans
two tabular columns (``r@{\\,}r``), so the means and the stds each align on their decimal points.

Header labels and cells are plain text, escaped for LaTeX, unless they already hold LaTeX markup (math
between dollars, a command, an escaped special; braces balanced): then they pass through, so callers can
hand over math such as ``$\\lambda = 1$``.
A ``Label`` gives one header a plain-text and a LaTeX spelling.
"""
from __future__ import annotations

import hashlib
import html
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

TABLE_FORMATS = ("csv", "md", "tex", "html")
FIGURE_FORMATS = ("png", "pdf")
LATEX_PACKAGES = ("booktabs", "graphicx")
STATISTICS = ("mean", "std", "low", "high", "n", "rows")
# statistics kept in a statistics frame for the CSV that no human cell prints (the trial spread, NaN rows)
CSV_ONLY_STATISTICS = ("trial_std", "nan_rows")
ARROWS = {"higher": ("↑", r"$\uparrow$"), "lower": ("↓", r"$\downarrow$")}
DEFAULT_DIRECTION_MEANING = "more robust"
MISSING = ("–", "--")  # (plain, LaTeX) text of a cell without a value

_LATEX_SPECIALS = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                   "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}
# characters pdflatex cannot typeset from plain UTF-8 input without extra packages
_LATEX_UNICODE = {"±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "≤": r"$\leq$", "≥": r"$\geq$",
                  "∞": r"$\infty$", "‖": r"$\|$", "−": "$-$", "–": "--", "—": "---", "×": r"$\times$",
                  "·": r"$\cdot$", **{greek: f"$\\{name}$" for greek, name in zip(
                      "αβγδεθλμρστ", ("alpha", "beta", "gamma", "delta", "epsilon", "theta", "lambda", "mu", "rho",
                                      "sigma", "tau"))}}


@dataclass(frozen=True)
class Label:
    """A header label with a plain-text spelling (HTML, Markdown) and a LaTeX one (None: the text, escaped)."""

    text: str
    latex: str | None = None

    def render(self, latex: bool) -> str:
        if not latex:
            return self.text
        return self.latex if self.latex is not None else latex_text(self.text)


_LATEX_MARKUP = re.compile(r"\$[^$]+\$|\\[A-Za-z]+|\\[&%$#_{}]")


def _is_latex_markup(text: str) -> bool:
    """Math (``$...$``), a command or an escaped special; balanced braces and dollars, no bare ``& % #``, and
    no ``\\\\`` (a line break: in a table cell it would end the row)."""
    unescaped = re.sub(r"\\.", "", text)
    return bool(_LATEX_MARKUP.search(text)) and unescaped.count("$") % 2 == 0 and \
        unescaped.count("{") == unescaped.count("}") and not re.search(r"[&%#]", unescaped) and \
        not text.endswith("\\") and "\\\\" not in text


def latex_text(text) -> str:
    """``text`` made safe for LaTeX; text that already holds LaTeX markup (math, commands) passes through."""
    text = str(text)
    if _is_latex_markup(text):
        return text
    # a letter with a combining tilde (x̃, a reconstruction) becomes math; pdflatex cannot set the combining mark
    parts = re.split("(.\u0303)", text)
    return "".join(f"$\\tilde{{{part[0]}}}$" if part.endswith("\u0303") else
                   "".join(_LATEX_UNICODE.get(ch, _LATEX_SPECIALS.get(ch, ch)) for ch in part) for part in parts)


# --- the layout shared by Markdown, LaTeX and HTML -------------------------------------------------------

@dataclass
class _Cell:
    """One rendered value: ``main`` (the number or text) and ``extra`` ("± 0.020", "[0.1, 0.3]" or "")."""

    main: str
    extra: str = ""
    count: tuple | None = None  # (n, rows) of a statistics cell


@dataclass
class _Column:
    header: tuple            # raw header values, one per column level ("" where a level is empty)
    cells: list              # one _Cell per row
    numeric: bool
    stub: bool = False       # a row-index column: its name sits in the bottom header row
    extra: bool = False      # some cell has a "± std" / interval part (LaTeX gives it a second tabular column)


@dataclass
class _Layout:
    columns: list
    levels: int
    caption: str | None
    label: str | None
    labels: Mapping
    directions: Mapping
    direction_meaning: str
    common_count: tuple | None = None  # the (n, rows) most cells share, said once in the caption
    count_unit: str = "rows"  # what n counts: rows, or the independent units (images) of a cell
    stem: str = "table"  # the file stem: the LaTeX caption of a table written without one

    def header_label(self, column: _Column, level: int, latex: bool) -> str:
        raw = column.header[level]
        if raw == "":
            return ""
        label = _lookup_label(self.labels, raw)
        text = label.render(latex) if isinstance(label, Label) else (
            latex_text(label) if latex else str(label))
        direction = self.directions.get(raw)
        if direction is not None:
            text = f"{text} {ARROWS[direction][1 if latex else 0]}"
        return text

    def caption_text(self, latex: bool) -> str | None:
        used = sorted({self.directions[raw] for column in self.columns for raw in column.header
                       if raw in self.directions})
        notes = [f"{ARROWS[d][1 if latex else 0]}: {d} is {self.direction_meaning}" for d in used]
        if self.common_count is not None:
            notes.append(f"n: the {self.count_unit} a mean averages; cells without n average "
                         f"{_count_text(*self.common_count)} {self.count_unit}")
        caption = self.caption if self.caption is None or not latex else latex_text(self.caption)
        if not notes:
            return caption
        return " ".join(part for part in (caption, "; ".join(notes) + ".") if part)


def _count_text(n, rows) -> str:
    return f"{int(n)}" if rows is None or n == rows else f"{int(n)} of {int(rows)}"


def _mark_uncommon_counts(columns: list) -> tuple | None:
    """Append "(n=...)" to the cells whose count differs from the most common complete one; returns that one."""
    # Only a complete count (every row holds a value) goes to the caption: missing values stay in their cells.
    counts = [cell.count for column in columns for cell in column.cells
              if cell.count is not None and cell.count[1] in (None, cell.count[0])]
    common = max(dict.fromkeys(counts), key=counts.count) if counts else None
    for column in columns:
        for cell in column.cells:
            if cell.count is not None and cell.count != common and (cell.count[1] or 0) > 0:
                cell.extra = f"{cell.extra} (n={_count_text(*cell.count)})".strip()
        column.extra = any(c.extra for c in column.cells)
    return common


def _lookup_label(labels: Mapping, raw):
    if raw in labels:
        return labels[raw]
    return str(raw).replace("_", " ")


def _is_whole(values: pd.Series) -> bool:
    """Whether every finite value is a whole number (a count or lambda stored as float)."""
    numbers = values.to_numpy(dtype=float)
    finite = numbers[np.isfinite(numbers)]
    return len(finite) > 0 and bool((finite == np.round(finite)).all() and (np.abs(finite) < 1e15).all())


def _number_text(value, fmt: str | None, whole: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if whole and math.isfinite(value):
        return str(int(round(value)))
    return fmt.format(value)


def _format_for(key: tuple, number_formats: Mapping, float_format: str) -> str:
    for raw in reversed(key):
        if raw in number_formats:
            return number_formats[raw]
    return float_format


_NUMBER_LIKE = re.compile(r"^\s*[-+−]?(\d|\.\d|inf|nan)", re.IGNORECASE)


def _layout(table: pd.DataFrame, float_format: str, number_formats: Mapping, caption, label, labels,
            directions, direction_meaning, count_unit: str = "rows", stem: str = "table") -> _Layout:
    columns: list[_Column] = []
    keys = [key if isinstance(key, tuple) else (key,) for key in table.columns]
    statistic_level = bool(keys) and len(keys[0]) > 1 and "mean" in {k[-1] for k in keys} and \
        {k[-1] for k in keys} <= set(STATISTICS) | set(CSV_ONLY_STATISTICS)
    levels = (len(keys[0]) - 1 if statistic_level else len(keys[0])) if keys else 1
    if not isinstance(table.index, pd.RangeIndex):
        index = table.index.to_frame(index=False)
        for position in range(table.index.nlevels):
            values = index.iloc[:, position].tolist()
            if position < table.index.nlevels - 1:  # blank the repeats of outer keys, as printed tables do
                outer = index.iloc[:, :position + 1].apply(tuple, axis=1).tolist()
                values = ["" if row and outer[row] == outer[row - 1] else v for row, v in enumerate(values)]
            name = table.index.names[position]
            columns.append(_Column(header=("" if name is None else name,) + ("",) * (levels - 1), stub=True,
                                   numeric=False, cells=[_Cell(_key_text(v)) for v in values]))
    if statistic_level:
        groups = list(dict.fromkeys(k[:-1] for k in keys if k[-1] not in CSV_ONLY_STATISTICS))
        for group in groups:
            fmt = _format_for(group, number_formats, float_format)
            part = {stat: table[(*group, stat)] if (*group, stat) in table.columns else None for stat in STATISTICS}
            if part["mean"] is None:
                raise ValueError(f"statistics columns {group} have no 'mean'")
            cells = []
            for row in range(len(table)):
                mean = part["mean"].iloc[row]
                cell = _Cell(_number_text(mean, fmt, False))
                std = None if part["std"] is None else part["std"].iloc[row]
                low = None if part["low"] is None else part["low"].iloc[row]
                high = None if part["high"] is None else part["high"].iloc[row]
                if cell.main and std is not None and not pd.isna(std):
                    cell.extra = f"± {fmt.format(std)}"
                elif cell.main and low is not None and high is not None and not (pd.isna(low) or pd.isna(high)):
                    cell.extra = f"[{fmt.format(low)}, {fmt.format(high)}]"
                n = None if part["n"] is None else part["n"].iloc[row]
                if n is not None and not pd.isna(n):
                    rows = None if part["rows"] is None else part["rows"].iloc[row]
                    cell.count = (int(n), None if rows is None or pd.isna(rows) else int(rows))
                cells.append(cell)
            columns.append(_Column(header=group, cells=cells, numeric=True))
        common_count = _mark_uncommon_counts(columns)
    else:
        for key, name in zip(keys, table.columns):
            series = table[name]
            if pd.api.types.is_bool_dtype(series):
                columns.append(_Column(header=key, numeric=False, cells=[_Cell(str(v)) for v in series]))
            elif pd.api.types.is_numeric_dtype(series):
                fmt = _format_for(key, number_formats, float_format)
                whole = _is_whole(series) and not any(raw in number_formats for raw in key)
                columns.append(_Column(header=key, numeric=True,
                                       cells=[_Cell(_number_text(v, fmt, whole)) for v in series]))
            else:
                texts = ["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in series]
                numeric_looking = any(texts) and all(_NUMBER_LIKE.match(t) for t in texts if t)
                columns.append(_Column(header=key, numeric=numeric_looking, cells=[_Cell(t) for t in texts]))
    return _Layout(columns, levels, caption, label, labels or {}, directions or {},
                   direction_meaning or DEFAULT_DIRECTION_MEANING, common_count if statistic_level else None,
                   count_unit, stem)


def _key_text(value) -> str:
    """A row key as text: floats such as lambda 1.0 or 0.05 in their shortest form."""
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass
class _Span:
    """One header cell: its label over columns first..last. ``kind``: "group" (has columns under it,
    ruled with \\cmidrule), "leaf" (a column's own label), "below" (under a leaf that ends higher up:
    HTML extends that leaf down, LaTeX leaves it blank) or "stub" (a row-index column)."""

    text: str
    first: int
    last: int
    kind: str


def _header_rows(layout: _Layout, latex: bool) -> list[list[_Span]]:
    """Header rows (levels where some column has a label; no empty rows), each a list of spans.

    Neighbouring columns share a group span where their headers agree up to that level. LaTeX puts
    each leaf label (and the stub names) in the bottom row, as booktabs tables do; HTML keeps a leaf
    at its own level and lets it span down.
    """
    kept = [level for level in range(layout.levels)
            if any(not c.stub and c.header[level] != "" for c in layout.columns)] or [layout.levels - 1]
    bottoms = [max([k for k, level in enumerate(kept) if c.header[level] != ""], default=len(kept) - 1)
               for c in layout.columns]
    rows = []
    for k, level in enumerate(kept):
        spans: list[_Span] = []
        for position, column in enumerate(layout.columns):
            bottom, last_row = bottoms[position], k == len(kept) - 1
            if column.stub:
                spans.append(_Span(layout.header_label(column, 0, latex) if last_row else "", position, position,
                                   "stub"))
            elif k < bottom:
                previous = spans[-1] if spans else None
                if previous and previous.kind == "group" and bottoms[position - 1] > k and \
                        layout.columns[position - 1].header[:level + 1] == column.header[:level + 1]:
                    previous.last = position
                else:
                    spans.append(_Span(layout.header_label(column, level, latex), position, position, "group"))
            elif k == bottom:
                label = layout.header_label(column, level, latex)
                spans.append(_Span("" if latex and not last_row else label, position, position,
                                   "below" if latex and not last_row else "leaf"))
            else:
                text = layout.header_label(column, kept[bottom], latex) if latex and last_row else ""
                spans.append(_Span(text, position, position, "leaf" if latex and last_row else "below"))
        rows.append(spans)
    return rows


def _to_markdown(layout: _Layout) -> str:
    def escape(text: str) -> str:
        return text.replace("|", r"\|")

    headers = []
    for column in layout.columns:
        parts = [layout.header_label(column, level, False) for level in range(1 if column.stub else layout.levels)]
        headers.append(", ".join(p for p in parts if p))
    lines = ["| " + " | ".join(escape(h) for h in headers) + " |",
             "|" + "|".join("---:" if c.numeric else ":---" for c in layout.columns) + "|"]
    for row in range(_row_count(layout)):
        cells = []
        for column in layout.columns:
            cell = column.cells[row]
            if not column.numeric:
                cells.append(cell.main)
            else:
                main = cell.main or MISSING[0]
                cells.append(f"{main} {cell.extra}" if cell.extra else main)
        lines.append("| " + " | ".join(escape(c) for c in cells) + " |")
    caption = layout.caption_text(False)
    if caption:
        lines += ["", f"Table: {caption}"]
    return "\n".join(lines) + "\n"


def _row_count(layout: _Layout) -> int:
    return len(layout.columns[0].cells) if layout.columns else 0


LONG_TEXT_CHARS = 30  # longer text cells wrap in a fixed-width paragraph column instead of widening the table


def _latex_column_spec(column: _Column) -> str:
    if column.extra:
        return "r@{\\,}r"
    if column.numeric:
        return "r"
    return "p{10em}" if max((len(c.main) for c in column.cells), default=0) > LONG_TEXT_CHARS else "l"


WRAP_HEADER_CHARS = 12  # longer column labels wrap onto lines of about this many characters


def _wrapped_header(text: str) -> str:
    """A long column label in a bottom-aligned, centred paragraph, so it does not set the column's width."""
    # a line can break at a space outside math only: "MSE($x, \\tilde{x}$)" is one word
    unbroken = re.sub(r"\$[^$]*\$", lambda math_text: math_text.group(0).replace(" ", ""), text)
    words = re.sub(r"\\[A-Za-z]+|[${}\\^_]", "", unbroken).split()
    visible = len(" ".join(words))
    if visible <= WRAP_HEADER_CHARS or len(words) < 2:
        return text
    line = visible / math.ceil(visible / WRAP_HEADER_CHARS)
    # about 0.5 em per character on a line; the longest word (no break inside it: "MSE(x, x̃)" stays whole)
    # at 0.62 em per character, since capitals and math are wider than the average
    width = max(0.62 * max(len(word) for word in words), 0.5 * line) + 0.5
    return f"\\parbox[b]{{{width:.1f}em}}{{\\centering {text}}}"


def _to_latex(layout: _Layout) -> str:
    widths = [2 if column.extra else 1 for column in layout.columns]
    starts = [sum(widths[:i]) + 1 for i in range(len(widths))]
    spec = " ".join(_latex_column_spec(c) for c in layout.columns)
    lines = [f"% Written by aerobust. Needs \\usepackage{{{', '.join(LATEX_PACKAGES)}}} in the preamble.",
             "\\begin{table}[tbp]", "\\centering", "\\small",
             "\\setlength{\\tabcolsep}{4pt}  % tighter than the default 6pt: paper tables are dense"]
    # every float is citable: a table without a caption gets its stem as one
    caption = layout.caption_text(True) or latex_text(layout.stem.replace("_", " ").capitalize() + ".")
    lines.append(f"\\caption{{{caption}}}")
    lines.append(f"\\label{{{layout.label}}}")
    # A table wider than the text is scaled down to the text width (graphicx's \width is the natural width),
    # one narrower is left at its size: every table fits the page; the per-attack panels stay readable.
    lines += ["\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%",
              f"\\begin{{tabular}}{{{spec}}}", "\\toprule"]
    for span_row in _header_rows(layout, True):
        cells, rules = [], []
        for span in span_row:
            width = sum(widths[span.first:span.last + 1])
            text = _wrapped_header(span.text) if span.kind == "leaf" else span.text
            cells.append(text if width == 1 else f"\\multicolumn{{{width}}}{{c}}{{{text}}}")
            if span.kind == "group" and span.text:
                rules.append(f"\\cmidrule(lr){{{starts[span.first]}-{starts[span.last] + widths[span.last] - 1}}}")
        lines.append(" & ".join(cells) + " \\\\")
        if rules:
            lines.append(" ".join(rules))
    lines.append("\\midrule")
    for row in range(_row_count(layout)):
        cells = []
        for column in layout.columns:
            cell = column.cells[row]
            cells.append(latex_text(cell.main) if cell.main else (MISSING[1] if column.numeric else ""))
            if column.extra:
                cells.append(latex_text(cell.extra).replace(r"$\pm$ ", r"$\pm$\,").replace("(n=", "($n$="))
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def _to_html(layout: _Layout) -> str:
    header_rows = _header_rows(layout, False)
    parts = ['<table class="aerobust-table">']
    caption = layout.caption_text(False)
    if caption:
        parts.append(f"<caption>{html.escape(caption)}</caption>")
    parts.append("<thead>")
    for number, span_row in enumerate(header_rows):
        cells = []
        for span in span_row:
            if span.kind == "below" or (span.kind == "stub" and number > 0):
                continue  # covered by a cell above that spans down
            if span.kind == "stub":
                name = layout.header_label(layout.columns[span.first], 0, False)
                rowspan = len(header_rows)
                css = ' class="text"'
            else:
                name = span.text
                rowspan = len(header_rows) - number if span.kind == "leaf" else 1  # all rows below are "below"
                css = ""
            attributes = (f' colspan="{span.last - span.first + 1}"' if span.last > span.first else "") + \
                (f' rowspan="{rowspan}"' if rowspan > 1 else "")
            cells.append(f'<th scope="col"{css}{attributes}>{html.escape(name)}</th>')
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</thead><tbody>")
    for row in range(_row_count(layout)):
        cells = []
        for column in layout.columns:
            cell = column.cells[row]
            if column.numeric:
                extra = f' <span class="pm">{html.escape(cell.extra)}</span>' if cell.extra else ""
                cells.append(f'<td class="num">{html.escape(cell.main or MISSING[0])}{extra}</td>')
            else:
                cells.append(f'<td class="text">{html.escape(cell.main)}</td>')
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    return "\n".join(parts) + "\n"


def write_table(table: pd.DataFrame, out_dir: str | os.PathLike, stem: str,
                formats: Iterable[str] = TABLE_FORMATS, float_format: str = "{:.4f}", *,
                caption: str | None = None, label: str | None = None, labels: Mapping | None = None,
                directions: Mapping[str, str] | None = None, direction_meaning: str | None = None,
                number_formats: Mapping[str, str] | None = None, count_unit: str = "rows") -> dict[str, Path]:
    """Write ``table`` as ``stem.csv/.md/.tex/.html`` under ``out_dir``; returns the paths by format.

    The CSV keeps full precision (and the index unless it is a plain RangeIndex). The human formats
    follow the module doc. Keyword arguments:

    - ``caption``: one sentence under which the table is cited (LaTeX: the stem when none is given);
      ``label``: the LaTeX label (default ``tab:STEM-HASH``, the hash of the table's content, so that
      tables of two reports never share a label and a rerun writes the same bytes).
    - ``labels``: ``{raw header value: str | Label}``; unmapped headers print with "_" as spaces.
    - ``directions``: ``{raw header value: "higher" | "lower"}``, which way is better; each marked
      header gets ↑ or ↓ and the caption says "↑: higher is DIRECTION_MEANING" (default "more robust").
    - ``number_formats``: ``{raw header value: "{:.2f}"}`` overriding ``float_format`` for the columns
      whose header holds that value (such columns are never shortened to whole numbers).
    - ``count_unit``: what a statistics frame's ``n`` counts ("rows", or "images" for image-level cells).
    """
    unknown = {v for v in (directions or {}).values()} - set(ARROWS)
    if unknown:
        raise ValueError(f"directions must be 'higher' or 'lower', got {sorted(unknown)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if label is None:
        # unique across reports (two reports' summaries must not share tab:summary), yet the same bytes on a rerun
        label = f"tab:{stem}-{hashlib.sha1(table.to_csv().encode()).hexdigest()[:8]}"
    layout = None
    written = {}
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        if fmt == "csv":
            table.to_csv(path, index=not isinstance(table.index, pd.RangeIndex))
        elif fmt in ("md", "tex", "html"):
            if layout is None:
                layout = _layout(table, float_format, number_formats or {}, caption, label, labels, directions,
                                 direction_meaning, count_unit, stem)
            path.write_text({"md": _to_markdown, "tex": _to_latex, "html": _to_html}[fmt](layout))
        else:
            raise ValueError(f"unknown table format {fmt}")
        written[fmt] = path
    return written


def save_figure(figure, out_dir: str | os.PathLike, stem: str, dpi: int = 200,
                formats: Sequence[str] = FIGURE_FORMATS) -> Path:
    """Save a matplotlib figure as ``stem.png`` and a vector ``stem.pdf`` beside it, then close it.

    Returns the PNG path (the HTML pages embed it). The PDF carries no creation date, so rerunning a
    report gives the same bytes.
    """
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None}}
    paths = {}
    for fmt in formats:
        paths[fmt] = out_dir / f"{stem}.{fmt}"
        figure.savefig(paths[fmt], dpi=dpi, bbox_inches="tight", metadata=metadata.get(fmt))
    plt.close(figure)
    return paths.get("png", next(iter(paths.values())))
