"""Audit records (one JSON file per audited model) and the leaderboard built from them.

Every audit writes ``records/<model>/record.json`` from its saved results and manifest (nothing is
re-run). A record follows the versioned schema ``aerobust/schemas/record-v1.schema.json``: model
identity (label, weights hash, architecture, training defense and options), data, protocol, threat
model, attack settings, metric settings, headline numbers with 95 % cluster-bootstrap intervals
over images (trials nested), the sanity flags and package versions.

Records are comparable when their ``protocol`` blocks agree (same data, split, image count, trials,
seed, lambdas, attack settings and MS-SSIM settings); ``protocol.id`` is the hash of that block, and
the leaderboard refuses records of different protocols unless told to mix them.
"""
from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .audit.store import RESULTS_FILE, AuditStore
from .errors import AerobustError
from .protocol import canonical_hash, protocol_block

SCHEMA_NAME = "aerobust-record"
SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("schemas") / f"record-v{SCHEMA_VERSION}.schema.json"
RECORD_FILE = "record.json"
# (metric column, direction that means a more robust model) per kind of attack.
_TARGETED_HEADLINE = (("msssim_target_advrecon", "lower"),)
_UNTARGETED_HEADLINE = (("msssim_recon_advrecon", "higher"),)
_CLASSIFIER_HEADLINE = ("classifier_correct", "higher")
# Clean behaviour on the audited images (attack "clean", lambda 0): fidelity beside robustness. The
# fidelity columns enter as soon as the audit writes them (issue 9's msssim_input_recon, mse_input_recon).
_CLEAN_HEADLINE = (("clean_classifier_correct", "higher"), ("msssim_input_recon", "higher"),
                   ("mse_input_recon", "lower"))
INTERVAL_NOTE = "95% percentile cluster bootstrap over images (trials nested), 2000 resamples, seed 0"
# A clean MS-SSIM(x, x̃) below this marks a model whose robustness may be bought by ignoring its input
# (the paper's MNIST models reconstruct at 0.7-0.9; the demo's collapsed VAEs near 0.5).
LOW_FIDELITY_MSSSIM = 0.6
FIDELITY_KEY = "clean msssim_input_recon λ=0"


# --- the schema ------------------------------------------------------------------------------------

def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _type_matches(value, name: str) -> bool:
    if name in ("number", "integer"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return name == "number" or float(value).is_integer()
    return isinstance(value, _TYPES[name])


def schema_errors(value, schema: dict, where: str = "record") -> list[str]:
    """The violations of ``schema`` by ``value``, one line each (empty: valid).

    Covers the JSON-Schema keywords the record schema uses: type, const, enum, required,
    properties, additionalProperties (false), items and minimum.
    """
    errors = []
    if "const" in schema and value != schema["const"]:
        return [f"{where} must be {schema['const']!r}, got {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where} must be one of {schema['enum']}, got {value!r}"]
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_matches(value, n) for n in names):
            return [f"{where} must be of type {' or '.join(names)}, got {type(value).__name__}"]
    if "minimum" in schema and isinstance(value, (int, float)) and value < schema["minimum"]:
        errors.append(f"{where} must be >= {schema['minimum']}, got {value}")
    if isinstance(value, dict):
        errors += [f"{where} lacks the field '{key}'" for key in schema.get("required", []) if key not in value]
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            errors += [f"{where} has the unknown field '{key}'" for key in value if key not in properties]
        for key, sub in properties.items():
            if key in value:
                errors += schema_errors(value[key], sub, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{where}[{index}]")
    return errors


def validate_record(record: dict, origin: str = "record") -> dict:
    """Return ``record`` if it follows the schema of its version; else raise with every violation."""
    if not isinstance(record, dict) or record.get("schema") != SCHEMA_NAME:
        raise AerobustError(f"{origin} is not an aerobust record (no \"schema\": \"{SCHEMA_NAME}\")")
    if record.get("schema_version") != SCHEMA_VERSION:
        raise AerobustError(f"{origin} has record schema version {record.get('schema_version')!r}; this aerobust "
                            f"reads version {SCHEMA_VERSION}: rewrite it with `aerobust report` of a current audit")
    errors = schema_errors(record, load_schema())
    if errors:
        raise AerobustError(f"{origin} does not follow the record schema: " + "; ".join(errors[:5])
                            + (f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""))
    # what the schema cannot say: a record ranks nothing without a headline, and a mean without its interval
    # is not a number the leaderboard may quote
    if not record["headline"]:
        raise AerobustError(f"{origin} has an empty headline: rebuild the record from its audit folder")
    incomplete = [f"{c['attack']} {c['metric']} λ={c['lambda']}" for c in record["headline"]
                  if c["mean"] is not None and (c["ci_low"] is None or c["ci_high"] is None)]
    if incomplete:
        raise AerobustError(f"{origin}: the headline cell(s) {', '.join(incomplete[:3])} have a mean without its "
                            "interval; rebuild the record from its audit folder")
    return record


# --- building records from an audit ------------------------------------------------------------------

def _model_block(label: str, info: dict) -> dict:
    sidecar = info.get("sidecar") or {}
    defense_config = sidecar.get("defense_config") or {}
    return {
        "label": label, "source": info.get("source", "unknown"), "checkpoint": info.get("checkpoint"),
        "weights_sha256": sidecar.get("weights_sha256"),
        "architecture": sidecar.get("architecture") or info.get("architecture") or info.get("factory"),
        "arch_kwargs": sidecar.get("arch_kwargs") or info.get("arch_kwargs") or {},
        "defense": sidecar.get("defense"), "defense_options": defense_config.get("options") or {},
        "training": sidecar.get("training"),
    }


def _headline(rows: pd.DataFrame) -> list[dict]:
    from .stats import interval_table

    cells = []
    for attack, block in rows.groupby("attack", sort=False):
        targeted = block["msssim_target_advrecon"].notna().any()
        metrics = list(_TARGETED_HEADLINE if targeted else _UNTARGETED_HEADLINE)
        if block["classifier_correct"].notna().any():
            metrics.append(_CLASSIFIER_HEADLINE)
        for metric, better in metrics:
            table = interval_table(block, [metric], by=("attack", "lambda"))
            cells += [{**row, "better": better} for row in table.to_dict("records")]
    # Clean values repeat under every attack and lambda: count each (trial, image) once.
    clean = rows.drop_duplicates(["trial", "image_id"]).assign(attack="clean", **{"lambda": 0.0})
    for metric, better in _CLEAN_HEADLINE:
        if metric in clean.columns and clean[metric].notna().any():
            table = interval_table(clean, [metric], by=("attack", "lambda"))
            cells += [{**row, "better": better} for row in table.to_dict("records")]
    keys = ("attack", "lambda", "metric", "better", "mean", "ci_low", "ci_high", "images", "trials", "rows",
            "nan_rows")
    return [{key: _plain(cell[key]) for key in keys} for cell in cells]


def _plain(value):
    """numpy scalars to JSON numbers; NaN to null (JSON has no NaN)."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    return value


def build_records(audit_dir) -> list[dict]:
    """One record per model of the audit in ``audit_dir`` (from results.csv and manifest.json)."""
    from .distortion import auddc_table
    from .audit.store import load_results

    audit = load_results(audit_dir)
    manifest, results = audit.manifest, audit.results
    config = manifest.get("config") or {}
    missing = [key for key in ("config", "attacks", "metrics", "models", "plan") if not manifest.get(key)]
    if missing:
        raise AerobustError(f"{audit.directory}/manifest.json lacks {', '.join(missing)}; records need a "
                            "manifest written by `aerobust audit`, rerun the audit")
    attacks = manifest["attacks"]
    protocol = protocol_block(config, attacks, manifest["metrics"])
    results_hash = AuditStore(audit.directory).results_sha256()
    image_ids = manifest["plan"]["image_ids"]
    auddc_by_model = auddc_table(results).set_index("model")
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    records = []
    for label in dict.fromkeys(results["model"]):
        rows = results[results["model"] == label]
        auddc = None
        if label in auddc_by_model.index:
            entry = auddc_by_model.loc[label]
            auddc = {"attack": entry["attack"], "value": float(entry["auddc"]), "lambdas": entry["lambdas"],
                     "rows": int(entry["rows"])}
        record = {
            "schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "created": created,
            "model": _model_block(label, (manifest.get("models") or {}).get(label, {})),
            "data": {"name": config["data"], "split": config["split"], "pad_to": config.get("pad_to"),
                     "resize": config.get("resize"), "images": len(image_ids),
                     "image_ids_sha256": canonical_hash(image_ids)},
            "protocol": protocol,
            "threat": {"norms": sorted({a.get("norm", "l2") for a in attacks.values()}), "box": [0.0, 1.0],
                       "lambdas": protocol["lambdas"]},
            "attacks": attacks,
            "metrics": {"msssim": manifest["metrics"], "intervals": INTERVAL_NOTE},
            "headline": _headline(rows),
            "auddc": auddc,
            "flags": [f for f in manifest.get("flags") or [] if f.get("model") == label],
            "versions": manifest.get("versions") or {},
            "source": {"audit_dir": str(audit.directory), "results_sha256": results_hash},
        }
        records.append(validate_record(json.loads(json.dumps(record)), f"the record of model '{label}'"))
    return records


def save_record(record: dict, folder, prefix: str = "") -> Path:
    """Write ``folder/<prefix><model label as a file name>/record.json``; returns its path."""
    path = Path(folder) / (prefix + re.sub(r"[^A-Za-z0-9_.-]", "_", record["model"]["label"])) / RECORD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def write_records(audit_dir, out_dir=None) -> list[Path]:
    """Write ``records/<model>/record.json`` for every model of an audit; returns the paths."""
    out_dir = Path(out_dir) if out_dir is not None else Path(audit_dir) / "records"
    return [save_record(record, out_dir) for record in build_records(audit_dir)]


# --- the leaderboard ----------------------------------------------------------------------------------

def load_records(paths: Iterable) -> list[tuple[Path, dict]]:
    """Records from files, from folders holding ``record.json`` files (searched recursively), and from
    audit folders written before audits wrote records (built from their results and manifest)."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(path.rglob(RECORD_FILE))
            if not files and AuditStore(path).holds_results():
                found += [(path / RESULTS_FILE, record) for record in build_records(path)]
                continue
            if not files:
                raise AerobustError(f"{path} holds no {RECORD_FILE}; pass an audit folder or record files")
        elif path.is_file():
            files = [path]
        else:
            raise AerobustError(f"{path} does not exist; pass record files or folders that hold them")
        for file in files:
            try:
                record = json.loads(file.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise AerobustError(f"{file} is not readable JSON ({exc}); pass record.json files") from None
            found.append((file, validate_record(record, str(file))))
    if not found:
        raise AerobustError("no records given; pass record files or folders that hold them")
    return found


def _audit_folder_of(path: Path, record: dict) -> Path | None:
    """Where the record's audit lives: the folder it names, else the one it sits in (records/<model>/record.json)."""
    for candidate in (Path(record["source"].get("audit_dir") or ""), path.parent.parent.parent):
        if str(candidate) not in ("", ".") and (candidate / RESULTS_FILE).is_file():
            return candidate
    return None


def verify_record(path: Path, record: dict, rebuilt_headlines: dict | None = None) -> str:
    """Refuse a record whose numbers cannot be trusted; returns how far it was verified (for the table).

    The protocol id must be the hash of the protocol block (a hand-edited block, e.g. trials changed
    under the old id, no longer matches). When the audit folder is there, its ``results.csv`` must have
    the hash the record names and the record's headline must equal the one rebuilt from those results
    (a hand-edited mean does not). Without the folder only the protocol id can be checked, and the
    leaderboard says so. ``rebuilt_headlines`` (folder -> {model: headline}) keeps the headlines rebuilt
    from one audit folder for the other records of that folder, so each folder is rebuilt once.
    """
    protocol = record["protocol"]
    if canonical_hash({k: v for k, v in protocol.items() if k != "id"}) != protocol["id"]:
        raise AerobustError(f"{path}: its protocol block does not hash to its protocol id (the record was edited); "
                            "rebuild it from its audit folder with `aerobust audit` / write_records")
    folder = _audit_folder_of(path, record)
    if folder is None:
        return "protocol id only (audit folder not found)"
    if AuditStore(folder).results_sha256() != record["source"].get("results_sha256"):
        raise AerobustError(f"{path}: {folder}/results.csv is not the results this record was built from "
                            "(hash differs); rebuild the record from that audit folder")
    cache = {} if rebuilt_headlines is None else rebuilt_headlines
    if folder not in cache:
        cache[folder] = {r["model"]["label"]: r["headline"] for r in build_records(folder)}
    if cache[folder].get(record["model"]["label"]) != record["headline"]:
        raise AerobustError(f"{path}: its headline numbers differ from those of {folder}/results.csv (the record "
                            "was edited); rebuild it from that audit folder")
    return "results hash and headline"


def _cell_key(cell: dict) -> str:
    return f"{cell['attack']} {cell['metric']} λ={cell['lambda']:g}"


def _interval_text(cell: dict, decimals: int) -> str:
    if cell["mean"] is None:
        return ""
    scale = 100.0 if "classifier_correct" in cell["metric"] else 1.0
    return (f"{cell['mean'] * scale:.{decimals}f} [{cell['ci_low'] * scale:.{decimals}f}, "
            f"{cell['ci_high'] * scale:.{decimals}f}]")


def _sort_key_text(sort: str) -> str:
    """``ATTACK:METRIC:LAMBDA`` (easy to type) or the column title ``ATTACK METRIC λ=LAMBDA``."""
    parts = sort.split(":")
    if len(parts) != 3:
        return sort
    try:
        return _cell_key({"attack": parts[0], "metric": parts[1], "lambda": float(parts[2])})
    except ValueError:
        raise AerobustError(f"--sort {sort!r}: the lambda after the last ':' must be a number") from None


def default_sort_key(records: Sequence[dict]) -> str:
    """The maximum-damage MS-SSIM at the largest lambda when present, else the first headline cell."""
    cells = [c for r in records for c in r["headline"]]
    damage = [c for c in cells if c["attack"] == "max-damage" and c["metric"] == "msssim_recon_advrecon"]
    chosen = max(damage, key=lambda c: c["lambda"]) if damage else cells[0]
    return _cell_key(chosen)


def leaderboard_table(records: Sequence[dict], *, sort: str | None = None, mix_protocols: bool = False,
                      decimals: int = 3, verified: Sequence[str] | None = None) -> tuple[pd.DataFrame, str]:
    """One row per record, ranked by the headline cell ``sort`` (most robust first); returns (table, key).

    ``verified``: per record, how far :func:`verify_record` checked it (a column of the table)."""
    if not records:
        raise AerobustError("the leaderboard needs at least one record")
    protocols = list(dict.fromkeys(r["protocol"]["id"] for r in records))
    if len(protocols) > 1 and not mix_protocols:
        differing = sorted(k for k in records[0]["protocol"]
                           if k != "id" and any(r["protocol"].get(k) != records[0]["protocol"][k] for r in records))
        raise AerobustError(f"the records come from {len(protocols)} different protocols (differing: "
                            f"{', '.join(differing)}); their numbers are not comparable. Rerun the audits under one "
                            "protocol, or pass --mix-protocols to list them anyway with a protocol column")
    keys = list(dict.fromkeys(_cell_key(c) for r in records for c in r["headline"]))
    sort = _sort_key_text(sort) if sort else default_sort_key(records)
    if sort not in keys:
        raise AerobustError(f"unknown leaderboard column '{sort}'; choose one of: {'; '.join(keys)}")
    directions = {_cell_key(c): c["better"] for r in records for c in r["headline"]}
    rows = []
    for record in records:
        cells = {_cell_key(c): c for c in record["headline"]}
        model = record["model"]
        row = {"model": model["label"], "defense": model["defense"] or "", "architecture": model["architecture"] or "",
               "weights": (model["weights_sha256"] or "")[:12], "images x trials":
               f"{record['protocol']['images']} x {record['protocol']['trials']}",
               "flags": len(record["flags"]),
               "AUDDC": "" if record["auddc"] is None else f"{record['auddc']['value']:.{decimals}f}"}
        if mix_protocols:
            row["protocol"] = record["protocol"]["id"][:12]
        if verified is not None:
            row["verified"] = verified[len(rows)]
        row.update({key: _interval_text(cells[key], decimals) if key in cells else "" for key in keys})
        sort_cell = cells.get(sort)
        row["_sort"] = np.nan if sort_cell is None or sort_cell["mean"] is None else sort_cell["mean"]
        rows.append(row)
    table = pd.DataFrame(rows)
    ascending = directions[sort] == "lower"
    table["rank"] = shared_ranks([{_cell_key(c): c for c in r["headline"]}.get(sort) for r in records],
                                 higher_is_better=not ascending)
    table["clean MS-SSIM(x, x̃)"] = [_fidelity_text(r, decimals) for r in records]
    table["marks"] = [_marks(r) for r in records]
    table = table.sort_values(["rank", "_sort"], ascending=[True, ascending], na_position="last",
                              kind="stable").drop(columns="_sort")
    leading = ["model", "rank", "clean MS-SSIM(x, x̃)", "marks"]
    table = table[leading + [c for c in table.columns if c not in leading]]
    return table.reset_index(drop=True), sort


def shared_ranks(cells: Sequence[dict | None], *, higher_is_better: bool) -> list[float]:
    """Rank = 1 + the number of models separated ABOVE this one: whose 95 % interval lies wholly on the
    better side of this model's interval. Models whose intervals overlap are not separated and share a
    rank (a record holds no per-image values, so a paired test is not possible here: overlapping
    intervals are the conservative reading). A model without the cell ranks last (NaN)."""
    ranks = []
    for cell in cells:
        if cell is None or cell["mean"] is None:
            ranks.append(float("nan"))
            continue
        above = sum(1 for other in cells if other is not None and other["mean"] is not None and
                    (other["ci_low"] > cell["ci_high"] if higher_is_better else other["ci_high"] < cell["ci_low"]))
        ranks.append(float(1 + above))
    return ranks


def _fidelity_cell(record: dict) -> dict | None:
    return next((c for c in record["headline"] if _cell_key(c) == FIDELITY_KEY), None)


def _fidelity_text(record: dict, decimals: int) -> str:
    cell = _fidelity_cell(record)
    return "not recorded" if cell is None or cell["mean"] is None else _interval_text(cell, decimals)


def _marks(record: dict) -> str:
    """What a reader must know before trusting the rank: degenerate model, low clean fidelity."""
    marks = []
    if any(f.get("flag") == "degenerate-model" for f in record["flags"]):
        marks.append("degenerate: reconstructions ignore the input, robustness means nothing")
    cell = _fidelity_cell(record)
    if cell is not None and cell["mean"] is not None and cell["mean"] < LOW_FIDELITY_MSSSIM:
        marks.append(f"low fidelity (clean MS-SSIM {cell['mean']:.2f} < {LOW_FIDELITY_MSSSIM})")
    return "; ".join(marks)


@dataclass
class Leaderboard:
    """Ranked records and what the ranking rests on; :mod:`aerobust.report.leaderboard` writes it."""

    table: pd.DataFrame  # one row per record, most robust first
    sort: str  # the headline cell ranked by
    direction: str  # "higher" or "lower": which way of that cell is more robust
    records: list[dict]
    paths: list[Path]  # where each record was read from
    mix_protocols: bool


def rank_records(paths: Iterable, *, sort: str | None = None, mix_protocols: bool = False) -> Leaderboard:
    """The records under ``paths``, each verified (see :func:`verify_record`), ranked by the headline cell ``sort``."""
    loaded = load_records(paths)
    records = [record for _, record in loaded]
    identities = [(r["model"]["label"], r["model"]["weights_sha256"], r["protocol"]["id"],
                   r["source"].get("results_sha256")) for r in records]
    repeated = sorted({identity[0] for identity in identities if identities.count(identity) > 1})
    if repeated:
        raise AerobustError(f"the same record is given more than once ({', '.join(repeated)}); pass each record once")
    rebuilt_headlines: dict = {}
    verified = [verify_record(path, record, rebuilt_headlines) for path, record in loaded]
    table, sort = leaderboard_table(records, sort=sort, mix_protocols=mix_protocols, verified=verified)
    direction = next(c["better"] for r in records for c in r["headline"] if _cell_key(c) == sort)
    return Leaderboard(table, sort, direction, records, [path for path, _ in loaded], mix_protocols)
