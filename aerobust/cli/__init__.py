"""The ``aerobust`` command line."""
from __future__ import annotations

import os

import click

from ..distributed import DEFAULT_JOIN_TIMEOUT_S, JOIN_TIMEOUT_VARIABLE, refuse_world_for
from ..runtime import set_threads
from .common import AerobustGroup, plugin_option
from .defend import defend_group
from .audit import audit_command, demo_command
from .inventory import list_command
from .leaderboard import leaderboard_command
from .margin import margin_command
from .report import compare_command, report_command
from .reproduce import reproduce_command
from .train import train_command

THREADS_HELP = ("CPU threads for torch [default: the idle cores, i.e. usable cores minus the 1-minute load "
                "average, at least 1; or the environment variable AEROBUST_THREADS]. Recorded in every manifest; "
                "a resumed audit or training run uses the count it started with (an automatic choice adopts it, "
                "an explicit other count is refused).")


def _apply_threads(ctx, param, value):
    # The group's option (with the environment variable) always applies; a subcommand's only when given.
    if value is not None or ctx.parent is None:
        set_threads(value)
        if value is not None:
            ctx.find_root().meta["aerobust.threads"] = value
    return value


def _apply_join_timeout(ctx, param, value):
    if value is not None:  # the one place join_world reads it (aerobust/distributed.py)
        os.environ[JOIN_TIMEOUT_VARIABLE] = str(value)
    return value


def _threads_option(envvar: str | None) -> click.Option:
    return click.Option(["--threads"], type=click.IntRange(min=1), envvar=envvar, show_envvar=envvar is not None,
                        expose_value=False, is_eager=True, callback=_apply_threads, help=THREADS_HELP)


@click.group(cls=AerobustGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aerobust")
@plugin_option
@click.option("--join-timeout", type=click.IntRange(min=1), expose_value=False, is_eager=True,
              callback=_apply_join_timeout, metavar="SECONDS",
              help=f"Under torchrun: how long a rank waits for its peers to join [default: {DEFAULT_JOIN_TIMEOUT_S}, "
                   f"or the environment variable {JOIN_TIMEOUT_VARIABLE}].")
@click.pass_context
def main(ctx):
    """Audit the adversarial robustness of autoencoders and train defenses.

    \b
    Start with:  aerobust demo --out demo-out
    Audit:       aerobust audit --checkpoint model.pt --data mnist-5k --pad 32
    """
    refuse_world_for(ctx.invoked_subcommand)  # under torchrun: audit and train only (aerobust/distributed.py)


def _accept_threads_everywhere(command: click.Command, envvar: str | None = None):
    """``--threads`` before or after any subcommand name: ``aerobust --threads 1 audit`` = ``aerobust audit --threads 1``."""
    command.params.append(_threads_option(envvar))
    for sub in getattr(command, "commands", {}).values():
        _accept_threads_everywhere(sub)


for _command in (list_command, audit_command, demo_command, report_command, compare_command, train_command,
                 defend_group, leaderboard_command, margin_command, reproduce_command):
    main.add_command(_command)
_accept_threads_everywhere(main, envvar="AEROBUST_THREADS")
