"""Every output folder belongs to one kind of run: a marker, written before the first result, says which.

A command refuses an ``--out`` whose marker names another kind of run (an audit folder is never
overwritten by a leaderboard, a training run never by an audit), or the same kind made from other
inputs (a second report of another audit would replace the first one's files). Folders written before
markers existed are recognised by the ``command`` of their ``manifest.json``. A folder without marker
or manifest (an empty folder, a folder of the user's own figures) is free.

``check_output_folder`` only reads, so a command calls it before any work; ``claim_output_folder``
writes the marker and is called once arguments, data and models have been validated, before the
first result is written: a refused run leaves nothing behind.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import AerobustError

MARKER_FILE = "aerobust-folder.json"
# A training run's folder (aerobust train): weights with their sidecar, the resumable state, the log.
# Here, low in the package, because the training loop writes them and the training report reads them.
MODEL_FILE = "model.pt"
RUN_STATE_FILE = "run_state.pt"
HISTORY_FILE = "history.jsonl"


def _owner(out_dir: Path) -> dict | None:
    """``{"kind", "identity"}`` of the run that owns ``out_dir``; None for a free folder."""
    marker = out_dir / MARKER_FILE
    if marker.is_file():
        try:
            owner = json.loads(marker.read_text())
        except (OSError, ValueError) as exc:
            raise AerobustError(f"{marker} is unreadable ({type(exc).__name__}); this folder's owner is unknown, "
                                "choose another --out") from None
        if isinstance(owner, dict) and isinstance(owner.get("kind"), str):
            return owner
        raise AerobustError(f"{marker} is not an aerobust folder marker; choose another --out")
    manifest = out_dir / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        command = str(json.loads(manifest.read_text()).get("command", ""))
    except (OSError, ValueError, AttributeError):
        raise AerobustError(f"{out_dir} holds a manifest.json that is not aerobust's; choose another --out") from None
    words = command.removeprefix("aerobust ").split()
    return {"kind": words[0] if words else "unknown", "identity": None}


def _same_identity(previous, identity) -> bool:
    # A legacy folder (no marker) has no recorded identity: its kind is all that can be checked.
    return previous is None or identity is None or previous == json.loads(json.dumps(identity, default=str))


def check_output_folder(out_dir: str | os.PathLike, kind: str, identity=None):
    """Raise one line when ``out_dir`` holds another kind's files, or a ``kind`` run of other inputs."""
    out_dir = Path(out_dir)
    owner = _owner(out_dir) if out_dir.is_dir() else None
    if owner is None:
        return
    if owner["kind"] != kind:
        raise AerobustError(f"{out_dir} holds the files of an aerobust {owner['kind']} run, not of a {kind}; "
                            "choose another --out (nothing was written)")
    if not _same_identity(owner.get("identity"), identity):
        raise AerobustError(f"{out_dir} holds a {kind} made from other inputs; choose another --out, or delete "
                            "the folder to replace it (nothing was written)")


def claim_output_folder(out_dir: str | os.PathLike, kind: str, identity=None):
    """Check ``out_dir`` (see :func:`check_output_folder`), create it and write its marker if it has none."""
    from .runtime import atomic_write

    check_output_folder(out_dir, kind, identity)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / MARKER_FILE
    if not marker.is_file():
        text = json.dumps({"kind": kind, "identity": identity}, default=str, indent=2, sort_keys=True) + "\n"
        atomic_write(marker, lambda tmp: tmp.write_text(text))
