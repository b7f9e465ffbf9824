"""Pieces every subcommand shares: the one-line error contract and common options."""
from __future__ import annotations

import json

import click

from ..errors import AerobustError
from ..registry import load_plugin


class UserError(click.ClickException):
    """Printed as one 'Error: ...' line; exit code 2 like click's own usage errors."""

    exit_code = 2


class AerobustGroup(click.Group):
    """Turns every AerobustError raised below it into a UserError (no traceback)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AerobustError as exc:
            raise UserError(str(exc)) from None


def _load_plugins(ctx, param, paths):
    for path in paths:
        try:
            load_plugin(path)
        except AerobustError as exc:
            raise UserError(str(exc)) from None
    return paths


plugin_option = click.option(
    "--plugin", "plugins", multiple=True, type=click.Path(dir_okay=False), callback=_load_plugins,
    expose_value=False, is_eager=True,
    help="Python file whose register_* decorators add attacks, architectures, defenses... (repeatable).")

device_option = click.option("--device", default="auto", show_default=True,
                             help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")
seed_option = click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
quiet_option = click.option("--quiet", is_flag=True, help="No progress bars.")
download_option = click.option(
    "--download", is_flag=True,
    help="Let torchvision download mnist, fashion-mnist, svhn or celeba into $AEROBUST_DATA (needs internet).")


def parse_float_list(text: str, name: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{name} must be comma-separated numbers, e.g. 1,3,5; got '{text}'") from None
    if not values:
        raise UserError(f"{name} is empty; give comma-separated numbers, e.g. 1,3,5")
    return values


def parse_value(text: str):
    """JSON where it parses (numbers, lists, true/false), a comma list of those, else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if "," in text:
        return [parse_value(part.strip()) for part in text.split(",") if part.strip()]
    return text


def parse_pairs(pairs, flag: str, convert) -> dict:
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{flag} takes KEY=VALUE (e.g. {flag} name=value); got '{pair}'")
        parsed[key.strip().replace("-", "_")] = convert(value.strip())
    return parsed


model_arg_option = click.option(
    "--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
    help="Keyword argument for the architecture or factory, e.g. weights_dir=DIR or latent=16 "
         "(values parsed as JSON, else strings; repeatable).")
