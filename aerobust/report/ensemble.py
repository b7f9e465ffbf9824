"""How often each member of an ``--ensemble`` audit gave the worst case (the ``attack_member`` column)."""
from __future__ import annotations

import pandas as pd

from ..attacks.ensemble import ENSEMBLE_MEMBERS


def members_that_ran(manifest: dict) -> tuple[str, ...]:
    """The ensemble members an audit's manifest records (every member for a manifest from before the choice)."""
    recorded = [settings["ensemble"]["members"] for settings in (manifest.get("attacks") or {}).values()
                if isinstance(settings, dict) and "ensemble" in settings]
    return tuple(recorded[0]) if recorded else ENSEMBLE_MEMBERS


def ensemble_wins(results: pd.DataFrame, members=ENSEMBLE_MEMBERS) -> pd.DataFrame | None:
    """Rows per (model, attack, lambda) and, per member that ran (``members``), the rows it won and their
    share; None without an ensemble."""
    if "attack_member" not in results.columns:
        return None
    keys = ["model", "attack", "lambda"]
    counts = (results.groupby(keys, sort=False)["attack_member"].value_counts().unstack(fill_value=0)
              .reindex(columns=list(members), fill_value=0))
    rows = counts.sum(axis=1)
    table = pd.DataFrame({"rows": rows})
    for member in members:
        table[f"{member} wins"] = counts[member]
        table[f"{member} share"] = counts[member] / rows
    return table.reset_index()
