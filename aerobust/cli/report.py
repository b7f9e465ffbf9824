"""``aerobust report`` and ``aerobust compare``: tables, figures and HTML from saved audit results."""
from __future__ import annotations

import click

from ..report import build_report, write_comparison
from ..report.training import build_training_report, is_training_run
from .common import OutputFolder


@click.command("report")
@click.argument("results_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", type=OutputFolder(), default=None,
              help="Where to write the report [default: RESULTS_DIR/report].")
@click.option("--table2", is_flag=True,
              help="Also write Table 2 (the ablation layout) over all models; it is written anyway when the "
                   "models are named as the paper's ablation rows (GMM-DAE, Augmented, Ours / coupled-KS).")
def report_command(results_dir, out_dir, table2):
    """Rebuild the tables, figures and HTML page of an audit (or a training run) from its saved results.

    Reads RESULTS_DIR/results.csv, manifest.json and examples.npz (nothing is re-run) and writes
    Table 1 (clean MS-SSIM, then MS-SSIM under attack), Table 3 (latent classifier, when audited),
    clean fidelity and code sensitivity, a summary of every metric (each as CSV, Markdown, LaTeX and
    HTML; every cell with the number of rows it averages), the sanity flags (repeated flags merged,
    loss not monotone in lambda checked across the saved lambdas), Fig. 2 (attack loss against
    lambda), robustness against fidelity, Fig. 3 example grids, a self-contained report.html and
    manifest.json.

    For a training run (the --out directory of `aerobust train`, holding history.jsonl) it writes
    the loss curves per epoch (training_curves.png/.pdf) and a summary of every loss term.

    \b
    Examples:
      aerobust report audit-out
      aerobust report audit-out --out paper/figures
      aerobust report runs/gmm-dae
    """
    if is_training_run(results_dir):
        written = build_training_report(results_dir, out_dir)
        click.echo(f"wrote {len(written)} files; see {written['training_curves.png']}")
        return
    written = build_report(results_dir, out_dir, table2=table2)
    click.echo(f"wrote {len(written)} files; open {written['report.html']}")


@click.command("compare")
@click.argument("results_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", type=OutputFolder(), required=True,
              help="Where to write the comparison.")
@click.option("--mix-protocols", is_flag=True,
              help="Compare audits of different protocols anyway (budgets, attack settings, MS-SSIM settings).")
def compare_command(results_dirs, out_dir, mix_protocols):
    """Compare several audits in one table (models from all of them).

    The audits must share one protocol (data, images, trials, seed, lambdas, budgets, attack settings and
    MS-SSIM settings: the leaderboard's rule); otherwise their numbers are not comparable and the command
    stops, unless --mix-protocols. A model name found in several audits is suffixed with its audit directory.

    \b
    Examples:
      aerobust compare audit-ae audit-gmm-dae audit-coupled --out comparison
    """
    written = write_comparison(list(results_dirs), out_dir, mix_protocols=mix_protocols)
    click.echo(f"wrote {len(written)} files; open {written['report.html']}")
