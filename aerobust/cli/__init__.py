"""The ``aerobust`` command line."""
from __future__ import annotations

import click

from .common import AerobustGroup, plugin_option
from .defend import defend_group
from .audit import audit_command, demo_command
from .inventory import list_command
from .report import compare_command, report_command
from .reproduce import reproduce_command
from .train import train_command


@click.group(cls=AerobustGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aerobust")
@plugin_option
@click.option("--threads", type=click.IntRange(min=1), envvar="AEROBUST_THREADS",
              help="CPU threads for torch (default: torch's choice). On a busy machine with few cores, 1 is "
                   "often much faster for small models.")
def main(threads):
    """Audit the adversarial robustness of autoencoders and train defenses.

    \b
    Start with:  aerobust demo --out demo-out
    Audit:       aerobust audit --checkpoint model.pt --data mnist-5k --pad 32
    """
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


main.add_command(list_command)
main.add_command(audit_command)
main.add_command(demo_command)
main.add_command(report_command)
main.add_command(compare_command)
main.add_command(train_command)
main.add_command(defend_group)
main.add_command(reproduce_command)
