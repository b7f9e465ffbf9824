"""``aerobust list``: what the registries hold."""
from __future__ import annotations

import click

from ..registry import REGISTRIES, get_registry
from .common import plugin_option


def _summary(obj) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    return doc[0] if doc else ""


@click.command("list")
@click.argument("kind", required=False, type=click.Choice(sorted(REGISTRIES)))
@click.option("--pattern", default="*", show_default=True, help="Glob over names, e.g. 'conv-*'.")
@plugin_option
def list_command(kind, pattern):
    """List registered architectures, attacks, defenses, datasets and metrics.

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
