"""The audit folder: the only code that reads or writes it.

Layout of an audit's ``--out`` folder::

    aerobust-folder.json     the marker that this folder belongs to one audit (output_folder.py)
    audit-fingerprint.json   config, model and data content hashes, threads: a rerun must match to resume
    plan.json                the image ids, labels and target ids of every trial
    blocks/STEM.{npz,json,csv}           one finished block (model, attack, lambda); the CSV is written
                                         last, so its presence marks the block done
    blocks/pieces/STEM__imagesA-B.*      under torchrun, an image range of a block, merged by rank 0
    classifiers/STEM.pt      the latent classifier head of a model, trained once
    results.csv              long format, one row per model, attack, lambda, trial and image
                             (columns in ``RESULT_COLUMNS``, owned by aerobust/results.py)
    examples.npz             keys ``MODEL::ATTACK::LAMBDA``, each ``(K, 5, C, H, W)`` in [0, 1]: input,
                             clean reconstruction, adversarial input, adversarial reconstruction,
                             target (all-NaN for untargeted attacks)
    manifest.json            versions, seed, threads, device, the full config, hashes, flags

Every problem reading it is one AerobustError that says what to fix.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import AerobustError
from ..output_folder import claim_output_folder
from ..protocol import sha256_bytes
from ..results import (EXAMPLE_COLUMNS, FLOAT_COLUMNS, INTEGER_COLUMNS, RESULT_COLUMNS, SETTING_COLUMNS,
                       block_stem)
from ..runtime import atomic_write, write_manifest

FINGERPRINT_FILE = "audit-fingerprint.json"
PLAN_FILE = "plan.json"
RESULTS_FILE = "results.csv"
EXAMPLES_FILE = "examples.npz"
MANIFEST_FILE = "manifest.json"


@dataclass
class AuditResults:
    """One audit directory, read: the results table, its manifest, and where the examples are."""

    directory: Path
    results: pd.DataFrame
    manifest: dict
    examples_path: Path | None = None
    _examples: dict | None = field(default=None, repr=False)

    @property
    def metric_settings(self) -> dict:
        return self.manifest.get("metrics") or {}

    def examples(self) -> dict[tuple[str, str, str], np.ndarray]:
        """``{(model, attack, lambda text): array (K, 5, C, H, W)}``; empty without examples.npz."""
        if self._examples is None:
            self._examples = {} if self.examples_path is None else read_examples(self.examples_path)
        return self._examples




def load_results(results_dir) -> AuditResults:
    """Read and check an audit directory; every problem is one AerobustError that says what to fix."""
    directory = Path(results_dir)
    if not directory.is_dir():
        raise AerobustError(f"results directory {directory} does not exist; pass the --out directory of "
                            f"an `aerobust audit` run")
    csv_path = directory / "results.csv"
    if not csv_path.is_file():
        raise AerobustError(f"{directory} has no results.csv; pass the --out directory of an `aerobust audit` run")
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise AerobustError(f"{directory} has no manifest.json, so the metric settings of its scores are "
                            f"unknown; rerun the audit")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AerobustError(f"{manifest_path} is not valid JSON ({exc}); rerun the audit") from None
    if not isinstance(manifest, dict):
        raise AerobustError(f"{manifest_path} must hold a JSON object; rerun the audit")
    examples_path = directory / "examples.npz"
    return AuditResults(directory, read_results_csv(csv_path), manifest,
                        examples_path if examples_path.is_file() else None)


def read_labelled_csv(path) -> pd.DataFrame:
    """A results CSV as written: only empty cells are missing (a model labelled "nan" or "NA" stays a label)."""
    return pd.read_csv(path, dtype={"model": str, "attack": str}, keep_default_na=False, na_values=[""])


def read_results_csv(path) -> pd.DataFrame:
    """Parse and type-check a results.csv written by the audit."""
    try:
        _check_complete_rows(path)
        frame = read_labelled_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise AerobustError(f"{path} is not a readable results CSV ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}); rerun the audit") from None
    if "radius" not in frame.columns and "lambda" in frame.columns:
        # Written before attacks had budgets: lambda was then the absolute L2 radius itself.
        frame["radius"] = frame["lambda"]
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise AerobustError(f"{path} lacks the columns {', '.join(missing)}; it was not written by "
                            f"`aerobust audit` (or by an older version): rerun the audit")
    if frame.empty:
        raise AerobustError(f"{path} has no rows; the audit wrote nothing, rerun it")
    for column in ("model", "attack"):
        if frame[column].isna().any():
            raise AerobustError(f"{path}: column {column} has empty cells; rerun the audit")
    for column in ("lambda", *SETTING_COLUMNS, *FLOAT_COLUMNS, *INTEGER_COLUMNS):
        converted = pd.to_numeric(frame[column], errors="coerce")
        if (converted.isna() & frame[column].notna()).any():
            bad = frame.loc[converted.isna() & frame[column].notna(), column].iloc[0]
            raise AerobustError(f"{path}: column {column} holds a non-number ({bad!r}); rerun the audit")
        frame[column] = converted
    for column in ("lambda", "trial", "image_id"):
        if frame[column].isna().any():
            raise AerobustError(f"{path}: column {column} has empty cells; rerun the audit")
    frame[list(INTEGER_COLUMNS)] = frame[list(INTEGER_COLUMNS)].fillna(-1).astype("int64")
    frame["lambda"] = frame["lambda"].astype(float)
    return frame


def _check_complete_rows(path):
    """pandas pads a row that was cut short with empty cells, which would pass for metrics not measured."""
    text = Path(path).read_text()
    if text and not text.endswith("\n"):
        raise AerobustError(f"{path} ends in the middle of a row (the file was cut short); rerun the audit")
    rows = csv.reader(io.StringIO(text))
    header = next(rows, [])
    for line, row in enumerate(rows, start=2):
        if row and len(row) != len(header):
            raise AerobustError(f"{path}: line {line} has {len(row)} of {len(header)} fields (the file was cut or "
                                "edited); rerun the audit")


def read_examples(path) -> dict[tuple[str, str, str], np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise AerobustError(f"{path} is not a readable .npz file ({exc}); rerun the audit") from None
    examples = {}
    with archive:
        for key in archive.files:
            parts = key.split("::")
            array = archive[key]
            if len(parts) != 3:
                raise AerobustError(f"{path}: key {key!r} is not MODEL::ATTACK::LAMBDA; rerun the audit")
            if array.ndim != 5 or array.shape[1] != len(EXAMPLE_COLUMNS) or array.shape[2] not in (1, 3):
                raise AerobustError(f"{path}: {key} has shape {array.shape}, expected (K, 5, C, H, W) with C 1 "
                                    f"or 3; rerun the audit")
            examples[(parts[0], parts[1], parts[2])] = array.astype(np.float32)
    return examples



def _save_npz(path: Path, arrays: dict):
    # Through a file object: np.savez would append ".npz" to the temporary name.
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)


class AuditStore:
    """Writes and reads one audit folder: fingerprint, plan, blocks and their pieces, results, manifest."""

    def __init__(self, out_dir):
        self.out_dir = Path(out_dir)
        self.blocks_dir = self.out_dir / "blocks"
        self.pieces_dir = self.blocks_dir / "pieces"

    # -- identity --------------------------------------------------------------------------------
    def claim(self, fingerprint: dict, data_name: str):
        """Refuse to mix two different audits in one folder, naming what changed; else record the fingerprint."""
        claim_output_folder(self.out_dir, "audit")
        self.blocks_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / FINGERPRINT_FILE
        if not path.is_file():
            atomic_write(path, lambda p: p.write_text(json.dumps(fingerprint, indent=2) + "\n"))
            return
        previous = json.loads(path.read_text())
        resume = "use a new --out folder, or rerun the original command to resume it"
        old, new = previous.get("config") or {}, fingerprint["config"]
        if old != new:
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise AerobustError(f"{self.out_dir} holds an audit with a different configuration "
                                f"({', '.join(changed)} differ); {resume}")
        if "attacks" in previous and previous["attacks"] != fingerprint["attacks"]:
            changed = sorted(name for name in set(previous["attacks"]) | set(fingerprint["attacks"])
                             if previous["attacks"].get(name) != fingerprint["attacks"].get(name))
            raise AerobustError(f"{self.out_dir} holds an audit whose attack settings differ ({', '.join(changed)}: "
                                "another version's defaults or another optimizer's settings); audit into a new "
                                "--out, or rerun with the version that started it")
        for label, digest in fingerprint["models"].items():
            if previous.get("models", {}).get(label) != digest:
                raise AerobustError(
                    f"model '{label}' changed since {self.out_dir} was audited (weights sha256 now {digest[:12]}, "
                    f"was {str(previous.get('models', {}).get(label))[:12]}); audit the new weights into a new --out")
        if previous.get("code") != fingerprint.get("code"):
            raise AerobustError(f"the code of a factory-built model changed since {self.out_dir} was audited "
                                "(the factory file's sha256 differs); audit the new model into a new --out")
        if previous.get("data") != fingerprint["data"]:
            raise AerobustError(f"the audited data ({data_name}) changed since {self.out_dir} was audited "
                                f"(content sha256 now {fingerprint['data'][:12]}, was {str(previous.get('data'))[:12]}); "
                                "audit it into a new --out")
        old, new = previous.get("compute") or {}, fingerprint["compute"]
        if old != new:
            raise AerobustError(
                f"{self.out_dir} was audited with {old.get('torch_threads')} torch thread(s), deterministic algorithms "
                f"{old.get('deterministic_algorithms')}; this run has {new['torch_threads']}, "
                f"{new['deterministic_algorithms']}, which changes results in the last bits: resume with "
                f"--threads {old.get('torch_threads')}, or use a new --out folder")

    def recorded_threads(self) -> int | None:
        """The torch thread count the audit in this folder was started with (None: no audit yet)."""
        path = self.out_dir / FINGERPRINT_FILE
        if not path.is_file():
            return None
        count = (json.loads(path.read_text()).get("compute") or {}).get("torch_threads")
        return count if isinstance(count, int) else None

    def write_plan(self, plan: dict):
        atomic_write(self.out_dir / PLAN_FILE, lambda p: p.write_text(json.dumps(plan) + "\n"))

    # -- blocks and their image ranges -----------------------------------------------------------
    def _block_path(self, stem: str, piece: tuple[int, int] | None, suffix: str) -> Path:
        # Stems hold dots (lam1.5): file names are built by appending, never with Path.with_suffix.
        if piece is None:
            return self.blocks_dir / f"{stem}{suffix}"
        return self.pieces_dir / f"{stem}__images{piece[0]}-{piece[1]}{suffix}"

    def block_done(self, stem: str, piece: tuple[int, int] | None = None) -> bool:
        return self._block_path(stem, piece, ".csv").is_file()

    def save_block(self, stem: str, frame: pd.DataFrame, arrays: dict, notes: list,
                   piece: tuple[int, int] | None = None):
        """A finished block (or, with ``piece=(first, end)``, an image range of it)."""
        self._block_path(stem, piece, "").parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self._block_path(stem, piece, ".npz"), lambda p: _save_npz(p, arrays))
        atomic_write(self._block_path(stem, piece, ".json"),
                     lambda p: p.write_text(json.dumps(notes, default=str) + "\n"))
        # The CSV is written last: its presence marks the block as done.
        atomic_write(self._block_path(stem, piece, ".csv"), lambda p: frame.to_csv(p, index=False))

    def read_block(self, stem: str, piece: tuple[int, int] | None = None) -> tuple[pd.DataFrame, np.ndarray, list]:
        """The rows, the example array and the notes (flags, attack config) of a saved block or piece."""
        frame = read_labelled_csv(self._block_path(stem, piece, ".csv"))
        with np.load(self._block_path(stem, piece, ".npz")) as arrays:
            example = arrays["example"]
        return frame, example, json.loads(self._block_path(stem, piece, ".json").read_text())

    def remove_piece(self, stem: str, piece: tuple[int, int]):
        for suffix in (".csv", ".npz", ".json"):
            self._block_path(stem, piece, suffix).unlink()

    def remove_pieces_dir_if_empty(self):
        if self.pieces_dir.is_dir() and not any(self.pieces_dir.iterdir()):
            self.pieces_dir.rmdir()

    def head_path(self, label: str) -> Path:
        """Where the latent classifier head of model ``label`` is kept for resumes."""
        return self.out_dir / "classifiers" / f"{block_stem(label, 'head', 0)}.pt"

    # -- the audit's outputs ---------------------------------------------------------------------
    def holds_results(self) -> bool:
        """True when the folder holds a finished audit's results and manifest."""
        return (self.out_dir / RESULTS_FILE).is_file() and (self.out_dir / MANIFEST_FILE).is_file()

    def results_sha256(self) -> str:
        """The content hash of ``results.csv`` (what records name their source by)."""
        return sha256_bytes((self.out_dir / RESULTS_FILE).read_bytes())

    def write_results(self, results: pd.DataFrame, examples: dict[str, np.ndarray]):
        atomic_write(self.out_dir / RESULTS_FILE, lambda p: results.to_csv(p, index=False))
        atomic_write(self.out_dir / EXAMPLES_FILE, lambda p: _save_npz(p, examples))

    def write_manifest(self, **fields):
        write_manifest(self.out_dir, command="audit", **fields)

    def add_to_manifest(self, key: str, value):
        """One more entry in the written manifest (e.g. how many processes ran the audit)."""
        path = self.out_dir / MANIFEST_FILE
        manifest = json.loads(path.read_text())
        manifest[key] = value
        atomic_write(path, lambda p: p.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n"))
