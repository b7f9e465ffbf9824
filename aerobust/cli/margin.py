"""``aerobust margin``: the r-robustness margin of every audited image, per model."""
from __future__ import annotations

import click

from ..audit import AuditConfig
from ..report.margin import write_margin_views
from ..robustness_margin import run_margins
from .audit import parse_attack_options, model_and_data_options, model_specs
from .common import UserError, device_option, quiet_option, seed_option


@click.command("margin")
@model_and_data_options
@click.option("--images", default=100, show_default=True, type=int, help="Images (the audit's, for the same seed).")
@click.option("--r", "r", required=True, type=float, help="Allowed L2 change of the reconstruction.")
@click.option("--lambda-max", required=True, type=float, help="Largest budget searched, in the attack's budget unit (max-damage.budget=l2|rms|linf|linf-255; "
              "default the paper's absolute L2); beyond it margins are censored.")
@click.option("--iterations", default=10, show_default=True, type=click.IntRange(min=1), help="Bisection steps.")
@click.option("--samples", default=64, show_default=True, type=click.IntRange(min=1),
              help="Posterior draws per image for the VAE probability criterion.")
@click.option("--attack-option", "attack_options", multiple=True,
              help="max-damage.KEY=VALUE for the bisected attack (repeatable), e.g. max-damage.steps=50.")
@seed_option
@device_option
@quiet_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
def margin_command(models, model_args, checkpoints, trust_factory, data, split, pad, resize, images, r, lambda_max,
                   iterations, samples, attack_options, seed, device, quiet, out):
    """Per image, the smallest budget at which max-damage moves the reconstruction by more than r.

    Bisection over lambda in [0, --lambda-max]; VAEs use the probability criterion of r-robustness
    (broken when a posterior-sampled reconstruction moves by more than r with probability >= 1/2).
    An attack finds upper bounds of the true margins. Writes margins.csv, margin_summary (CSV,
    Markdown, LaTeX, HTML: counts, censored images, quantiles), fig_margins.png and manifest.json.

    \b
    Examples:
      aerobust margin --checkpoint runs/vae/model.pt --pad 32 --r 3 --lambda-max 4 --out margins
    """
    specs = model_specs(models, checkpoints, model_args, trust_factory)
    if not specs:
        raise UserError("nothing to measure: give --model or --checkpoint at least once")
    config = AuditConfig(models=specs, data=data, split=split, pad_to=pad, resize=resize, attacks=["max-damage"],
                         images=images, trials=1, seed=seed,
                         attack_options=parse_attack_options(attack_options, ["max-damage"]))
    run = run_margins(config, out, r=r, lambda_max=lambda_max, iterations=iterations, samples=samples, device=device)
    written = write_margin_views(run, out)
    if not quiet:
        click.echo(f"{len(run.margins)} margins; summary: {written['md']}")
