"""The sanity flags of an audit as one table: flags from the manifest merged, plus those across lambdas."""
from __future__ import annotations

import pandas as pd

from ..results import lambda_text

FLAG_COLUMNS = ["model", "attack", "lambda", "flag", "count", "of", "message"]


def lambda_flags(results: pd.DataFrame, manifest: dict) -> list[dict]:
    """Flags that compare lambdas, per sample, over the saved blocks of each (model, attack).

    An audit attacks one lambda per block, so the sweep itself cannot compare them. Computed only
    where every lambda of the audit has its rows and the manifest says which way the attack loss
    points (``attacks.NAME.maximize``).
    """
    import torch

    from ..attacks.sanity import non_monotone_flags

    lambdas = sorted(results["lambda"].unique())
    flags = []
    for (model, attack), rows in results.groupby(["model", "attack"], sort=False):
        maximize = ((manifest.get("attacks") or {}).get(attack) or {}).get("maximize")
        if maximize is None or sorted(rows["lambda"].unique()) != lambdas:
            continue
        table = rows.pivot_table(index=["trial", "image_id"], columns="lambda", values="attack_loss",
                                 aggfunc="first", dropna=False)
        loss = torch.tensor(table[lambdas].to_numpy().T)
        for flag in non_monotone_flags(lambdas, loss, bool(maximize)):
            flags.append({"model": model, "attack": attack, "lambda": ", ".join(map(lambda_text, lambdas)), **flag})
    return flags


def sanity_flags_table(manifest: dict, results: pd.DataFrame | None = None) -> pd.DataFrame:
    """The sanity flags of an audit: one row per (model, attack, flag), repeated flags merged.

    A flag raised at several lambdas (e.g. ``unbounded-target-missed``) is one row whose lambda cell
    lists them and whose count and of are summed; its message gives the counts per lambda, then the
    first lambda's message. With ``results``, the flags across lambdas (``lambda_flags``)
    are added.
    """
    raw = [dict(flag) for flag in manifest.get("flags") or []]
    if results is not None:
        raw += lambda_flags(results, manifest)
    merged: dict[tuple, list[dict]] = {}
    for flag in raw:
        merged.setdefault((flag.get("model"), flag.get("attack"), flag.get("flag")), []).append(flag)
    rows = []
    for (model, attack, name), group in merged.items():
        row = {k: group[0].get(k) for k in FLAG_COLUMNS}
        if len(group) > 1:
            lambdas = [_lambda_cell(f.get("lambda")) for f in group]
            row["lambda"] = ", ".join(lambdas)
            row["count"] = sum(int(f.get("count") or 0) for f in group)
            row["of"] = sum(int(f.get("of") or 0) for f in group)
            per_lambda = "; ".join(f"λ = {lam}: {f.get('count')} of {f.get('of')}" for lam, f in zip(lambdas, group))
            row["message"] = (f"raised at {len(group)} lambdas ({per_lambda}); at λ = {lambdas[0]}: "
                              f"{group[0].get('message')}")
        else:
            row["lambda"] = _lambda_cell(row["lambda"])
        rows.append(row)
    return pd.DataFrame(rows, columns=FLAG_COLUMNS)


def _lambda_cell(value) -> str:
    """A flag's lambda as table text: a number, a list already joined, or "" for a flag about the whole model."""
    if value is None:
        return ""
    return lambda_text(value) if isinstance(value, (int, float)) else str(value)


def degenerate_models(flags: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(flags.loc[flags["flag"] == "degenerate-model", "model"]))

