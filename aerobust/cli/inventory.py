"""``aerobust list``: what the registries hold."""
from __future__ import annotations

import click

from ..metrics import MSSSIM_PRESET_SUMMARIES
from ..registry import REGISTRIES, get_registry
from ..results import ResultMetric
from .common import plugin_option


def _summary(obj) -> str:
    if isinstance(obj, ResultMetric):
        return f"results column: {obj.text}{' (clean, no attack)' if obj.clean else ''}"
    doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    return doc[0] if doc else ""


@click.command("list")
@click.argument("kind", required=False, type=click.Choice(sorted(REGISTRIES)))
@click.option("--pattern", default="*", show_default=True, help="Glob over names, e.g. 'conv-*'.")
@plugin_option
def list_command(kind, pattern):
    """List registered architectures, attacks, defenses, datasets and metrics (with the MS-SSIM presets).

    \b
    Examples:
      aerobust list
      aerobust list architectures --pattern 'conv-*'
      aerobust list attacks --plugin attacks/random_search.py
    """
    for name in [kind] if kind else sorted(REGISTRIES):
        registry = get_registry(name)
        click.echo(f"{name}:")
        for entry in registry.list(pattern):
            summary = _summary(registry.get(entry))
            click.echo(f"  {entry:<22} {summary}".rstrip())
        if name == "metrics":
            click.echo("ms-ssim presets (audit --msssim):")
            for preset, summary in MSSSIM_PRESET_SUMMARIES.items():
                click.echo(f"  {preset:<22} {summary}")
