"""Every output folder belongs to one kind of run (issue 23, item 1): a command refuses an ``--out`` that
holds another kind's or another run's files with one line and exit code 2, and writes nothing, not
even its marker, before its inputs are validated."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from aerobust.architectures import MLPAutoencoder
from aerobust.checkpoints import save_checkpoint
from aerobust.cli import main
from aerobust.errors import AerobustError
from aerobust.output_folder import MARKER_FILE, check_output_folder, claim_output_folder

SIDE = 16
ARCH_KWARGS = {"input_shape": [1, SIDE, SIDE], "latent_dim": 4, "hidden": [16]}


def _audit_argv(inputs: dict, out, *extra) -> list[str]:
    return ["audit", "--checkpoint", f"tiny={inputs['ckpt']}", "--data", inputs["data"], "--pad", str(SIDE),
            "--attacks", "max-damage", "--attack-option", "max-damage.steps=2", "--lambdas", "1", "--images", "3",
            "--trials", "1", "--split", "all", "--quiet", "--no-report", "--out", str(out), *extra]


def _ok(argv):
    result = CliRunner().invoke(main, [str(a) for a in argv])
    assert result.exit_code == 0, result.output
    return result


def _refused(argv, expected: str) -> str:
    result = CliRunner().invoke(main, [str(a) for a in argv])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
    assert expected in lines[0], lines[0]
    return lines[0]


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny hashed checkpoint, real digit-like data, one audit, its report and a one-epoch training run."""
    root = tmp_path_factory.mktemp("owned")
    torch.manual_seed(0)
    ckpt = save_checkpoint(root / "tiny.pt", MLPAutoencoder(**{**ARCH_KWARGS, "hidden": (16,)}),
                           architecture="mlp-ae-32", arch_kwargs=ARCH_KWARGS)
    with open(root / "clean.npz", "wb") as handle:
        np.savez(handle, x=np.random.default_rng(0).random((12, 8, 8)).astype(np.float32))
    paths = {"root": root, "ckpt": ckpt, "data": f"npz:{root / 'clean.npz'}"}
    paths["audit"] = root / "audit"
    _ok(_audit_argv(paths, paths["audit"]))
    paths["other_audit"] = root / "other-audit"
    _ok(_audit_argv(paths, paths["other_audit"], "--lambdas", "2"))
    paths["report"] = root / "report"
    _ok(["report", paths["audit"], "--out", paths["report"]])
    paths["train"] = root / "train"
    _ok(["train", "--defense", "ae", "--data", paths["data"], "--pad", SIDE, "--arch-option", "hidden=[8]",
         "--latent-dim", "2", "--batch-size", "4", "--epochs", "1", "--quiet", "--out", paths["train"]])
    return paths


def test_each_command_marks_its_folder_with_its_kind(inputs):
    for key, kind in (("audit", "audit"), ("report", "report"), ("train", "train")):
        assert json.loads((inputs[key] / MARKER_FILE).read_text())["kind"] == kind


@pytest.mark.parametrize("command", ["report", "compare", "leaderboard", "train", "audit-into-train",
                                     "audit-into-report"])
def test_another_kind_of_run_is_refused_and_its_folder_left_untouched(inputs, command):
    # compare and report refuse their own audit folder already; a training run tests their new check
    target = {"audit-into-train": inputs["train"], "audit-into-report": inputs["report"],
              "compare": inputs["train"]}.get(command, inputs["audit"])
    before = _snapshot(target)
    argv = {
        "report": ["report", inputs["other_audit"], "--out", target],
        "compare": ["compare", inputs["audit"], inputs["other_audit"], "--mix-protocols", "--out", target],
        "leaderboard": ["leaderboard", inputs["other_audit"], "--out", target],
        "train": ["train", "--defense", "ae", "--data", inputs["data"], "--pad", SIDE, "--epochs", "1", "--quiet",
                  "--out", target],
        "audit-into-train": _audit_argv(inputs, target),
        "audit-into-report": _audit_argv(inputs, target),
    }[command]
    line = _refused(argv, "holds the files of an aerobust")
    assert "choose another --out" in line
    assert _snapshot(target) == before


def test_a_report_of_another_audit_is_refused_but_rebuilding_the_same_one_is_not(inputs):
    before = _snapshot(inputs["report"])
    _refused(["report", inputs["other_audit"], "--out", inputs["report"]], "made from other inputs")
    assert _snapshot(inputs["report"]) == before
    _ok(["report", inputs["audit"], "--out", inputs["report"]])


def test_folders_written_before_markers_are_recognised_by_their_manifest(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"command": "aerobust reproduce --quick"}))
    with pytest.raises(AerobustError, match="aerobust reproduce run, not of a leaderboard"):
        check_output_folder(tmp_path, "leaderboard")
    check_output_folder(tmp_path, "reproduce")  # the same kind may resume or rebuild it
    (tmp_path / "figures.png").write_bytes(b"")
    check_output_folder(tmp_path / "missing", "report")  # a new folder is free
    claim_output_folder(tmp_path / "own-figures", "report", {"results_dir": "a"})
    claim_output_folder(tmp_path / "own-figures", "report", {"results_dir": "a"})
    with pytest.raises(AerobustError, match="other inputs"):
        claim_output_folder(tmp_path / "own-figures", "report", {"results_dir": "b"})


def test_a_refused_audit_leaves_nothing_so_the_corrected_command_runs(inputs, tmp_path):
    out = tmp_path / "audit"
    # the paper's MS-SSIM preset needs larger images than 16 px: refused after the data and model are loaded
    _refused(_audit_argv(inputs, out, "--msssim", "pytorch_msssim"), "needs images of at least")
    assert not out.exists() or not any(out.iterdir())
    _ok(_audit_argv(inputs, out))
