"""Compile LaTeX tables the way a paper would include them: a standard preamble at a 6.5 in text width."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

PREAMBLE = ("\\documentclass{article}\\usepackage[T1]{fontenc}\\usepackage[textwidth=6.5in]{geometry}"
            "\\usepackage{booktabs,amsmath,amssymb,graphicx,multirow,array}")
# TeX reports boxes a hair too wide from rounding; anything past this is a table that does not fit
OVERFULL_TOLERANCE_PT = 1.0


def require_pdflatex():
    """Skip without pdflatex on a developer's machine; in CI (.ci/run installs TeX Live) its absence fails."""
    if shutil.which("pdflatex") is None:
        if os.environ.get("CI"):
            pytest.fail("pdflatex is missing in CI: .ci/run must install texlive-latex-recommended and -extra")
        pytest.skip("pdflatex is not installed (apt-get install texlive-latex-recommended texlive-latex-extra)")


def compile_problems(tex: Path, work: Path) -> list[str]:
    """What is wrong with one table file: a LaTeX error, an overfull box, a missing float, caption or label."""
    source = tex.read_text()
    problems = [f"{tex}: no {what}" for what, pattern in (("table float", r"\\begin\{table\}"),
                                                          ("caption", r"\\caption\{"), ("label", r"\\label\{"))
                if not re.search(pattern, source)]
    folder = work / re.sub(r"[^A-Za-z0-9]+", "_", str(tex))[-100:]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "doc.tex").write_text(f"{PREAMBLE}\\begin{{document}}\\input{{{tex.resolve()}}}\\end{{document}}\n")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=folder,
                         capture_output=True, text=True, timeout=120)
    log = (folder / "doc.log").read_text(errors="replace")
    if run.returncode != 0:
        problems.append(f"{tex}: " + "; ".join(re.findall(r"^! .*", log, re.M)[:2]))
    widths = [float(w) for w in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide\)", log)]
    if widths and max(widths) > OVERFULL_TOLERANCE_PT:
        problems.append(f"{tex}: {max(widths):.0f} pt wider than a 6.5 in text width")
    return problems


def check_tables(files: list[Path], work: Path) -> list[str]:
    """Every problem of every file, and labels used by more than one file."""
    with ThreadPoolExecutor(2) as pool:
        problems = [p for found in pool.map(lambda f: compile_problems(f, work), files) for p in found]
    labels: dict[str, list[Path]] = {}
    for tex in files:
        for label in re.findall(r"\\label\{([^}]*)\}", tex.read_text()):
            labels.setdefault(label, []).append(tex)
    problems += [f"label {label} used by {len(paths)} files" for label, paths in labels.items() if len(paths) > 1]
    return problems
