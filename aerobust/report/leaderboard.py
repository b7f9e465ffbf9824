"""The leaderboard folder: the ranked table (CSV, Markdown, HTML page) with how to read it, the records it
ranks, and the manifest. The ranking itself is :func:`aerobust.records.rank_records`."""
from __future__ import annotations

import os
from pathlib import Path

from ..output_folder import claim_output_folder
from ..protocol import sha256_bytes
from ..records import INTERVAL_NOTE, Leaderboard, save_record
from ..runtime import write_manifest
from .page import table_page
from .writer import write_table

TITLE = "aerobust leaderboard"


def reading_note(leaderboard: Leaderboard) -> str:
    """What a rank means and what to read beside it (printed above the table)."""
    return (f"Ranked by {leaderboard.sort} ({leaderboard.direction} = more robust). Models whose 95% intervals on "
            f"that cell overlap are not separated and share a rank. Read every rank beside the clean fidelity "
            f"MS-SSIM(x, x̃) and the marks: a model more robust at lower fidelity may only be ignoring its input. "
            f"Cells: mean [95% interval]; {INTERVAL_NOTE}. Accuracies in %. flags: sanity flags raised for the "
            "model (a flag means a number may overstate robustness).")


def write_leaderboard(leaderboard: Leaderboard, out_dir: str | os.PathLike) -> dict[str, Path]:
    """leaderboard.csv/.md/.html, a copy of every ranked record and manifest.json in ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    paths = leaderboard.paths
    claim_output_folder(out_dir, "leaderboard", {"records": sorted(str(path.resolve()) for path in paths)})
    written = write_table(leaderboard.table.set_index("model"), out_dir, "leaderboard", formats=("csv", "md", "html"))
    note = reading_note(leaderboard)
    written["md"].write_text(f"# {TITLE}\n\n{note}\n\n{written['md'].read_text()}")
    written["html"].write_text(table_page(TITLE, note, written["html"].read_text()))
    # The leaderboard folder keeps the records it ranks, so that it can be checked and rebuilt alone.
    for index, record in enumerate(leaderboard.records):
        save_record(record, out_dir / "records", prefix=f"{index + 1:02d}-")
    written["manifest"] = write_manifest(
        out_dir, command="leaderboard", seed=None, device="none",
        config={"records": [str(p) for p in paths], "sort": leaderboard.sort,
                "mix_protocols": leaderboard.mix_protocols},
        source_hashes={str(p): sha256_bytes(p.read_bytes()) for p in paths},
        protocols=sorted({r["protocol"]["id"] for r in leaderboard.records}))
    return written
