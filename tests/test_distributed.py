"""torchrun worlds: sharded audits and data-parallel training on 2 CPU ranks (gloo) against one process."""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from aerobust.cli import main
from aerobust.audit.sharded import audit_pieces
from aerobust.distributed import DataParallelObjective, World, join_world, world_from_environment
from aerobust.errors import DistributedError
from aerobust.registry import ARCHITECTURES, DEFENSES
from tests.conftest import MNIST_TEST_SPEC
from tests.test_audit import checkpoint  # noqa: F401  (the tiny audited model, a pytest fixture)

ROOT = Path(__file__).resolve().parents[1]
STEPS = 6  # a weak but real attack keeps the suite fast


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- the world from torchrun's variables ---------------------------------------------------------------
def test_no_variables_is_one_process():
    assert world_from_environment({}) == World()
    assert world_from_environment({"WORLD_SIZE": "1", "RANK": "0"}) == World()


def test_a_complete_world_is_read():
    env = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "host", "MASTER_PORT": "1234"}
    assert world_from_environment(env) == World(rank=1, size=4, local_rank=1)


@pytest.mark.parametrize("env, message", [
    ({"RANK": "0"}, "WORLD_SIZE=None"),
    ({"WORLD_SIZE": "two", "RANK": "0"}, "WORLD_SIZE='two'"),
    ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "RANK=2 but"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, "MASTER_ADDR and MASTER_PORT not set"),
])
def test_a_misconfigured_world_is_one_clear_error(env, message):
    with pytest.raises(DistributedError, match=message):
        world_from_environment(env)


def test_cli_says_one_line_and_exits_2_for_a_misconfigured_world(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    result = CliRunner().invoke(main, ["audit", "--model", "mlp-ae-32", "--out", str(tmp_path / "a")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "MASTER_ADDR and MASTER_PORT not set" in lines[0], result.output


def test_a_batch_that_does_not_split_over_the_ranks_is_refused():
    _, model, defense = _tiny("ae", "mlp-ae-32")
    with pytest.raises(DistributedError, match="--batch-size 7 does not split evenly over 2 ranks"):
        DataParallelObjective(defense, model, 7, World(rank=0, size=2), torch.device("cpu"))


def test_commands_that_do_not_share_work_refuse_a_world(monkeypatch):
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, ["list", "attacks"])
    assert result.exit_code == 2
    assert result.output.strip() == ("Error: aerobust list runs in one process; under torchrun only audit and train "
                                     "share their work: start it with plain aerobust")


# -- dealing out the audit -----------------------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(n_blocks=st.integers(1, 12), n_images=st.integers(1, 40), world_size=st.integers(1, 8),
       align=st.sampled_from([1, 2, 4, 8, 16]))
def test_pieces_cover_every_block_and_image_once_cut_on_chunk_boundaries(n_blocks, n_images, world_size, align):
    pieces = audit_pieces(n_blocks, n_images, world_size, align=align)
    covered = sorted((block, image) for block, start, stop in pieces for image in range(start, stop))
    assert covered == [(block, image) for block in range(n_blocks) for image in range(n_images)]
    assert all(stop > start and start % align == 0 for _, start, stop in pieces)
    counts = [len(pieces[rank::world_size]) for rank in range(world_size)]
    if n_images >= world_size // math.gcd(n_blocks, world_size) * align:  # room for every range asked for
        assert len(set(counts)) == 1
    if n_blocks % world_size == 0:
        assert all((start, stop) == (0, n_images) for _, start, stop in pieces)


# -- the sharded audit against one process -------------------------------------------------------------
# An attack that logs what each rank attacks and can die on one rank once the other has saved a piece.
PLUGIN = """
import os, time
from pathlib import Path
from aerobust.attacks import LatentAttack
from aerobust.registry import register_attack

@register_attack("latent-logged")
class LoggedLatentAttack(LatentAttack):
    name = "latent-logged"

    def sweep(self, model, x, *args, image_ids=None, **kwargs):
        with open(os.environ["AEROBUST_TEST_LOG"], "a") as log:
            log.write(f"{os.environ.get('RANK', '-')} {image_ids.tolist()}\\n")
        if os.environ.get("RANK") and os.environ.get("AEROBUST_TEST_DIE_RANK") == os.environ["RANK"]:
            pieces = Path(os.environ["AEROBUST_TEST_PIECES"])
            for _ in range(600):  # the other rank saves its piece first
                if list(pieces.glob("*.csv")):
                    os._exit(1)
                time.sleep(0.1)
        return super().sweep(model, x, *args, image_ids=image_ids, **kwargs)
"""


def _audit_args(checkpoint, out: Path, attacks: str, lambdas: str, images: int) -> list[str]:
    return ["audit", "--checkpoint", f"tiny={checkpoint}", "--data", MNIST_TEST_SPEC, "--pad", "32",
            "--attacks", attacks, "--lambdas", lambdas, "--images", str(images), "--trials", "2", "--seed", "3",
            # 4 rows per call: chunks of 1 image (2 trials x 2 restarts) or 2 (the latent attack restarts once),
            # so uneven blocks are cut into ranges
            "--attack-option", f"*.steps={STEPS}", "--attack-option", "*.batch_size=4", "--device", "cpu", "--quiet",
            "--out", str(out)]


def _torchrun(args: list[str], **env) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "aerobust", "--threads", "1", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def _assert_same_audit(single_dir: Path, sharded_dir: Path):
    # Cut where the attacks' chunks end, image ranges are attacked and measured exactly as in one process:
    # the very same bytes.
    assert (sharded_dir / "results.csv").read_bytes() == (single_dir / "results.csv").read_bytes()
    tables = sorted(p.name for p in (single_dir / "report").glob("*.csv"))
    assert tables and tables == sorted(p.name for p in (sharded_dir / "report").glob("*.csv"))
    for name in tables:
        pd.testing.assert_frame_equal(pd.read_csv(sharded_dir / "report" / name),
                                      pd.read_csv(single_dir / "report" / name), check_exact=False, rtol=1e-5,
                                      atol=1e-5)
    flags = [json.loads((d / "manifest.json").read_text())["flags"] for d in (single_dir, sharded_dir)]
    assert flags[0] == flags[1]


def _assert_two_ranks_audit_like_one_process(tmp_path: Path, checkpoint, attacks: str, lambdas: str):
    args = _audit_args(checkpoint, tmp_path / "two", attacks, lambdas, 6)
    done = _torchrun(args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert CliRunner().invoke(main, args[:-1] + [str(tmp_path / "one")], catch_exceptions=False).exit_code == 0
    _assert_same_audit(tmp_path / "one", tmp_path / "two")
    assert not (tmp_path / "two" / "blocks" / "pieces").exists()


def test_two_ranks_write_the_rows_and_tables_of_one_process(tmp_path, checkpoint):
    # 3 attacks x 2 lambdas = 6 blocks: each rank takes 3 whole blocks.
    _assert_two_ranks_audit_like_one_process(tmp_path, checkpoint, "latent,max-damage,latent-classifier", "1,3")


def test_a_killed_rank_resumes_and_split_blocks_merge_to_one_process(tmp_path, checkpoint):
    # 1 block for 2 ranks: each attacks a range of the images; rank 0 merges them.
    plugin = tmp_path / "logged.py"
    plugin.write_text(PLUGIN)
    out, log = tmp_path / "two", tmp_path / "attacked.log"
    args = ["--plugin", str(plugin), *_audit_args(checkpoint, out, "latent-logged", "2", 7)]
    env = {"AEROBUST_TEST_LOG": str(log), "AEROBUST_TEST_PIECES": str(out / "blocks" / "pieces")}
    killed = _torchrun(args, AEROBUST_TEST_DIE_RANK="1", **env)
    assert killed.returncode != 0 and not (out / "results.csv").exists()
    assert len(list((out / "blocks" / "pieces").glob("*.csv"))) == 1
    log.unlink()
    resumed = _torchrun(args, **env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (rank, attacked), = [line.split(" ", 1) for line in log.read_text().splitlines()]
    _, start, stop = audit_pieces(1, 7, 2)[1]
    assert rank == "1" and len(json.loads(attacked)) == stop - start  # only the missing range was attacked
    assert not (out / "blocks" / "pieces").exists()

    single = CliRunner().invoke(main, args[:-1] + [str(tmp_path / "one")], catch_exceptions=False,
                                env={"AEROBUST_TEST_LOG": str(log)})
    assert single.exit_code == 0, single.output
    _assert_same_audit(tmp_path / "one", out)


def test_blocks_fitted_over_the_image_set_are_never_cut():
    pieces = audit_pieces(3, 7, 2, whole={1})
    assert (1, 0, 7) in pieces and [p for p in pieces if p[0] == 1] == [(1, 0, 7)]
    assert sorted({(start, stop) for block, start, stop in pieces if block != 1}) == [(0, 4), (4, 7)]


def test_two_ranks_fit_the_universal_pattern_of_one_process(tmp_path, checkpoint):
    # 3 blocks for 2 ranks would be cut into image ranges; universal fits one pattern over all images.
    _assert_two_ranks_audit_like_one_process(tmp_path, checkpoint, "universal", "1,2,3")


# -- data-parallel training against one process --------------------------------------------------------
DEFENSE_ARCH = (("coupled-ks", "mlp-ae-32"), ("beta-tcvae", "mlp-vae-32"), ("ae", "mlp-ae-32"))
BATCH = 8


def _tiny(defense_name: str, arch: str, seed: int = 0):
    from aerobust.adapter import wrap

    torch.manual_seed(seed)
    module = ARCHITECTURES.get(arch)(input_shape=[1, 8, 8], latent_dim=3, hidden=[16])
    model = wrap(module, device="cpu")
    defense = DEFENSES.create(defense_name, **({"latent_noise": 0.1} if defense_name == "ae" else {}))
    defense.setup(model, dataset_size=100, batch_size=BATCH, generator=torch.Generator().manual_seed(seed))
    model.train()
    return module, model, defense


def _step(objective, module, x: torch.Tensor):
    terms = objective(x, torch.Generator().manual_seed(7))
    terms["total"].backward()
    grads = [p.grad.detach().clone() for p in module.parameters()]
    return {k: v.detach() for k, v in terms.items()}, grads


def _rank_step(rank: int, port: int, images: torch.Tensor, out_dir: str):
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    world, device = join_world(torch.device("cpu"))
    for defense_name, arch in DEFENSE_ARCH:
        module, model, defense = _tiny(defense_name, arch)
        objective = DataParallelObjective(defense, model, BATCH, world, device)
        terms, grads = _step(objective, module, images[objective.rows])
        torch.save({"terms": objective.mean_over_ranks(terms), "grads": grads},
                   Path(out_dir) / f"{defense_name}-{rank}.pt")


def test_two_ranks_optimise_the_objective_of_one_process_with_the_whole_batch(tmp_path):
    from aerobust.datasets import load_dataset

    images = load_dataset("digits", "train", limit=BATCH).images  # real 8x8 digits
    mp.spawn(_rank_step, args=(_free_port(), images, str(tmp_path)), nprocs=2, join=True)
    for defense_name, arch in DEFENSE_ARCH:
        module, model, defense = _tiny(defense_name, arch)
        terms, grads = _step(DataParallelObjective(defense, model, BATCH, World(), torch.device("cpu")), module,
                             images)
        for rank in range(2):
            ranked = torch.load(tmp_path / f"{defense_name}-{rank}.pt", weights_only=True)
            assert sorted(ranked["terms"]) == sorted(terms)
            for name, value in terms.items():
                torch.testing.assert_close(ranked["terms"][name].float().cpu(), value.float().cpu(),
                                           rtol=1e-6, atol=1e-6, msg=f"{defense_name} {name}")
            for got, want in zip(ranked["grads"], grads):
                torch.testing.assert_close(got.cpu(), want.cpu(), rtol=1e-6, atol=1e-6, msg=defense_name)


def test_torchrun_training_resumes_a_checkpoint_like_one_process(tmp_path):
    from aerobust.datasets import load_dataset
    from aerobust.training import train

    data = load_dataset("digits", "train", limit=48)
    settings_ = dict(batch_size=16, seed=1, device="cpu", quiet=True, arch_kwargs={"input_shape": [1, 8, 8],
                                                                                   "latent_dim": 3, "hidden": [16]})
    whole = train("coupled-ks", "mlp-ae-32", data, epochs=2, **settings_)
    train("coupled-ks", "mlp-ae-32", data, epochs=1, out_dir=tmp_path / "run", **settings_)
    # Epoch 2 by two ranks (8 rows each), resumed from the single-process checkpoint of epoch 1.
    done = _torchrun(["train", "--defense", "coupled-ks", "--data", "digits", "--limit", "48", "--epochs", "2",
                      "--batch-size", "16", "--seed", "1", "--latent-dim", "3", "--arch-option", "hidden=16,",
                      "--device", "cpu", "--quiet", "--resume", "--out", str(tmp_path / "run")])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained coupled-ks") == 1  # rank 0 speaks for the run
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2]
    for name in ("total", "rec", "ks", "ks_pair", "cv"):
        assert history[1][name] == pytest.approx(whole.history[1][name], rel=1e-5, abs=1e-6), name
    weights = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(weights[name], value, rtol=1e-5, atol=1e-6, msg=name)
