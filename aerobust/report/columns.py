"""What the report reads: the results schema (owned by aerobust/results.py), the attack names and titles."""
from __future__ import annotations

# The results columns and their labels are derived from the registered metrics (aerobust/results.py).
from ..results import (CLEAN_COLUMNS, EXAMPLE_COLUMNS, FLOAT_COLUMNS, INTEGER_COLUMNS, KEY_COLUMNS,  # noqa: F401
                       METRICS_BY_COLUMN, RESULT_COLUMNS, SETTING_COLUMNS)
from ..results import ResultMetric as Metric  # noqa: F401

LATENT_ATTACK = "latent"
MAX_DAMAGE_ATTACK = "max-damage"
CLASSIFIER_ATTACK = "latent-classifier"
KNOWN_ATTACK_ORDER = (LATENT_ATTACK, MAX_DAMAGE_ATTACK, CLASSIFIER_ATTACK)

# a table cell: mean [low, high] over images, n images with a value of rows images; the trial spread
# and the NaN rows go to the CSV only
STATISTICS = ("mean", "low", "high", "n", "rows", "trial_std", "nan_rows")

ATTACK_TITLES = {LATENT_ATTACK: "latent-space attack", MAX_DAMAGE_ATTACK: "maximum-damage attack",
                 CLASSIFIER_ATTACK: "latent-classifier attack"}

CLEAN_ATTACK = "clean"  # the attack level of clean-behaviour columns in the tables


def attack_title(attack: str) -> str:
    """A readable attack name: the built-in ones spelled out, a plugin's name with "attack" after it."""
    if attack == CLEAN_ATTACK:
        return "no attack"
    return ATTACK_TITLES.get(attack, f"{attack} attack")
