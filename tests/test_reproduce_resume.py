"""`reproduce` resumes after a kill at any point (issue 23, item 2): an exception injected while a training
epoch is exported, while an audit block is saved, or while the tables are written, then a rerun into the
same folders, gives the tables of one uninterrupted run."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import aerobust.audit
import aerobust.reproduce as reproduction
import aerobust.training

# Where a kill can land, as (module, function, the call that fails).
KILL_POINTS = {
    "exporting the second epoch": (aerobust.training, "_export_epoch", 2),
    "saving the second audit block": (aerobust.audit.AuditStore, "save_block", 2),
    "writing the second table": (reproduction, "write_table", 2),
}


class Killed(Exception):
    """Stands for a kill: nothing after it runs."""


def _kill_on_call(monkeypatch, owner, name: str, call: int):
    original, calls = getattr(owner, name), []

    def killing(*args, **kwargs):
        calls.append(None)
        if len(calls) == call:
            raise Killed(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, killing)


def _config():
    return reproduction.ReproductionConfig(
        seeds=(0,), epochs=2, train_images=100, images=2, trials=1, steps=2, restarts=1, classifier_epochs=1,
        classifier_images=100, generated_samples=20, fidelity_images=20, legacy_images=0, legacy_maxiter=3)


# Wall-clock measurements differ between any two runs; every other cell must not.
TIMING_COLUMNS = ["iteration_ms_median"]


def _table(path: Path) -> str:
    if not path.read_text().strip():  # a table with no rows (e.g. no flags) is an empty file
        return ""
    return pd.read_csv(path).drop(columns=TIMING_COLUMNS, errors="ignore").to_csv(index=False)


def _tables(out: Path) -> dict[str, str]:
    return {path.name: _table(path) for path in sorted(out.glob("*.csv"))}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reproduction, "ROWS", _ROWS)
        reproduction.reproduce(root / "out", root / "runs", _config(), device="cpu", quiet=True)
    return _tables(root / "out")


_ROWS = (reproduction.Row("VAE", "vae", "mlp-vae-32"), reproduction.Row("Ours", "coupled-ks", "mlp-ae-32"))


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_killed_reproduction_resumes_to_the_uninterrupted_tables(uninterrupted, point, tmp_path, monkeypatch):
    monkeypatch.setattr(reproduction, "ROWS", _ROWS)
    with monkeypatch.context() as patch:
        _kill_on_call(patch, *KILL_POINTS[point])
        with pytest.raises(Killed):
            reproduction.reproduce(tmp_path / "out", tmp_path / "runs", _config(), device="cpu", quiet=True)
    reproduction.reproduce(tmp_path / "out", tmp_path / "runs", _config(), device="cpu", quiet=True)
    resumed = _tables(tmp_path / "out")
    assert resumed.keys() == uninterrupted.keys() and len(resumed) >= 5
    for name, text in uninterrupted.items():
        assert resumed[name] == text, name
