"""The audit: models x attacks x lambdas x trials on a fixed, saved plan of images and targets.

Results are written block by block (one block = model, attack, lambda) as they finish; a rerun with
the same configuration skips finished blocks, so a killed audit resumes where it stopped and ends
with the same table as an uninterrupted one. Reports are built from the saved results only.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from .adapter import Autoencoder
from .checkpoints import resolve_model
from .datasets import ImageSet, load_dataset
from .distributed import is_main_process, join_world, run_sharded_audit
from .errors import AerobustError
from .output_folder import check_output_folder, claim_output_folder
from .registry import ATTACKS
from .report import read_labelled_csv
from .results import RESULT_COLUMNS, block_stem, file_safe, lambda_text
from .runtime import (atomic_write, module_digest, resolve_device, seed_everything, tensor_digest,
                      write_manifest)

PAPER_ATTACKS = ("latent", "max-damage", "latent-classifier")
# The audit's identity (config, model and data content hashes, threads); a rerun must match it to resume.
FINGERPRINT_FILE = "audit-fingerprint.json"


@dataclasses.dataclass
class ModelSpec:
    """One audited model: a label for the tables and exactly one source."""

    label: str
    model: str | None = None
    checkpoint: str | None = None
    model_args: dict = dataclasses.field(default_factory=dict)  # keywords for the architecture or factory
    trust_factory: bool = False  # a checkpoint whose sidecar names a factory may run it
    pixel_range: str | None = None  # "low,high" the model's images live in; None: its attribute, else 0,1
    posterior: str = "logvar"  # how an encoder's (mu, s) tuple is read: logvar, std or var

    @classmethod
    def parse(cls, text: str, kind: str) -> "ModelSpec":
        """``NAME``/``FILE`` or ``LABEL=NAME``/``LABEL=FILE``; kind is "model" or "checkpoint"."""
        label, sep, source = text.partition("=")
        if not sep:
            source = text
            label = _checkpoint_label(Path(text)) if kind == "checkpoint" else text.rsplit(":", 1)[-1]
        return cls(label=label, **{kind: source})


def _checkpoint_label(path: Path) -> str:
    """``runs/coupled/model.pt`` (what ``aerobust train`` writes) -> ``coupled``; else the file stem."""
    return path.parent.name if path.stem == "model" and path.parent.name else path.stem


@dataclasses.dataclass
class AuditConfig:
    models: list[ModelSpec]
    data: str = "mnist-5k"
    split: str = "test"
    pad_to: int | None = None
    resize: int | None = None
    attacks: Sequence[str] = PAPER_ATTACKS
    lambdas: Sequence[float] = (1.0, 3.0, 5.0)
    images: int = 100
    trials: int = 10
    seed: int = 0
    attack_options: dict = dataclasses.field(default_factory=dict)
    msssim: str = "auto"  # a preset name, or "auto": chosen from the image size and channels
    classifier_epochs: int = 30
    classifier_images: int = 4000
    examples: int = 6
    # None: each attack as configured; N: per sample the worst case over the attack, the same with N more
    # restarts and the reference L-BFGS-B (attacks/ensemble.py); the ``attack_member`` column names the winner.
    ensemble_restarts: int | None = None

    def validate(self):
        """Refuse what would put two results under one key (file name, table label) or cannot run."""
        if not self.models:
            raise AerobustError("nothing to audit: give --model or --checkpoint at least once")
        labels = [m.label for m in self.models]
        if len(set(labels)) != len(labels):
            raise AerobustError(f"model labels must be unique, got {labels}; name them LABEL=SOURCE")
        _refuse_collisions(labels, lambda label: file_safe(label).casefold(), "model labels",
                           "share one results file name (only letters, digits, '_', '.' and '-' are kept, and "
                           "case is ignored); name them apart with LABEL=SOURCE")
        _refuse_collisions(list(self.attacks), str, "--attacks", "are the same attack listed twice; list it once")
        if any(lam < 0 or not np.isfinite(lam) for lam in self.lambdas):
            raise AerobustError(f"lambdas must be finite and >= 0; got {list(self.lambdas)}")
        _refuse_collisions([float(lam) for lam in self.lambdas], lambda_text, "--lambdas",
                           "print as the same number in tables and file names; give distinct values")
        if self.trials < 1 or self.images < 1:
            raise AerobustError("--images and --trials must be at least 1")
        if not self.attacks:
            raise AerobustError("no attack to run: give --attacks at least one name (see aerobust list attacks)")
        for name in self.attacks:
            ATTACKS.get(name)
        if self.ensemble_restarts is not None and self.ensemble_restarts < 0:
            raise AerobustError(f"--ensemble-restarts must be >= 0, got {self.ensemble_restarts}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _refuse_collisions(values: list, key: Callable, what: str, why: str):
    seen: dict = {}
    for index, value in enumerate(values):
        first = seen.setdefault(key(value), index)
        if first != index:
            raise AerobustError(f"{what} {values[first]!r} and {value!r} {why}")


def _save_npz(path: Path, arrays: dict):
    # Through a file object: np.savez would append ".npz" to the temporary name.
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)


class Plan:
    """The fixed sample: which images, which targets per trial; saved so every run agrees."""

    def __init__(self, pool: ImageSet, config: AuditConfig, need_targets: bool):
        from .attacks import choose_targets

        if config.images > len(pool):
            raise AerobustError(f"--images {config.images} is larger than {config.data} ({config.split}), "
                                f"which has {len(pool)} images")
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(config.seed))
        self.index = order[: config.images]
        self.images = pool.images[self.index]
        self.labels = None if pool.labels is None else pool.labels[self.index]
        self.image_ids = pool.ids[self.index]
        self.target_index = None
        if need_targets:
            # Targets come from the whole split (pool) and belong to another class than the image.
            self.target_index = choose_targets(self.labels, config.trials, config.seed, pool_labels=pool.labels,
                                               image_ids=self.image_ids, pool_size=len(pool))
        self.pool = pool

    def targets(self) -> torch.Tensor | None:
        return None if self.target_index is None else self.pool.images[self.target_index]

    def digest(self) -> str:
        """Content hash of what is attacked: the images, their labels and the target images."""
        return tensor_digest({"images": self.images, "labels": self.labels, "targets": self.targets()})

    def as_dict(self) -> dict:
        return {
            "image_ids": self.image_ids.tolist(),
            "labels": None if self.labels is None else self.labels.tolist(),
            "target_ids": None if self.target_index is None else self.pool.ids[self.target_index].tolist(),
        }



def _create_attack(name: str, options: dict, ensemble_restarts: int | None):
    from .attacks.ensemble import EnsembleAttack

    try:
        if ensemble_restarts is not None:
            return EnsembleAttack(name, options, ensemble_restarts)
        return ATTACKS.create(name, **options)
    except (TypeError, ValueError) as exc:  # an option the attack does not take, or a value of the wrong type
        raise AerobustError(f"attack '{name}' rejects the options {options} ({exc}); see --attack-option") from None


class Audit:
    """Runs an :class:`AuditConfig` into ``out_dir``; ``run()`` returns the long-format results table."""

    def __init__(self, config: AuditConfig, out_dir: str | os.PathLike, *, device: str = "auto",
                 quiet: bool = False, download: bool = False, trust_unhashed: bool = False):
        config.validate()
        self.config = config
        self.out_dir = Path(out_dir)
        self.blocks_dir = self.out_dir / "blocks"
        # Under torchrun: join the process group; each rank gets its own GPU (aerobust/distributed.py).
        self.world, self.device = join_world(resolve_device(device))
        self.quiet = quiet
        self.download = download
        self.trust_unhashed = trust_unhashed
        self.attacks = {name: _create_attack(name, config.attack_options.get(name, {}), config.ensemble_restarts)
                        for name in config.attacks}
        from .metrics import AUTO_MSSSIM, resolve_msssim_settings

        if config.msssim != AUTO_MSSSIM:
            resolve_msssim_settings(config.msssim)  # an unknown preset fails before any work
        self.msssim = None  # chosen in run(), when the image shape is known

    # -- bookkeeping ---------------------------------------------------------------------------
    def _fingerprint(self, plan: Plan, models: dict[str, tuple[Autoencoder, dict]]) -> dict:
        """What the saved blocks depend on: the config, the content of every model and of the data, threads."""
        # Factory-built models add the digest of their code; registered ones keep the older fingerprint.
        code = {label: info["code_sha256"] for label, (_, info) in models.items() if info.get("code_sha256")}
        return json.loads(json.dumps({
            "config": self.config.to_dict(),
            "models": {label: info["weights_sha256"] for label, (_, info) in models.items()},
            **({"code": code} if code else {}),
            "data": plan.digest(),
            "compute": {"torch_threads": torch.get_num_threads(),
                        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()},
        }))

    def _claim_out_dir(self, fingerprint: dict):
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
        for label, digest in fingerprint["models"].items():
            if previous.get("models", {}).get(label) != digest:
                raise AerobustError(
                    f"model '{label}' changed since {self.out_dir} was audited (weights sha256 now {digest[:12]}, "
                    f"was {str(previous.get('models', {}).get(label))[:12]}); audit the new weights into a new --out")
        if previous.get("code") != fingerprint.get("code"):
            raise AerobustError(f"the code of a factory-built model changed since {self.out_dir} was audited "
                                "(the factory file's sha256 differs); audit the new model into a new --out")
        if previous.get("data") != fingerprint["data"]:
            raise AerobustError(f"the audited data ({self.config.data}) changed since {self.out_dir} was audited "
                                f"(content sha256 now {fingerprint['data'][:12]}, was {str(previous.get('data'))[:12]}); "
                                "audit it into a new --out")
        old, new = previous.get("compute") or {}, fingerprint["compute"]
        if old != new:
            raise AerobustError(
                f"{self.out_dir} was audited with {old.get('torch_threads')} torch thread(s), deterministic algorithms "
                f"{old.get('deterministic_algorithms')}; this run has {new['torch_threads']}, "
                f"{new['deterministic_algorithms']}, which changes results in the last bits: resume with "
                f"--threads {old.get('torch_threads')}, or use a new --out folder")

    def blocks(self) -> list[tuple[ModelSpec, str, float]]:
        return [(m, a, float(lam)) for m in self.config.models for a in self.config.attacks
                for lam in self.config.lambdas]

    # -- per-model preparation -----------------------------------------------------------------
    def load_model(self, spec: ModelSpec, pool: ImageSet) -> tuple[Autoencoder, dict]:
        # Seeded per model: a model built with random weights is the same whichever blocks are left.
        seed_everything(self.config.seed)
        model, info = resolve_model(spec.model, spec.checkpoint, device=self.device, arch_kwargs=spec.model_args,
                                    data_shape=pool.image_shape, trust_unhashed=self.trust_unhashed,
                                    trust_factory=spec.trust_factory, pixel_range=spec.pixel_range,
                                    posterior=spec.posterior)
        if tuple(pool.image_shape) != tuple(model.input_shape):
            shape = "x".join(map(str, pool.image_shape))
            wanted = "x".join(map(str, model.input_shape))
            raise AerobustError(
                f"{self.config.data} images are {shape} but model '{spec.label}' expects {wanted}; "
                "fit them with --pad N or --resize N")
        return model, {**info, "weights_sha256": module_digest(model)}

    def _clean_pass(self, model: Autoencoder, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model's clean behaviour on the audited images: codes, reconstructions, per-image metrics."""
        from .metrics import code_separation
        from .results import MetricInputs, result_metrics

        with torch.no_grad():
            code = model.encode(x)
            recon = model.decode(code)
            clean = {"code": code, "recon": recon, "code_separation": code_separation(code),
                     "code_non_finite": ~torch.isfinite(code.flatten(1)).all(dim=1),
                     "recon_non_finite": ~torch.isfinite(recon.flatten(1)).all(dim=1)}
            images = MetricInputs(model, self.msssim, x, recon, code, clean["code_separation"])
            # Keyed by column: a torchrun audit slices every entry to its image range (distributed.py).
            clean.update({metric.column: metric.compute(images) for metric in result_metrics() if metric.per_image})
            return clean

    def classifier_head(self, spec: ModelSpec, model: Autoencoder, pool: ImageSet):
        """Latent classifier of ``model``, trained once on the train split and kept for resumes."""
        from .classifiers import build_latent_head, train_latent_classifier

        path = self.out_dir / "classifiers" / f"{block_stem(spec.label, 'head', 0)}.pt"
        if path.is_file():
            head = build_latent_head(model.latent_dim, num_classes=pool.num_classes)
            head.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return head.to(self.device).eval()
        train = load_dataset(self.config.data, "train", pad_to=self.config.pad_to, resize=self.config.resize,
                             download=self.download)
        keep = min(len(train), self.config.classifier_images)
        head = train_latent_classifier(model, train.images[:keep], train.labels[:keep],
                                       epochs=self.config.classifier_epochs, seed=self.config.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda p: torch.save(head.state_dict(), p))
        return head.eval()

    # -- one block -------------------------------------------------------------------------------
    def run_block(self, spec: ModelSpec, model: Autoencoder, attack_name: str, lam: float, plan: Plan,
                   head, clean: dict) -> tuple[pd.DataFrame, dict, list]:
        from .attacks.sanity import non_finite_flag
        from .results import MetricInputs, result_metrics

        attack = self.attacks[attack_name]
        x = plan.images.to(self.device)
        targets = plan.targets()
        labels = plan.labels
        result = attack.sweep(
            model, x, [lam], self.config.trials, self.config.seed,
            targets=None if targets is None or not attack.needs_targets else targets.to(self.device),
            labels=None if labels is None else labels.to(self.device),
            classifier=head if attack.needs_classifier else None, image_ids=plan.image_ids)
        trials, n = self.config.trials, len(x)
        x_adv = result.x_adv[0].reshape(trials * n, *x.shape[1:])
        per_trial = lambda tensor: tensor.repeat(trials, *([1] * (tensor.dim() - 1))).float()  # noqa: E731
        use_targets = attack.needs_targets and targets is not None
        flat_targets = targets.reshape(trials * n, *x.shape[1:]).to(self.device) if use_targets else None
        with torch.no_grad():
            recon = per_trial(clean["recon"])
            code_adv = model.encode(x_adv)
            recon_adv = model.decode(code_adv)
            attack_loss = result.attack_loss[0].reshape(-1)
            rows = MetricInputs(
                model, self.msssim, x.repeat(trials, 1, 1, 1), recon, per_trial(clean["code"]),
                per_trial(clean["code_separation"]), x_adv, recon_adv, code_adv, attack_loss, flat_targets,
                None if labels is None else labels.to(self.device).repeat(trials), head)
            columns = {}
            for metric in result_metrics():
                values = per_trial(clean[metric.column]) if metric.per_image else metric.compute(rows)
                if values is not None:
                    columns[metric.column] = values
            non_finite_rows = {"codes": per_trial(clean["code_non_finite"]).bool(),
                               "adversarial codes": ~torch.isfinite(code_adv.flatten(1)).all(dim=1),
                               "reconstructions": per_trial(clean["recon_non_finite"]).bool(),
                               "adversarial reconstructions": ~torch.isfinite(recon_adv.flatten(1)).all(dim=1),
                               "attack loss": ~torch.isfinite(attack_loss)}
        frame = pd.DataFrame({k: v.detach().double().cpu().numpy() for k, v in columns.items()})
        trial_index = np.repeat(np.arange(trials), n)
        frame.insert(0, "model", spec.label)
        frame.insert(1, "attack", attack_name)
        frame.insert(2, "lambda", lam)
        frame.insert(3, "trial", trial_index)
        frame.insert(4, "image_id", plan.image_ids.repeat(trials).numpy())
        if use_targets:
            frame.insert(5, "target_id", plan.pool.ids[plan.target_index].reshape(-1).numpy())
        else:
            frame.insert(5, "target_id", -1)
        frame.insert(6, "label", -1 if labels is None else labels.repeat(trials).numpy())
        if use_targets and plan.pool.labels is not None:
            frame.insert(7, "target_label", plan.pool.labels[plan.target_index].reshape(-1).numpy())
        else:
            frame.insert(7, "target_label", -1)
        frame["radius"] = result.radii[0]  # lambda in absolute units of the attack's norm (see its budget)
        frame = frame.reindex(columns=RESULT_COLUMNS)
        if getattr(result, "member", None) is not None:
            from .attacks.ensemble import ENSEMBLE_MEMBERS

            frame["attack_member"] = np.asarray(ENSEMBLE_MEMBERS)[result.member[0].reshape(-1).cpu().numpy()]
        k = min(self.config.examples, n)
        blank = torch.full_like(x[:k], float("nan"))
        example = torch.stack([
            x[:k], recon[:k], x_adv[:k], recon_adv[:k],
            flat_targets[:k] if use_targets else blank], dim=1).detach().cpu().float().numpy()
        flags = list(result.flags)
        non_finite = non_finite_flag(non_finite_rows)
        if non_finite is not None:
            flags.append(non_finite)
        return frame, {"example": example}, flags + [{"config": {**result.config,
                                                                  "maximize": attack.objective.maximize}}]

    # -- the whole audit -------------------------------------------------------------------------
    def run(self) -> pd.DataFrame:
        from tqdm.auto import tqdm

        from .attacks.sanity import degenerate_model_flag

        cfg = self.config
        check_output_folder(self.out_dir, "audit")
        seed_everything(cfg.seed)
        pool = load_dataset(cfg.data, cfg.split, pad_to=cfg.pad_to, resize=cfg.resize, download=self.download)
        from .metrics import msssim_settings_for

        self.msssim = msssim_settings_for(cfg.msssim, pool.image_shape)
        plan = Plan(pool, cfg, any(a.needs_targets for a in self.attacks.values()))
        models = {spec.label: self.load_model(spec, pool) for spec in cfg.models}
        x = plan.images.to(self.device)
        clean, model_flags = {}, []
        for spec in cfg.models:
            clean[spec.label] = self._clean_pass(models[spec.label][0], x)
            degenerate = degenerate_model_flag(x, clean[spec.label]["recon"], clean[spec.label]["msssim_input_recon"])
            if degenerate is not None:
                model_flags.append({"model": spec.label, "attack": "*", "lambda": None, **degenerate})
        # Written once the data, the models and their clean pass went through: a refused audit leaves nothing.
        self._claim_out_dir(self._fingerprint(plan, models))
        atomic_write(self.out_dir / "plan.json", lambda p: p.write_text(json.dumps(plan.as_dict()) + "\n"))
        if self.world.distributed:  # torchrun: the ranks share the blocks, rank 0 merges (distributed.py)
            return run_sharded_audit(self, plan, pool, models, clean, model_flags)
        model_info = {}
        progress = tqdm(total=len(self.blocks()), desc="audit", unit="block", disable=self.quiet)
        for spec in cfg.models:
            model, model_info[spec.label] = models[spec.label]
            todo = [(a, lam) for (m, a, lam) in self.blocks()
                    if m is spec and not (self.blocks_dir / f"{block_stem(spec.label, a, lam)}.csv").is_file()]
            progress.update(len(cfg.attacks) * len(cfg.lambdas) - len(todo))
            if not todo:
                continue
            # With labels, every block also scores the latent classifier (the paper's Table 3).
            head = self.classifier_head(spec, model, pool) if plan.labels is not None else None
            for attack_name, lam in todo:
                progress.set_postfix_str(f"{spec.label} {attack_name} lambda={lambda_text(lam)}")
                frame, arrays, notes = self.run_block(spec, model, attack_name, lam, plan, head, clean[spec.label])
                self.save_block(self.blocks_dir, block_stem(spec.label, attack_name, lam), frame, arrays, notes)
                progress.update(1)
        progress.close()
        return self.finish(plan, model_info, model_flags)

    def save_block(self, directory: Path, stem: str, frame: pd.DataFrame, arrays: dict, notes: list):
        atomic_write(directory / f"{stem}.npz", lambda p: _save_npz(p, arrays))
        atomic_write(directory / f"{stem}.json", lambda p: p.write_text(json.dumps(notes, default=str) + "\n"))
        # The CSV is written last: its presence marks the block as done.
        atomic_write(directory / f"{stem}.csv", lambda p: frame.to_csv(p, index=False))

    def finish(self, plan: Plan, model_info: dict, model_flags: list[dict]) -> pd.DataFrame:
        frames, examples, flags, attack_configs, radii = [], {}, list(model_flags), {}, {}
        for spec, attack_name, lam in self.blocks():
            stem = block_stem(spec.label, attack_name, lam)
            frames.append(read_labelled_csv(self.blocks_dir / f"{stem}.csv"))
            with np.load(self.blocks_dir / f"{stem}.npz") as arrays:
                examples[f"{spec.label}::{attack_name}::{lambda_text(lam)}"] = arrays["example"]
            for note in json.loads((self.blocks_dir / f"{stem}.json").read_text()):
                if "config" in note:
                    attack_configs[attack_name] = note["config"]
                    # the absolute radius of every lambda (its unit is the attack's budget)
                    radii.setdefault(attack_name, {})[f"{lam:g}"] = note["config"].get("radii", [lam])[0]
                else:
                    flags.append({"model": spec.label, "attack": attack_name, "lambda": lam, **note})
        results = pd.concat(frames, ignore_index=True)
        atomic_write(self.out_dir / "results.csv", lambda p: results.to_csv(p, index=False))
        atomic_write(self.out_dir / "examples.npz", lambda p: _save_npz(p, examples))
        write_manifest(self.out_dir, command="audit", config=self.config.to_dict(), seed=self.config.seed,
                       device=self.device, metrics=self.msssim.as_dict(), attacks=attack_configs, radii=radii,
                       models=model_info, flags=flags, plan=plan.as_dict())
        from .records import write_records

        write_records(self.out_dir)
        return results


def run_audit(config: AuditConfig, out_dir, *, device: str = "auto", quiet: bool = False,
              report: bool = True, download: bool = False, trust_unhashed: bool = False) -> pd.DataFrame:
    """Run (or resume) an audit into ``out_dir`` and, by default, build its report there."""
    results = Audit(config, out_dir, device=device, quiet=quiet, download=download,
                    trust_unhashed=trust_unhashed).run()
    if report and is_main_process():  # under torchrun, rank 0 writes the report
        from .report import build_report

        build_report(out_dir)
    return results
