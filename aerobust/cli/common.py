"""Pieces every subcommand shares: the one-line error contract and common options."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import math
import tempfile
import traceback
from pathlib import Path

import click

from ..errors import AerobustError
from ..registry import load_plugin

# torch and numpy generators take seeds of at most 64 bits; training derives per-epoch seeds modulo 2**63.
MAX_SEED = 2 ** 63 - 1


class UserError(click.ClickException):
    """Printed as one 'Error: ...' line; exit code 2 like click's own usage errors."""

    exit_code = 2


def _usage_line(exc: click.UsageError) -> UserError:
    """click's usage errors print the usage and a hint over three lines; the contract is one line."""
    hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    return UserError(exc.format_message() + hint)


def _exit_line(exc: SystemExit) -> UserError:
    """Code below the CLI (a plugin, a user factory) called sys.exit: name the file that did it."""
    frames = traceback.extract_tb(exc.__traceback__)
    origin = frames[-1].filename if frames else "a plugin"
    return UserError(f"{origin} called sys.exit({exc.code!r}) inside aerobust; a plugin or model factory must "
                     "raise an exception instead of exiting")


# Failures of the disk or of permissions that a user meets while a command writes, not bugs to trace.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST,
                 errno.EISDIR}


def _write_failure_line(exc: OSError) -> UserError:
    where = f" {exc.filename}" if exc.filename else ""
    return UserError(f"cannot write{where} ({exc.strerror or os.strerror(exc.errno)}); every file finished before it "
                     "is kept: free space or fix the folder's permissions, then rerun the same command to resume "
                     "(training with --resume)")


def _is_torch_write_failure(exc: RuntimeError) -> bool:
    # torch.save reports a full disk as a RuntimeError of its zip writer, without an errno.
    return "PytorchStreamWriter failed" in str(exc) or "inline_container" in str(exc)


class AerobustGroup(click.Group):
    """Turns every AerobustError, usage error and stray sys.exit below it into one line with exit code 2."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise  # a bare `aerobust` shows its help
        except click.UsageError as exc:
            raise _usage_line(exc) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AerobustError as exc:
            raise UserError(str(exc)) from None
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            raise _usage_line(exc) from None
        except SystemExit as exc:
            raise _exit_line(exc) from None
        except OSError as exc:
            if exc.errno not in _WRITE_ERRNOS:
                raise
            raise _write_failure_line(exc) from None
        except RuntimeError as exc:
            if not _is_torch_write_failure(exc):
                raise
            raise _write_failure_line(OSError(errno.ENOSPC, "the disk is full or the file cannot be written")) from None


def _load_plugins(ctx, param, paths):
    for path in paths:
        try:
            load_plugin(path)
        except AerobustError as exc:
            raise UserError(str(exc)) from None
    return paths


class OutputFolder(click.Path):
    """A folder the command can write to, probed on parsing so that a bad ``--out`` fails before any work.

    The probe creates the missing folders and a temporary file, then removes what it created: a command
    refused later (bad settings) leaves no empty output folder behind.
    """

    def __init__(self):
        super().__init__(file_okay=False)

    def convert(self, value, param, ctx):
        path = Path(super().convert(value, param, ctx))
        missing = [folder for folder in (path, *path.parents) if not folder.exists()]
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as exc:
            self.fail(f"cannot write into {path} ({exc.strerror or type(exc).__name__}); choose a folder you "
                      "can write to", param, ctx)
        finally:
            for folder in missing:  # deepest first
                with contextlib.suppress(OSError):
                    folder.rmdir()
        return str(path)


plugin_option = click.option(
    "--plugin", "plugins", multiple=True, type=click.Path(dir_okay=False), callback=_load_plugins,
    expose_value=False, is_eager=True,
    help="Python file whose register_* decorators add attacks, architectures, defenses... (repeatable).")

device_option = click.option("--device", default="auto", show_default=True,
                             help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")
seed_option = click.option("--seed", default=0, show_default=True, type=click.IntRange(0, MAX_SEED),
                           help="Random seed (0 to 2**63-1).")
quiet_option = click.option("--quiet", is_flag=True, help="No progress bars.")
download_option = click.option(
    "--download", is_flag=True,
    help="Let torchvision download mnist, fashion-mnist, svhn or celeba into $AEROBUST_DATA (needs internet).")
trust_unhashed_option = click.option(
    "--trust-unhashed", is_flag=True,
    help="Load checkpoints whose sidecar records no weights_sha256 (their weights cannot be verified).")


def parse_float_list(text: str, name: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{name} must be comma-separated numbers, e.g. 1,3,5; got '{text}'") from None
    if not values:
        raise UserError(f"{name} is empty; give comma-separated numbers, e.g. 1,3,5")
    if not all(math.isfinite(v) for v in values):
        raise UserError(f"{name} must be finite numbers; got '{text}'")
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


def parse_pairs(pairs, flag: str, convert=parse_value, *, key_form: str = "KEY",
                example: str = "name=value") -> list[tuple[str, object]]:
    """The one KEY=VALUE parser of the CLI: ``[(key, convert(value))]`` in the order given.

    ``key_form`` is how the error names the key: "KEY", or "ATTACK.KEY" for keys with a prefix
    (then a key without its "PREFIX." is refused too). The keyword after the last "." may spell
    "_" as "-" (``early-stop`` is ``early_stop``); values are stripped before ``convert``.
    """
    parsed = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        prefix, dot, name = key.strip().rpartition(".")
        if not sep or not name or ("." in key_form and not (dot and prefix)):
            raise UserError(f"{flag} takes {key_form}=VALUE (e.g. {flag} {example}); got '{pair}'")
        parsed.append((f"{prefix}{dot}{name.replace('-', '_')}", convert(value.strip())))
    return parsed


model_arg_option = click.option(
    "--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
    help="Keyword argument for the architecture or factory, e.g. weights_dir=DIR or latent=16 "
         "(values parsed as JSON, else strings; repeatable).")
