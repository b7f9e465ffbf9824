"""``aerobust defend``: can an autoencoder protect a classifier, and does it flag inputs that are off?"""
from __future__ import annotations

import functools
from pathlib import Path

import click

from ..classifiers import BUILTIN_CLASSIFIERS
from ..output_folder import check_output_folder, claim_output_folder
from ..classifier_defense import (ANALYSES, PRIORS, AttackOptions, DefendConfig, config_record, prepare_defend,
                                  run_defend)
from ..report.defend import write_defend_report
from .common import (AerobustGroup, OutputFolder, UserError, device_option, download_option, parse_float_list,
                     plugin_option, quiet_option, seed_option, trust_unhashed_option)


def _defend_options(command):
    options = [
        click.option("--checkpoint", type=click.Path(dir_okay=False), help="Autoencoder checkpoint (FILE.pt + FILE.json)."),
        click.option("--model", help="Autoencoder: registered architecture name or package.module:factory."),
        click.option("--classifier", default="cnn", show_default=True,
                     help=f"Classifier: built-in ({', '.join(BUILTIN_CLASSIFIERS)}) or package.module:factory."),
        click.option("--classifier-weights", type=click.Path(dir_okay=False),
                     help="State-dict file for the classifier (loaded with weights_only=True). Without it a "
                          "built-in classifier is trained on the training split."),
        click.option("--classifier-epochs", default=5, show_default=True, type=int,
                     help="Epochs when the built-in classifier is trained here."),
        click.option("--save-classifier", type=click.Path(dir_okay=False),
                     help="Write the (trained) classifier's state dict here for reuse."),
        click.option("--data", default="mnist-5k", show_default=True,
                     help="Dataset spec; its train split trains the classifier and fits the plain-AE prior."),
        click.option("--eval-data", help="Dataset spec evaluated on (test split); default: --data."),
        click.option("--pad", type=int, help="Zero-pad images to this side (32 for MNIST with the reference models)."),
        click.option("--resize", type=int, help="Resize images to this side."),
        download_option,
        click.option("--limit", type=int, help="Evaluate on the first N test images."),
        click.option("--attacks", default="fgsm,pgd,cw,lbfgs", show_default=True,
                     help="Comma-separated classifier attacks: fgsm, pgd (L-inf), cw, lbfgs, deepfool (L2)."),
        click.option("--linf-eps", default="0.05,0.1,0.2", show_default=True, help="Budgets of the L-inf attacks."),
        click.option("--l2-eps", default="1,2,3", show_default=True, help="Budgets of the L2 attacks."),
        click.option("--attack-images", default=200, show_default=True, type=int,
                     help="Attack the first N evaluation images."),
        click.option("--pgd-steps", default=AttackOptions.pgd_steps, show_default=True, type=int,
                     help="PGD iterations."),
        click.option("--cw-steps", default=AttackOptions.cw_steps, show_default=True, type=int,
                     help="Carlini-Wagner iterations."),
        click.option("--lbfgs-iterations", default=AttackOptions.lbfgs_iterations, show_default=True, type=int,
                     help="L-BFGS-B iterations per bisection step of the L-BFGS attack."),
        click.option("--adaptive/--no-adaptive", default=True, show_default=True,
                     help="Also attack autoencoder+classifier as one model (the honest number)."),
        click.option("--eot-samples", default=0, show_default=True, type=int,
                     help="Stochastic models: purify with the mean of N posterior draws (EOT); 0 = mean path."),
        click.option("--samples", default=10, show_default=True, type=int,
                     help="Stochastic reconstructions per input for consistency detection."),
        click.option("--latent-noise", default=0.25, show_default=True, type=float,
                     help="Deterministic models: code noise in units of the clean codes' per-dimension std."),
        click.option("--prior", default="auto", show_default=True, type=click.Choice(PRIORS),
                     help="Latent density for the OOD likelihood score (auto: N(0,I) for VAEs, a Gaussian "
                          "fitted to training codes otherwise; gmm: the reference GMM prior)."),
        click.option("--bins", default=10, show_default=True, type=int, help="Calibration confidence bins."),
        click.option("--out", required=True, type=OutputFolder(), help="Output folder."),
        trust_unhashed_option, device_option, seed_option, quiet_option, plugin_option,
    ]
    return functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)


def _run(ctx: click.Context, analyses, **opts):
    attacks = [a.strip() for a in opts["attacks"].split(",") if a.strip()]
    if not attacks and {"purify", "detect"} & set(analyses):
        raise UserError("--attacks is empty; give e.g. fgsm,pgd")
    config = DefendConfig(
        analyses=tuple(analyses), attacks=tuple(attacks),
        linf_budgets=tuple(parse_float_list(opts["linf_eps"], "--linf-eps")),
        l2_budgets=tuple(parse_float_list(opts["l2_eps"], "--l2-eps")),
        attack_images=opts["attack_images"], adaptive=opts["adaptive"], eot_samples=opts["eot_samples"],
        detection_samples=opts["samples"], latent_noise=opts["latent_noise"], prior=opts["prior"],
        calibration_bins=opts["bins"], seed=opts["seed"],
        attack_options=AttackOptions(pgd_steps=opts["pgd_steps"], cw_steps=opts["cw_steps"],
                                     lbfgs_iterations=opts["lbfgs_iterations"]))
    config.validate()
    check_output_folder(opts["out"], "defend")
    inputs = prepare_defend(
        model=opts["model"], checkpoint=opts["checkpoint"], classifier=opts["classifier"],
        classifier_weights=opts["classifier_weights"], classifier_epochs=opts["classifier_epochs"],
        save_classifier_to=opts["save_classifier"], data=opts["data"], eval_data=opts["eval_data"], pad=opts["pad"],
        resize=opts["resize"], download=opts["download"], limit=opts["limit"], device=opts["device"],
        seed=opts["seed"], trust_unhashed=opts["trust_unhashed"], quiet=opts["quiet"])
    claim_output_folder(opts["out"], "defend")
    results = run_defend(inputs.classifier, {"model": inputs.autoencoder}, inputs.evaluation, fit_set=inputs.train,
                         config=config, trained_priors={"model": inputs.trained_prior},
                         cache_dir=Path(opts["out"]) / "cache", quiet=opts["quiet"])
    out = write_defend_report(
        results, opts["out"], command=ctx.command_path, seed=opts["seed"], device=inputs.device,
        config={**config_record(config), "cli": dict(opts)}, autoencoder=inputs.model_info,
        classifier=inputs.classifier_info, data=inputs.data_info())
    click.echo(f"wrote {out} (summary.md, {', '.join(a for a in analyses)} tables and figures, manifest.json)")


@click.group("defend", cls=AerobustGroup)
def defend_group():
    """Autoencoders as a defense for a classifier: purification (with the adaptive attack beside it),
    adversarial detection by reconstruction consistency, out-of-distribution detection, calibration.

    \b
    Examples:
      aerobust defend run --checkpoint vae.pt --data mnist-5k --pad 32 --out defend-out
      aerobust defend purify --model mlp-ae-32 --classifier mymod:make_net --classifier-weights net.pt \\
          --data mnist-5k --pad 32 --attacks pgd,cw --out purify-out
    """


def _subcommand(name: str, analyses, summary: str):
    @click.pass_context
    def command(ctx, **opts):
        _run(ctx, analyses, **opts)

    command.__doc__ = summary
    defend_group.command(name)(_defend_options(command))


_subcommand("run", ANALYSES, "All four analyses (purify, detect, ood, calibrate) into one report.")
_subcommand("purify", ("purify",), "Accuracy clean / attacked / purified / under the adaptive attack.")
_subcommand("detect", ("detect",), "ROC-AUC of reconstruction-consistency scores, clean vs adversarial.")
_subcommand("ood", ("ood",), "ROC-AUC of reconstruction error and prior likelihood, MNIST vs OOD sets.")
_subcommand("calibrate", ("calibrate",), "Reconstruction loss vs classifier confidence (bins, Spearman).")
