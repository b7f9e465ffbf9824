"""``aerobust reproduce``: the reference paper's MNIST tables under one protocol, over several seeds."""
from __future__ import annotations

import click

from .common import device_option, quiet_option


@click.command("reproduce")
@click.option("--out", "out_dir", default="reports/reproduction", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the tables, figures, findings.md and manifest.json.")
@click.option("--runs", "runs_dir", default="runs/reproduction", show_default=True, type=click.Path(file_okay=False),
              help="Folder for checkpoints and audit blocks (resumed by a rerun; keep it outside --out).")
@click.option("--quick", is_flag=True, help="Minutes-long smoke size (tiny training and audit); not for conclusions.")
@click.option("--seeds", default=None, help="Training seeds, comma-separated (default 0,1,2,3,4).")
@click.option("--other-row-seeds", type=click.IntRange(min=1), default=None,
              help="How many of the seeds train the rows outside VAE, GMM-DAE, Augmented and Ours (default 3).")
@click.option("--training-lengths", default=None,
              help="Also compare Ours with GMM-DAE after these epoch counts, comma-separated (e.g. 30,100,200).")
@click.option("--lengths-only", is_flag=True,
              help="Run only the training-length study (needs --training-lengths). Invocations of different "
                   "--seeds and lengths can share --runs and run at once; a final one with all of them tabulates.")
@click.option("--length-seeds", type=click.IntRange(min=1), default=None,
              help="Training seeds per length of --training-lengths: the first this many of --seeds (default 3).")
@click.option("--rows", "rows", default=None,
              help="Train and audit only these rows, comma-separated labels (default every row). Invocations of "
                   "different --seeds (each with the rows the full run trains for them) can share --runs; a "
                   "final one with every seed resumes and tabulates them all.")
@click.option("--legacy-images", type=click.IntRange(min=0), default=None,
              help="Images of the comparison with the reference code's L-BFGS-B (default 20; 0 skips it).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs per model (default 30).")
@click.option("--train-images", type=click.IntRange(min=100), default=None,
              help="mnist-5k training images used (default 4000, all).")
@click.option("--images", type=click.IntRange(min=1), default=None, help="Test images attacked (default 100).")
@click.option("--trials", type=click.IntRange(min=1), default=None, help="Trials per image (default 3).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Optimizer steps of both attacks (default: each attack's own, PGD 100 for maximum damage, pqn 96 "
                   "for the latent attack).")
@click.option("--restarts", type=click.IntRange(min=1), default=None,
              help="Restarts, worst case kept (default: each attack's own, 1 latent, 2 maximum damage).")
@click.option("--ensemble-restarts", type=click.IntRange(min=0), default=None,
              help="Per sample, the worst case of the attack and the same with this many more random restarts "
                   "(default 2; 0: the attack alone).")
@click.option("--msssim", default=None, help="MS-SSIM preset (default paper).")
@device_option
@quiet_option
def reproduce_command(out_dir, runs_dir, quick, seeds, other_row_seeds, training_lengths, lengths_only, length_seeds,
                      rows, legacy_images, epochs, train_images, images, trials, steps, restarts, ensemble_restarts,
                      msssim, device, quiet):
    """Train every row of the paper's Tables 1-3 on MNIST for several seeds, audit them, tabulate.

    Rows: VAE, beta-VAE, beta-TCVAE, LipschitzVAE, SE, AAVE, GMM-DAE, Augmented (cross block free and
    penalized) and Ours (coupled-ks). Each cell is the mean with its 95 % interval over training seeds and
    images, the paper's value beside it; every claim of the paper gets a verdict from a hierarchical
    paired bootstrap, Holm-corrected over all claims. Rerunning the same command resumes training and audits.

    \b
    Examples:
      aerobust --threads 1 reproduce                      # the committed reports/reproduction
      aerobust --threads 1 reproduce --quick --out /tmp/repro --runs /tmp/repro-runs
    """
    import dataclasses

    from ..report.reproduction import write_length_study, write_reproduction
    from ..reproduce import ReproductionConfig, reproduce, reproduce_training_lengths
    from .common import UserError

    config = ReproductionConfig.quick() if quick else ReproductionConfig()
    overrides = {"epochs": epochs, "train_images": train_images, "images": images, "trials": trials, "steps": steps,
                 "restarts": restarts, "ensemble_restarts": ensemble_restarts, "msssim": msssim,
                 "other_row_seeds": other_row_seeds, "length_seeds": length_seeds, "legacy_images": legacy_images,
                 "rows": None if rows is None else tuple(r.strip() for r in rows.split(",") if r.strip())}
    for option, key, text in (("--seeds", "seeds", seeds), ("--training-lengths", "training_lengths", training_lengths)):
        if text is None:
            continue
        try:
            overrides[key] = tuple(int(s) for s in text.split(",") if s.strip())
        except ValueError:
            raise UserError(f"{option} takes integers separated by commas, e.g. 0,1,2; got '{text}'") from None
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    try:
        if lengths_only:
            written = write_length_study(reproduce_training_lengths(
                out_dir, runs_dir, config, device=device, quiet=quiet,
                command="aerobust reproduce --lengths-only" + (" --quick" if quick else "")))
        else:
            written = write_reproduction(reproduce(out_dir, runs_dir, config, device=device, quiet=quiet,
                                                   command="aerobust reproduce" + (" --quick" if quick else "")))
    except KeyboardInterrupt:
        raise UserError(f"interrupted; finished training epochs and audit blocks are kept in {runs_dir}: rerun the "
                        "same command to resume") from None
    click.echo(f"wrote {written['findings']} and the tables next to it")
