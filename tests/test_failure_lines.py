"""Failures a user meets mid-run end in one line with exit code 2 that says what was kept and how to resume
(issue 23, item 6): a full disk or a read-only folder, Ctrl-C during training, a torchrun world whose
peers never join."""
from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import aerobust.audit.store
import aerobust.report.writer
import aerobust.training
from aerobust.cli import main


@pytest.fixture
def data(tmp_path) -> str:
    with open(tmp_path / "digits.npz", "wb") as handle:
        np.savez(handle, x=np.random.default_rng(0).random((12, 8, 8)).astype(np.float32))
    return f"npz:{tmp_path / 'digits.npz'}"


def _train_argv(data, out, epochs=2, *extra):
    return ["train", "--defense", "ae", "--data", data, "--pad", "16", "--arch-option", "hidden=[8]", "--latent-dim",
            "2", "--batch-size", "4", "--epochs", str(epochs), "--quiet", "--out", str(out), *extra]


def _audit_argv(data, out):
    return ["audit", "--model", "mlp-ae-32", "--model-arg", "input_shape=[1,16,16]", "--model-arg", "hidden=[8]",
            "--data", data, "--pad", "16", "--attacks", "max-damage", "--attack-option", "max-damage.steps=1",
            "--lambdas", "1,2", "--images", "2", "--trials", "1", "--split", "all", "--quiet", "--no-report",
            "--out", str(out)]


def _one_line(result, *expected) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
    for words in expected:
        assert words in lines[0], lines[0]
    return lines[0]


def _fail_on_call(monkeypatch, owner, name, call: int, error: BaseException):
    original, calls = getattr(owner, name), []

    def failing(*args, **kwargs):
        calls.append(None)
        if len(calls) == call:
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)


def test_a_full_disk_during_an_audit_keeps_the_finished_blocks_and_the_rerun_resumes(data, tmp_path, monkeypatch):
    runner = CliRunner()
    assert runner.invoke(main, _audit_argv(data, tmp_path / "whole")).exit_code == 0
    with monkeypatch.context() as patch:
        _fail_on_call(patch, aerobust.audit.store, "atomic_write", 6,  # fingerprint, plan, first block (3 files), then
                      OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "full" / "blocks" / "x.npz")))
        _one_line(runner.invoke(main, _audit_argv(data, tmp_path / "full")), "No space left on device",
                  "is kept", "rerun the same command to resume")
    assert len(list((tmp_path / "full" / "blocks").glob("*.csv"))) == 1  # the first block survived
    assert runner.invoke(main, _audit_argv(data, tmp_path / "full")).exit_code == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "full" / "results.csv"),
                                  pd.read_csv(tmp_path / "whole" / "results.csv"))


def test_a_full_disk_inside_torch_save_is_one_line(data, tmp_path, monkeypatch):
    _fail_on_call(monkeypatch, aerobust.training, "_write_run_state", 2, RuntimeError(
        "[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0 PytorchStreamWriter failed writing file"))
    _one_line(CliRunner().invoke(main, _train_argv(data, tmp_path / "run")), "cannot write", "--resume")


def test_a_read_only_leaderboard_folder_is_one_line(data, tmp_path, monkeypatch):
    assert CliRunner().invoke(main, _audit_argv(data, tmp_path / "audit")).exit_code == 0
    _fail_on_call(monkeypatch, aerobust.report.writer, "write_table", 1,
                  PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "lb" / "leaderboard.csv")))
    _one_line(CliRunner().invoke(main, ["leaderboard", str(tmp_path / "audit"), "--out", str(tmp_path / "lb")]),
              "Permission denied", "leaderboard.csv")


def test_ctrl_c_during_training_says_how_to_resume_and_the_resume_finishes(data, tmp_path, monkeypatch):
    runner = CliRunner()
    with monkeypatch.context() as patch:
        _fail_on_call(patch, aerobust.training, "_export_epoch", 2, KeyboardInterrupt())
        _one_line(runner.invoke(main, _train_argv(data, tmp_path / "run")), "interrupted", "--resume")
    resumed = runner.invoke(main, _train_argv(data, tmp_path / "run", 2, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert len(pd.read_csv(tmp_path / "run" / "history.csv")) == 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("rank", ["0", "1"])  # rank 0 waits for clients, rank 1 for a master
def test_a_torchrun_world_without_peers_times_out_with_one_line_naming_the_variables(data, tmp_path, rank):
    env = {**os.environ, "RANK": rank, "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port()), "AEROBUST_THREADS": "1"}
    completed = subprocess.run([sys.executable, "-m", "aerobust", "--join-timeout", "2",
                                *_train_argv(data, tmp_path / "run", 1, "--device", "cpu")],
                               capture_output=True, text=True, timeout=120, env=env)
    errors = [line for line in completed.stderr.splitlines() if line.startswith("Error: ")]
    assert completed.returncode == 2 and len(errors) == 1 and "Traceback" not in completed.stderr, completed.stderr
    for words in ("did not join", "MASTER_ADDR=127.0.0.1", f"MASTER_PORT={env['MASTER_PORT']}", "within 2 s",
                  "WORLD_SIZE=2", "--join-timeout"):
        assert words in errors[0], errors[0]
    assert not Path(tmp_path / "run").exists()  # nothing written before the world was joined
