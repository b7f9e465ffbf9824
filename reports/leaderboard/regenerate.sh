#!/bin/sh
# Rebuilds reports/leaderboard/ from the repository root (about 15 minutes on one CPU thread):
#   sh reports/leaderboard/regenerate.sh
# 1. paper-protocol/: the leaderboard of reports/demo/audit (AE and coupled-KS, the paper's protocol),
#    its records built from the committed results (nothing re-run).
# 2. vae-attacks/: a VAE and a beta-VAE (mlp-vae-32, 30 epochs on mnist-5k, seed 0) audited with the
#    attacks beyond the paper (latent-kl, latent-skl, max-kl, jacobian, universal) beside latent and
#    max-damage, lambda 0 (for AUDDC), 1, 2, 3; 30 images x 3 trials; their leaderboard; their
#    r-robustness margins (r = 3, lambda_max = 4).
set -e
AEROBUST="${PYTHON:-python} -m aerobust --threads 1"
OUT=reports/leaderboard
RUNS=runs/leaderboard
$AEROBUST leaderboard reports/demo/audit --out $OUT/paper-protocol
for defense in vae beta-vae; do
  [ -f $RUNS/$defense/model.pt ] || $AEROBUST train --defense $defense --arch mlp-vae-32 --pad 32 --epochs 30 \
      --seed 0 --quiet --out $RUNS/$defense
done
$AEROBUST audit --checkpoint VAE=$RUNS/vae/model.pt --checkpoint beta-VAE=$RUNS/beta-vae/model.pt --pad 32 \
    --attacks latent,latent-kl,latent-skl,max-kl,max-damage,jacobian,universal --lambdas 0,1,2,3 \
    --images 30 --trials 3 --seed 0 --quiet --out $OUT/vae-attacks/audit
$AEROBUST leaderboard $OUT/vae-attacks/audit --out $OUT/vae-attacks
$AEROBUST margin --checkpoint VAE=$RUNS/vae/model.pt --checkpoint beta-VAE=$RUNS/beta-vae/model.pt --pad 32 \
    --images 30 --r 3 --lambda-max 4 --iterations 8 --samples 32 --attack-option max-damage.steps=50 \
    --seed 0 --quiet --out $OUT/vae-attacks/margins
