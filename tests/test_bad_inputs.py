"""Every bad input a user can give ends in one line on stderr and exit code 2, before any training or attack.

Table-driven over audit, report, compare, train, defend and demo; each case also names the words its one
line must contain, so that a case cannot pass by failing for another reason.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from aerobust.architectures import MLPAutoencoder
from aerobust.checkpoints import save_checkpoint
from aerobust.cli import main

SIDE = 16  # sklearn digits (8x8) padded to 16: the smallest images the paper's MS-SSIM preset scores
ARCH_KWARGS = {"input_shape": [1, SIDE, SIDE], "latent_dim": 4, "hidden": [16]}
QUICK_AUDIT = ["--attacks", "max-damage", "--lambdas", "1", "--images", "2", "--trials", "1", "--quiet"]
LONG_SEED = "1" * 23


def _write_npz(path: Path, images: np.ndarray, labels=None) -> str:
    arrays = {"x": images} if labels is None else {"x": images, "y": labels}
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return f"npz:{path}"


def _sidecar_variant(files: Path, name: str, checkpoint: Path, change) -> str:
    """A copy of the tiny checkpoint whose sidecar ``change`` edits."""
    weights = files / f"{name}.pt"
    shutil.copyfile(checkpoint, weights)
    sidecar = json.loads(checkpoint.with_suffix(".json").read_text())
    change(sidecar)
    weights.with_suffix(".json").write_text(json.dumps(sidecar))
    return str(weights)


def _audit_dir(files: Path, name: str, checkpoint: Path, images: int, trials: int) -> str:
    out = files / name
    result = CliRunner().invoke(main, ["audit", "--checkpoint", f"tiny={checkpoint}", "--data", "npz:" +
                                       str(files / "clean.npz"), "--pad", str(SIDE), "--attacks", "max-damage",
                                       "--attack-option", "max-damage.steps=2", "--lambdas", "1", "--images",
                                       str(images), "--trials", str(trials), "--split", "all", "--quiet", "--no-report",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    return str(out)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny inputs, good and bad: a hashed checkpoint, npz files, image folders, plugins, audit folders."""
    files = tmp_path_factory.mktemp("bad-inputs")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(files / "tiny.pt", MLPAutoencoder(**{**ARCH_KWARGS, "hidden": (16,)}),
                                 architecture="mlp-ae-32", arch_kwargs=ARCH_KWARGS)
    images = np.random.default_rng(0).random((12, 8, 8)).astype(np.float32)
    labels = np.arange(12) % 3
    paths = {"ckpt": str(checkpoint), "file": str(files / "a-file")}
    (files / "a-file").write_text("not a folder")
    paths["clean"] = _write_npz(files / "clean.npz", images)  # unlabelled: no latent classifier to train
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        poisoned = images.copy()
        poisoned[3, 2, 2] = value
        paths[name] = _write_npz(files / f"{name}.npz", poisoned, labels)
    paths["few_labels"] = _write_npz(files / "few.npz", images, labels[:5])
    paths["negative_labels"] = _write_npz(files / "negative.npz", images, labels - 1)
    paths["string_labels"] = _write_npz(files / "strings.npz", images, np.array(["cat"] * 12))
    paths["object_images"] = _write_npz(files / "object.npz", np.array([images[0], images[1][:4]], dtype=object))
    paths["out_of_range"] = _write_npz(files / "range.npz", images * 3)
    for name in ("good", "corrupt"):
        (files / "folder" / name).mkdir(parents=True)
    Image.fromarray((images[0] * 255).astype(np.uint8)).save(files / "folder" / "good" / "0.png")
    (files / "folder" / "corrupt" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n but nothing after the magic")
    paths["corrupt_png"] = f"folder:{files / 'folder'}"
    paths["unhashed"] = _sidecar_variant(files, "unhashed", checkpoint, lambda s: s.pop("weights_sha256"))
    paths["kwargs_list"] = _sidecar_variant(files, "kwlist", checkpoint, lambda s: s.update(arch_kwargs=[1, 16]))
    paths["kwargs_rejected"] = _sidecar_variant(files, "kwbad", checkpoint,
                                                lambda s: s["arch_kwargs"].update(width=3))
    (files / "exits_on_import.py").write_text("import sys\nsys.exit(3)\n")
    (files / "exits_in_attack.py").write_text(
        "import sys\nfrom aerobust.attacks import Attack\nfrom aerobust.registry import register_attack\n\n\n"
        "@register_attack('exits')\nclass Exits(Attack):\n    objective_name = 'max-damage'\n\n"
        "    def optimize(self, problem):\n        sys.exit(3)\n")
    paths["exit_import"] = str(files / "exits_on_import.py")
    paths["exit_attack"] = str(files / "exits_in_attack.py")
    paths["audit_a"] = _audit_dir(files, "audit-a", checkpoint, images=3, trials=1)
    paths["audit_other_images"] = _audit_dir(files, "audit-b", checkpoint, images=4, trials=1)
    paths["audit_other_trials"] = _audit_dir(files, "audit-c", checkpoint, images=3, trials=2)
    truncated = files / "audit-truncated"
    shutil.copytree(paths["audit_a"], truncated)
    lines = (truncated / "results.csv").read_text().splitlines()
    (truncated / "results.csv").write_text("\n".join(lines[:-1] + [lines[-1][: len(lines[-1]) // 2]]) + "\n")
    paths["audit_truncated"] = str(truncated)
    # TAEF2 weights that are garbage, empty, or a pickled module (refused by weights_only loading)
    for name, write in (("garbage", lambda f: f.write_bytes(np.random.default_rng(1).bytes(999))),
                        ("empty", lambda f: f.write_bytes(b"")),
                        ("module", lambda f: torch.save(torch.nn.Linear(2, 2), f))):
        (files / f"taef2-{name}").mkdir()
        for part in ("taef2_encoder.pth", "taef2_decoder.pth"):
            write(files / f"taef2-{name}" / part)
        paths[f"taef2_{name}"] = str(files / f"taef2-{name}")
    # records a hand edit broke: a mean without its interval, an empty headline
    record = json.loads(next(Path(paths["audit_a"]).rglob("record.json")).read_text())
    for name, edit in (("record_null_ci", lambda r: r["headline"][0].update(ci_low=None)),
                       ("record_no_headline", lambda r: r.update(headline=[]))):
        broken = json.loads(json.dumps(record))
        edit(broken)
        (files / f"{name}.json").write_text(json.dumps(broken))
        paths[name] = str(files / f"{name}.json")
    return paths


def audit(p, *args, data="clean", checkpoint="ckpt"):
    return ["audit", "--checkpoint", p[checkpoint], "--data", p[data], "--pad", str(SIDE), *QUICK_AUDIT,
            "--out", p["out"] + "-audit", *args]


def train(p, *args, data="digits"):
    return ["train", "--defense", "ae", "--data", p.get(data, data), "--epochs", "1", "--quiet",
            "--out", p["out"] + "-train", *args]


def defend(p, *args, checkpoint="ckpt"):
    return ["defend", "purify", "--checkpoint", p[checkpoint], "--data", "digits", "--pad", str(SIDE), "--quiet",
            "--out", p["out"] + "-defend", *args]


CASES = {
    # data refused when loaded: the line names the source and what is wrong
    "audit npz with NaN": (lambda p: audit(p, data="nan"), "1 of 768 pixel values are NaN"),
    "audit npz with inf": (lambda p: audit(p, data="inf"), "NaN or infinite"),
    "audit npz fewer labels": (lambda p: audit(p, data="few_labels"), "5 labels"),
    "audit npz negative labels": (lambda p: audit(p, data="negative_labels"), "labels are negative"),
    "audit npz string labels": (lambda p: audit(p, data="string_labels"), "integer class indices"),
    "audit npz object array": (lambda p: audit(p, data="object_images"), "without pickle"),
    "audit npz out of range": (lambda p: audit(p, data="out_of_range"), "must lie in [0, 1]"),
    "audit folder corrupt png": (lambda p: audit(p, data="corrupt_png"), "1.png is not a readable image"),
    "audit idx missing folder": (lambda p: audit(p) + ["--data", "idx:/no/such/folder"], "folder not found"),
    "audit unknown dataset": (lambda p: audit(p) + ["--data", "cifar"], "unknown datasets 'cifar'"),
    # where results go
    "audit out below a file": (lambda p: audit(p) + ["--out", p["file"] + "/sub"], "Not a directory"),
    "audit out under /proc": (lambda p: audit(p) + ["--out", "/proc/aerobust-audit"], "cannot write into"),
    "audit out is a file": (lambda p: audit(p) + ["--out", p["file"]], "is a file"),
    # options
    "audit attack option not an int": (lambda p: audit(p, "--attack-option", "max-damage.steps=abc"),
                                       "steps must be a whole number"),
    "audit attack option steps not whole": (lambda p: audit(p, "--attack-option", "max-damage.steps=2.5"),
                                            "steps must be a whole number"),
    "audit attack option step size infinite": (lambda p: audit(p, "--attack-option", "*.step_size=inf"),
                                               "step_size must be"),
    "audit attack option without attack": (lambda p: audit(p, "--attack-option", "steps=3"), "ATTACK.KEY=VALUE"),
    "audit resize 0": (lambda p: audit(p, "--resize", "0"), "cannot resize images to 0"),
    "audit resize -3": (lambda p: audit(p, "--resize", "-3"), "cannot resize images to -3"),
    "audit pad smaller than images": (lambda p: audit(p) + ["--pad", "3"], "cannot pad 8x8 images to 3"),
    "audit seed with 23 digits": (lambda p: audit(p, "--seed", LONG_SEED), "not in the range"),
    "audit negative seed": (lambda p: audit(p, "--seed", "-1"), "not in the range"),
    "audit lambda nan": (lambda p: audit(p) + ["--lambdas", "nan"], "--lambdas must be finite"),
    "audit negative lambda": (lambda p: audit(p) + ["--lambdas", "1,-2"], "lambdas must be finite and >= 0"),
    "audit zero images": (lambda p: audit(p) + ["--images", "0"], "at least 1"),
    "audit unknown msssim preset": (lambda p: audit(p, "--msssim", "nope"), "nope"),
    "audit unknown device": (lambda p: audit(p, "--device", "abacus"), "unknown device 'abacus'"),
    "audit no attacks": (lambda p: audit(p) + ["--attacks", ","], "no attack to run"),
    "audit unknown attack": (lambda p: audit(p) + ["--attacks", "nope"], "unknown attacks 'nope'"),
    "audit lambdas not numbers": (lambda p: audit(p) + ["--lambdas", "one"], "comma-separated numbers"),
    "audit more images than data": (lambda p: audit(p) + ["--images", "1000"], "is larger than"),
    "audit zero trials": (lambda p: audit(p) + ["--trials", "0"], "at least 1"),
    "audit size mismatch without pad": (lambda p: [a for a in audit(p) if a not in ("--pad", str(SIDE))],
                                        "fit them with --pad N or --resize N"),
    "audit unknown attack option": (lambda p: audit(p, "--attack-option", "max-damage.bogus=3"),
                                    "does not take the option(s) bogus"),
    "audit unknown split": (lambda p: audit(p, "--split", "val"), "'val' is not one of"),
    "audit duplicate labels": (lambda p: ["audit", "--checkpoint", "a=" + p["ckpt"], "--checkpoint", "a=" + p["ckpt"],
                                          "--data", p["clean"], "--pad", str(SIDE), *QUICK_AUDIT, "--out", p["out"]],
                               "model labels must be unique"),
    "audit nothing to audit": (lambda p: ["audit", "--data", p["clean"], *QUICK_AUDIT, "--out", p["out"]],
                               "nothing to audit"),
    # models and checkpoints
    "audit factory that is no model": (lambda p: ["audit", "--model", "json:dumps", "--data", p["clean"], "--pad",
                                                  str(SIDE), *QUICK_AUDIT, "--out", p["out"] + "-audit"],
                                       "--model json:dumps raised TypeError"),
    "audit factory module missing": (lambda p: ["audit", "--model", "no_such_module_xyz:build", "--data", p["clean"],
                                                *QUICK_AUDIT, "--out", p["out"] + "-audit"], "cannot import"),
    "audit checkpoint missing": (lambda p: audit(p) + ["--checkpoint", p["file"] + ".pt"], "does not exist"),
    "audit unhashed sidecar": (lambda p: audit(p, checkpoint="unhashed"), "--trust-unhashed"),
    "audit sidecar kwargs list": (lambda p: audit(p, checkpoint="kwargs_list"), "must be a JSON object"),
    "audit sidecar kwargs rejected": (lambda p: audit(p, checkpoint="kwargs_rejected"), "does not take the arguments"),
    # plugins that exit the process
    "audit plugin exits on import": (lambda p: audit(p, "--plugin", p["exit_import"]),
                                     "exits_on_import.py called sys.exit(3)"),
    "audit attack plugin exits": (lambda p: audit(p, "--plugin", p["exit_attack"]) + ["--attacks", "exits"],
                                  "exits_in_attack.py called sys.exit(3)"),
    # report and compare
    "report truncated row": (lambda p: ["report", p["audit_truncated"]], "fields (the file was cut"),
    "report missing folder": (lambda p: ["report", p["out"] + "-nowhere"], "does not exist"),
    "report folder without results": (lambda p: ["report", str(Path(p["file"]).parent / "folder")],
                                      "has no results.csv"),
    "report out below a file": (lambda p: ["report", p["audit_a"], "--out", p["file"] + "/r"], "Not a directory"),
    "compare different images": (lambda p: ["compare", p["audit_a"], p["audit_other_images"], "--out",
                                            p["out"] + "-cmp"], "scored other images"),
    "compare different trials": (lambda p: ["compare", p["audit_a"], p["audit_other_trials"], "--out",
                                            p["out"] + "-cmp"], "scored other trials"),
    "compare truncated audit": (lambda p: ["compare", p["audit_a"], p["audit_truncated"], "--out",
                                           p["out"] + "-cmp"], "fields (the file was cut"),
    # train
    "train out under /proc": (lambda p: train(p) + ["--out", "/proc/aerobust-train"], "cannot write into"),
    "train out below a file": (lambda p: train(p) + ["--out", p["file"] + "/run"], "Not a directory"),
    "train resume without a run": (lambda p: train(p, "--resume") + ["--out", p["out"] + "-empty"],
                                   "nothing to resume"),
    "train npz with NaN": (lambda p: train(p, data="nan"), "pixel values are NaN"),
    "train resize 0": (lambda p: train(p, "--resize", "0"), "cannot resize images to 0"),
    "train seed with 23 digits": (lambda p: train(p, "--seed", LONG_SEED), "not in the range"),
    "train plugin exits on import": (lambda p: train(p, "--plugin", p["exit_import"]), "called sys.exit(3)"),
    "train unknown defense": (lambda p: train(p) + ["--defense", "nope"], "unknown defenses 'nope'"),
    "train latent noise nan": (lambda p: train(p, "--latent-noise", "nan"), "latent_noise of defense 'ae' must be"),
    "train beta nan": (lambda p: train(p, "--arch", "mlp-vae-32", "--beta", "nan") + ["--defense", "vae"],
                       "beta of defense 'vae' must be a finite number"),
    "train coupling nan": (lambda p: train(p, "--coupling", "nan") + ["--defense", "coupled-ks"], "coupling"),
    "train learning rate nan": (lambda p: train(p, "--lr", "nan"), "learning rate must be positive"),
    "train limit 0": (lambda p: train(p, "--limit", "0"), "at least 1"),
    "train arch option without value": (lambda p: train(p, "--arch-option", "hidden"), "takes KEY=VALUE"),
    # defend
    "defend linf eps nan": (lambda p: defend(p, "--linf-eps", "nan"), "--linf-eps must be finite"),
    "defend l2 eps inf": (lambda p: defend(p, "--l2-eps", "1,inf"), "--l2-eps must be finite"),
    "defend unhashed sidecar": (lambda p: defend(p, checkpoint="unhashed"), "--trust-unhashed"),
    "defend out under /proc": (lambda p: defend(p) + ["--out", "/proc/aerobust-defend"], "cannot write into"),
    "defend seed with 23 digits": (lambda p: defend(p, "--seed", LONG_SEED), "not in the range"),
    "defend one sample": (lambda p: defend(p, "--samples", "1"), "--samples must be at least 2"),
    "defend zero bins": (lambda p: defend(p, "--bins", "0"), "--bins must be at least 1"),
    "defend latent noise nan": (lambda p: defend(p, "--latent-noise", "nan"), "--latent-noise must be a finite"),
    "defend unknown attack": (lambda p: defend(p, "--attacks", "jsma"), "unknown classifier attack 'jsma'"),
    "defend no model": (lambda p: ["defend", "purify", "--data", "digits", "--out", p["out"]], "exactly one of"),
    "defend data with NaN": (lambda p: defend(p, "--eval-data", p["nan"]), "pixel values are NaN"),
    # demo
    "demo out below a file": (lambda p: ["demo", "--out", p["file"] + "/demo"], "Not a directory"),
    "demo zero epochs": (lambda p: ["demo", "--out", p["out"] + "-demo", "--epochs", "0"], "x>=1"),
    "demo lambda nan": (lambda p: ["demo", "--out", p["out"] + "-demo", "--lambdas", "nan"], "must be finite"),
    "demo zero images": (lambda p: ["demo", "--out", p["out"], "--images", "0"], "at least 1"),
    "compare nothing": (lambda p: ["compare", "--out", p["out"]], "Missing argument"),
    # output folders owned by another kind of run (issue 23): refused before any work, nothing replaced
    "train out is an audit folder": (lambda p: train(p) + ["--out", p["audit_a"]], "holds the files of an aerobust audit"),
    "defend out is an audit folder": (lambda p: defend(p) + ["--out", p["audit_a"]],
                                      "holds the files of an aerobust audit"),
    "report out is another audit": (lambda p: ["report", p["audit_a"], "--out", p["audit_other_images"]],
                                    "holds the files of an aerobust audit"),
    "compare out is an audit folder": (lambda p: ["compare", p["audit_a"], "--out", p["audit_other_trials"]],
                                       "holds the files of an aerobust audit"),
    "report a file": (lambda p: ["report", p["file"]], "is a file"),
    "demo seed with 23 digits": (lambda p: ["demo", "--out", p["out"] + "-demo", "--seed", LONG_SEED],
                                 "not in the range"),
    # the tracebacks issue 23 found
    "audit negative latent size": (lambda p: ["audit", "--model", "mlp-ae-32", "--model-arg", "latent_dim=-5",
                                              "--data", "digits", "--pad", str(SIDE), *QUICK_AUDIT, "--out", p["out"]],
                                   "give positive sizes"),
    **{f"audit taef2 weights {kind}": (lambda p, kind=kind: [
        "audit", "--model", "taef2", "--model-arg", f"weights_dir={p['taef2_' + kind]}", "--data", "skimage",
        "--resize", "64", *QUICK_AUDIT, "--out", p["out"]], "is not a TAEF2 weights file")
       for kind in ("garbage", "empty", "module")},
    "leaderboard record without interval": (lambda p: ["leaderboard", p["record_null_ci"], "--out", p["out"]],
                                            "a mean without its interval"),
    "leaderboard empty headline": (lambda p: ["leaderboard", p["record_no_headline"], "--out", p["out"]],
                                   "empty headline"),
    "leaderboard out below a file": (lambda p: ["leaderboard", p["audit_a"], "--out", p["file"] + "/lb"],
                                     "Not a directory"),
    "reproduce seed with 23 digits": (lambda p: ["reproduce", "--seeds", LONG_SEED, "--out", p["out"], "--runs",
                                                 p["out"] + "-runs"], "training seeds must lie in"),
}


def test_the_table_covers_every_command():
    commands = {name.split()[0] for name in CASES}
    assert len(CASES) >= 40 and commands == {"audit", "report", "compare", "train", "defend", "demo", "leaderboard",
                                             "reproduce"}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_code_2(files, case, tmp_path):
    argv, expected = CASES[case]
    result = CliRunner().invoke(main, argv({**files, "out": str(tmp_path / "out")}))
    assert "Traceback" not in result.output
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert expected in lines[0], lines[0]
    assert not result.stdout.strip(), result.stdout


@pytest.mark.parametrize("case", ["audit plugin exits on import", "train out under /proc"])
def test_bad_input_as_a_subprocess(files, case, tmp_path):
    argv, expected = CASES[case]
    completed = subprocess.run([sys.executable, "-m", "aerobust", *argv({**files, "out": str(tmp_path / "out")})],
                               capture_output=True, text=True, timeout=120,
                               env={**os.environ, "AEROBUST_THREADS": "1"})
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert completed.returncode == 2 and len(lines) == 1 and expected in lines[0], completed.stderr
    assert "Traceback" not in completed.stderr and not completed.stdout.strip()


def test_trusting_an_unhashed_sidecar_is_explicit_and_recorded(files, tmp_path):
    paths = {**files, "out": str(tmp_path / "out")}
    result = CliRunner().invoke(main, audit(paths, "--trust-unhashed", "--no-report", checkpoint="unhashed"))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out-audit" / "manifest.json").read_text())
    assert [info["weights_verified"] for info in manifest["models"].values()] == [False]
