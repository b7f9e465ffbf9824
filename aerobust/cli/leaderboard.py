"""``aerobust leaderboard``: a sorted table of audit records (Markdown, HTML, CSV)."""
from __future__ import annotations

import click

from ..records import rank_records
from ..report.leaderboard import write_leaderboard


@click.command("leaderboard")
@click.argument("records", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Where to write leaderboard.md, leaderboard.html, leaderboard.csv and manifest.json.")
@click.option("--sort", "sort", default=None,
              help="Headline column to rank by as ATTACK:METRIC:LAMBDA, e.g. max-damage:msssim_recon_advrecon:5 "
                   "[default: the max-damage MS-SSIM at the largest lambda].")
@click.option("--mix-protocols", is_flag=True,
              help="List records made under different protocols (data, trials, lambdas, attack or MS-SSIM "
                   "settings) in one table, with a protocol column; their numbers are not comparable.")
def leaderboard_command(records, out_dir, sort, mix_protocols):
    """Rank audited models from their record.json files (every audit writes RESULTS_DIR/records/).

    RECORDS are record.json files, folders searched for them, or audit folders from before audits
    wrote records (built from their results). Each cell is the mean with its 95 %
    bootstrap interval over images; records of different protocols are refused unless --mix-protocols.

    \b
    Examples:
      aerobust leaderboard audit-a audit-b --out leaderboard
      aerobust leaderboard runs/*/records --out lb --sort latent:msssim_target_advrecon:1
    """
    written = write_leaderboard(rank_records(list(records), sort=sort, mix_protocols=mix_protocols), out_dir)
    click.echo(f"wrote the leaderboard; open {written['html']}")
