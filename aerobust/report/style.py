"""One figure style for every report: drawn at the size it is printed, so fonts read at a paper's column width.

A figure made with ``paper_figure(width="single")`` is 3.3 in wide (one column of a two-column paper),
``"double"`` 7 in (the full text width); its fonts are 7-8 pt at that size, so it goes into LaTeX at
``width=\\columnwidth`` (or ``\\textwidth``) without shrinking the text. ``writer.save_figure`` writes a
PNG (for pages) and a vector PDF (for papers) of it.

The style is applied only inside ``paper_style()`` (or a function decorated with ``styled``): it never
changes a user's own matplotlib defaults. Text size is fixed when a text is created, so the whole
figure must be built inside the style, not only saved in it.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager

SINGLE_COLUMN_IN = 3.3
DOUBLE_COLUMN_IN = 7.0
WIDTHS = {"single": SINGLE_COLUMN_IN, "double": DOUBLE_COLUMN_IN}

# Okabe & Ito's palette: distinguishable with the common colour-vision deficiencies and in greyscale print.
COLORS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")

PAPER_RC = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 7, "legend.title_fontsize": 7, "figure.titlesize": 9,
    "axes.linewidth": 0.6, "lines.linewidth": 1.2, "lines.markersize": 3.5, "patch.linewidth": 0.6,
    "xtick.major.width": 0.6, "ytick.major.width": 0.6, "xtick.major.size": 2.5, "ytick.major.size": 2.5,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5,
    "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
    "axes.titlepad": 4.0, "axes.labelpad": 2.0,
    "pdf.fonttype": 42, "ps.fonttype": 42,  # TrueType in the PDF: text stays text for journals and editors
    "image.cmap": "viridis",
}


def _matplotlib():
    import matplotlib
    matplotlib.use("Agg")  # reports are written without a display
    import matplotlib.pyplot as plt
    from cycler import cycler
    return matplotlib, plt, cycler


@contextmanager
def paper_style():
    """Inside this block, new figures get the report style (fonts, line widths, colours)."""
    matplotlib, _, cycler = _matplotlib()
    with matplotlib.rc_context({**PAPER_RC, "axes.prop_cycle": cycler(color=COLORS)}):
        yield


def styled(function):
    """Decorator: build the figure returned by ``function`` inside ``paper_style``."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with paper_style():
            return function(*args, **kwargs)
    return wrapper


def paper_figure(nrows: int = 1, ncols: int = 1, *, width: str | float = "single", height: float | None = None,
                 **subplots_kwargs):
    """``plt.subplots`` at print size with constrained layout; axes always 2-D (``squeeze=False``).

    ``width`` is "single" (3.3 in), "double" (7 in) or inches; ``height`` defaults to 0.75 of a panel's
    width per row. Call it inside ``paper_style`` (or a ``styled`` function).
    """
    _, plt, _ = _matplotlib()
    if isinstance(width, str) and width not in WIDTHS:
        raise ValueError(f"width must be one of {', '.join(WIDTHS)} or a number of inches, got {width!r}")
    inches = WIDTHS[width] if isinstance(width, str) else float(width)
    if height is None:
        height = 0.75 * inches / ncols * nrows
    return plt.subplots(nrows, ncols, figsize=(inches, height), squeeze=False, layout="constrained",
                        **subplots_kwargs)
