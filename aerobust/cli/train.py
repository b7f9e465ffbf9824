"""``aerobust train``: train an architecture with a defense and checkpoint it."""
from __future__ import annotations

import click

from ..datasets import load_dataset
from ..defenses import Defense
from ..distributed import is_main_process
from ..registry import DEFENSES
from .common import (OutputFolder, UserError, device_option, download_option, parse_pairs,
                     plugin_option, quiet_option, seed_option)

@click.command("train")
@click.option("--defense", required=True, help="Defense name (aerobust list defenses): ae, gmm-dae, augmented, "
              "coupled-ks, vae, beta-vae, beta-tcvae.")
@click.option("--arch", default=None,
              help="Registered architecture (aerobust list architectures), FILE.py:factory or "
              "package.module:factory; the mlp-* ones are built for the data's image shape. "
              "Default: the architecture the defense declares (mlp-ae-32, mlp-vae-32, mlp-vae-lipschitz-32).")
@click.option("--data", "data_spec", default="mnist-5k", show_default=True,
              help="Dataset spec: mnist-5k, digits, mnist, idx:DIR, npz:FILE, folder:DIR ...")
@click.option("--split", default="train", show_default=True, type=click.Choice(["train", "test", "all"]))
@click.option("--limit", type=int, default=None, help="Train on the first N images of the split.")
@click.option("--pad", type=int, default=None, help="Zero-pad images to this side (e.g. 32 for 28 px MNIST).")
@click.option("--resize", type=int, default=None, help="Resize images to this side.")
@click.option("--channels", type=click.IntRange(1, 3), default=None, help="Convert images to 1 or 3 channels.")
@download_option
@click.option("--epochs", type=click.IntRange(min=1), required=True, help="Number of epochs.")
@click.option("--batch-size", type=click.IntRange(min=2), default=100, show_default=True)
@click.option("--lr", type=float, default=2e-4, show_default=True, help="Adam learning rate.")
@click.option("--latent-dim", type=click.IntRange(min=1), default=None,
              help="Latent dimension of the architecture (default: its own, 10 for the MLPs).")
@click.option("--arch-option", "--model-arg", "arch_options", multiple=True, metavar="KEY=VALUE",
              help="Architecture or factory argument, e.g. hidden=64,64 (JSON, else a comma list, else a "
              "string; repeatable).")
@click.option("--coupling", type=float, default=None, help="coupled-ks: alpha of eq. 10 (default 0.9).")
@click.option("--fgsm-eps", type=float, default=None, help="augmented/coupled-ks: FGSM L-inf radius (default 0.3).")
@click.option("--fgsm-step", type=float, default=None, help="augmented/coupled-ks: FGSM step (default 0.375).")
@click.option("--latent-noise", type=float, default=None,
              help="Std of the noise added to codes before decoding (GMM family default 0.1, ae 0).")
@click.option("--beta", type=float, default=None, help="VAE family: KL (or TC) weight.")
@click.option("--n-modes", type=click.IntRange(min=1), default=None,
              help="GMM family: number of prior modes (default: latent dim).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Any other defense option, e.g. weighting=mix or cross_block=penalized (repeatable).")
@click.option("--out", "out_dir", required=True, type=OutputFolder(),
              help="Folder for run_state.pt (what --resume reads), model.pt (+ .json sidecar), history.jsonl/csv, "
              "manifest.json.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last epoch (an error when --out "
              "holds no run).")
@device_option
@seed_option
@quiet_option
@plugin_option
def train_command(defense, arch, data_spec, split, limit, pad, resize, channels, download, epochs, batch_size, lr,
                  latent_dim, arch_options, coupling, fgsm_eps, fgsm_step, latent_noise, beta, n_modes, options,
                  out_dir, resume, device, seed, quiet):
    """Train an autoencoder with a defense; checkpoints every epoch.

    Paper defaults (MNIST): latent 10, 10 modes, FGSM eps 0.3 and step 0.375, latent noise 0.1,
    batch 100, lr 2e-4, coupling 0.9. Options a defense does not have are refused.

    \b
    Examples:
      aerobust train --defense coupled-ks --data mnist-5k --pad 32 --epochs 50 --out runs/coupled
      aerobust train --defense gmm-dae --data mnist-5k --pad 32 --epochs 50 --out runs/gmmdae
      aerobust train --defense coupled-ks --coupling 0.5 --option weighting=mix --pad 32 --epochs 5 --out runs/c05
      aerobust train --defense beta-vae --arch mlp-vae-32 --beta 4 --pad 32 --epochs 20 --out runs/bvae
      aerobust train --defense coupled-ks --pad 32 --epochs 100 --out runs/coupled --resume
    """
    named = {"coupling": coupling, "fgsm_eps": fgsm_eps, "fgsm_step": fgsm_step, "latent_noise": latent_noise,
             "beta": beta, "n_modes": n_modes}
    defense_options = {k: v for k, v in named.items() if v is not None}
    for key, value in dict(parse_pairs(options, "--option", str)).items():
        if key in defense_options:
            raise UserError(f"option {key} is given twice (as --{key.replace('_', '-')} and --option)")
        defense_options[key] = value
    if arch is None:
        arch = getattr(DEFENSES.get(defense), "architecture", Defense.architecture)
    arch_kwargs = dict(parse_pairs(arch_options, "--arch-option"))
    if latent_dim is not None:
        arch_kwargs["latent_dim"] = latent_dim
    data = load_dataset(data_spec, split, pad_to=pad, resize=resize, channels=channels, limit=limit,
                        download=download)
    if "input_shape" not in arch_kwargs and arch.startswith("mlp-"):
        # The MLPs take any image shape; the conv architectures are named after theirs.
        arch_kwargs["input_shape"] = list(data.image_shape)
    from ..training import train

    try:
        result = train(defense, arch, data, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device,
                       out_dir=out_dir, resume=resume, quiet=quiet, arch_kwargs=arch_kwargs, **defense_options)
    except KeyboardInterrupt:
        raise UserError(f"interrupted; the finished epochs are saved in {out_dir}: rerun the same command with "
                        "--resume to continue") from None
    last = result.history[-1]
    if is_main_process():  # under torchrun, one summary line (rank 0's)
        click.echo(f"trained {defense} on {len(data)} images for {last['epoch']} epochs: total loss {last['total']:.4g}; "
                   f"checkpoint {result.checkpoint}")
