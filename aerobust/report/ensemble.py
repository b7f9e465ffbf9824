"""How often each member of an ``--ensemble`` audit gave the worst case (the ``attack_member`` column)."""
from __future__ import annotations

import pandas as pd

from ..attacks.ensemble import ENSEMBLE_MEMBERS


def ensemble_wins(results: pd.DataFrame) -> pd.DataFrame | None:
    """Rows per (model, attack, lambda) and, per member, the rows it won and their share; None without an ensemble."""
    if "attack_member" not in results.columns:
        return None
    keys = ["model", "attack", "lambda"]
    counts = (results.groupby(keys, sort=False)["attack_member"].value_counts().unstack(fill_value=0)
              .reindex(columns=list(ENSEMBLE_MEMBERS), fill_value=0))
    rows = counts.sum(axis=1)
    table = pd.DataFrame({"rows": rows})
    for member in ENSEMBLE_MEMBERS:
        table[f"{member} wins"] = counts[member]
        table[f"{member} share"] = counts[member] / rows
    return table.reset_index()
