"""The audit runner: models x attacks x lambdas x trials on a fixed, saved plan of images and targets.

Results are written block by block (one block = model, attack, lambda) as they finish; a rerun with
the same configuration skips finished blocks, so a killed audit resumes where it stopped and ends
with the same table as an uninterrupted one. The folder is read and written only through
:class:`~aerobust.audit.store.AuditStore`; records and reports are built from it afterwards
(``aerobust.records.write_records``, ``aerobust.report.build_report``), never by the runner.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..adapter import Autoencoder
from ..checkpoints import resolve_model
from ..datasets import ImageSet, load_dataset
from ..distributed import join_world
from ..output_folder import check_output_folder
from ..results import block_stem, lambda_text, results_frame
from ..runtime import (adopt_recorded_threads, atomic_write, module_digest, resolve_device, seed_everything,
                       threads_chosen_automatically)
from ..errors import AerobustError
from .config import AuditConfig, ModelSpec
from .plan import Plan
from .store import FINGERPRINT_FILE, AuditStore


def _without_class_paths(settings):
    """Attack settings without their "class" entries: a plugin file's module gets a per-process name, and the
    attack's registered name already says which attack ran."""
    if isinstance(settings, dict):
        return {key: _without_class_paths(value) for key, value in settings.items() if key != "class"}
    return settings


class Audit:
    """Runs an :class:`AuditConfig` into ``out_dir``; ``run()`` returns the long-format results table."""

    def __init__(self, config: AuditConfig, out_dir: str | os.PathLike, *, device: str = "auto",
                 quiet: bool = False, download: bool = False, trust_unhashed: bool = False):
        config.validate()
        self.config = config
        self.out_dir = Path(out_dir)
        self.store = AuditStore(self.out_dir)
        # Under torchrun: join the process group; each rank gets its own GPU (aerobust/distributed.py).
        self.world, self.device = join_world(resolve_device(device))
        self.quiet = quiet
        self.download = download
        self.trust_unhashed = trust_unhashed
        self.attacks = {name: config.create_attack(name) for name in config.attacks}
        for attack in self.attacks.values():  # the audit's models stay fixed: one unbounded check per model
            attack.unbounded_check_memo = {}
        from ..metrics import AUTO_MSSSIM, resolve_msssim_settings

        if config.msssim != AUTO_MSSSIM:
            resolve_msssim_settings(config.msssim)  # an unknown preset fails before any work
        self.msssim = None  # chosen in run(), when the image shape is known

    # -- bookkeeping ---------------------------------------------------------------------------
    def _fingerprint(self, plan: Plan, models: dict[str, tuple[Autoencoder, dict]]) -> dict:
        """What the saved blocks depend on: the config, every attack's resolved settings (defaults included,
        so a new default is not mixed with blocks of the old one), the content of every model and of the
        data, threads."""
        # Factory-built models add the digest of their code; registered ones keep the older fingerprint.
        code = {label: info["code_sha256"] for label, (_, info) in models.items() if info.get("code_sha256")}
        return json.loads(json.dumps({
            "config": self.config.to_dict(),
            "attacks": {name: _without_class_paths(attack.config()) for name, attack in self.attacks.items()},
            "models": {label: info["weights_sha256"] for label, (_, info) in models.items()},
            **({"code": code} if code else {}),
            "data": plan.digest(),
            "compute": {"torch_threads": torch.get_num_threads(),
                        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()},
        }, default=str))

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
        from ..metrics import code_separation
        from ..results import MetricInputs, result_metrics

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
        from ..classifiers import build_latent_head, train_latent_classifier

        path = self.store.head_path(spec.label)
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
        from ..attacks.sanity import non_finite_flag
        from ..results import MetricInputs, result_metrics

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
        recon = per_trial(clean["recon"])
        attack_loss = result.attack_loss[0].reshape(-1)
        inputs = MetricInputs(
            model, self.msssim, x.repeat(trials, 1, 1, 1), recon, per_trial(clean["code"]),
            per_trial(clean["code_separation"]), x_adv, None, None, attack_loss, flat_targets,
            None if labels is None else labels.to(self.device).repeat(trials), head)
        # The model runs on the attack's groups of images, fixed by the configuration, so a torchrun image
        # range measures its rows exactly as one process does.
        group = attack.images_per_chunk(trials, x.shape[1:])
        rows_of = torch.arange(trials * n, device=self.device).view(trials, n)
        parts, order = [], []
        with torch.no_grad():
            for start in range(0, n, group):
                rows = rows_of[:, start:start + group].reshape(-1)
                part = inputs.rows(rows)
                part.code_adv = model.encode(part.x_adv)
                part.recon_adv = model.decode(part.code_adv)
                measured = {metric.column: metric.compute(part) for metric in result_metrics()
                            if not metric.per_image}
                parts.append({"code_adv": part.code_adv, "recon_adv": part.recon_adv,
                              **{k: v for k, v in measured.items() if v is not None}})
                order.append(rows)
            inverse = torch.empty_like(torch.cat(order))
            inverse[torch.cat(order)] = torch.arange(len(inverse), device=self.device)
            joined = {key: torch.cat([part[key] for part in parts])[inverse] for key in parts[0]}
            code_adv, recon_adv = joined.pop("code_adv"), joined.pop("recon_adv")
            columns = {}
            for metric in result_metrics():
                values = per_trial(clean[metric.column]) if metric.per_image else joined.get(metric.column)
                if values is not None:
                    columns[metric.column] = values
            non_finite_rows = {"codes": per_trial(clean["code_non_finite"]).bool(),
                               "adversarial codes": ~torch.isfinite(code_adv.flatten(1)).all(dim=1),
                               "reconstructions": per_trial(clean["recon_non_finite"]).bool(),
                               "adversarial reconstructions": ~torch.isfinite(recon_adv.flatten(1)).all(dim=1),
                               "attack loss": ~torch.isfinite(attack_loss)}
        use_target_labels = use_targets and plan.pool.labels is not None
        frame = results_frame(
            {"model": spec.label, "attack": attack_name, "lambda": lam,
             # lambda in absolute units of the attack's norm (see its budget)
             "radius": result.radii[0],
             "trial": np.repeat(np.arange(trials), n),
             "image_id": plan.image_ids.repeat(trials).numpy(),
             "target_id": plan.pool.ids[plan.target_index].reshape(-1).numpy() if use_targets else -1,
             "label": -1 if labels is None else labels.repeat(trials).numpy(),
             "target_label": plan.pool.labels[plan.target_index].reshape(-1).numpy() if use_target_labels else -1},
            {k: v.detach().double().cpu().numpy() for k, v in columns.items()})
        if getattr(result, "member", None) is not None:
            from ..attacks.ensemble import ENSEMBLE_MEMBERS

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

        from ..attacks.sanity import degenerate_model_flag

        cfg = self.config
        check_output_folder(self.out_dir, "audit")
        # A resume computes with the thread count the audit started with, when this run's own was automatic.
        recorded = self.store.recorded_threads()
        if recorded is not None and recorded != torch.get_num_threads() and threads_chosen_automatically():
            adopt_recorded_threads(recorded, str(self.out_dir / FINGERPRINT_FILE))
        seed_everything(cfg.seed)
        pool = load_dataset(cfg.data, cfg.split, pad_to=cfg.pad_to, resize=cfg.resize, download=self.download)
        from ..metrics import msssim_settings_for

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
        self.store.claim(self._fingerprint(plan, models), cfg.data)
        self.store.write_plan(plan.as_dict())
        if self.world.distributed:  # torchrun: the ranks share the blocks, rank 0 merges (sharded.py)
            from .sharded import run_sharded_audit

            return run_sharded_audit(self, plan, pool, models, clean, model_flags)
        model_info = {}
        progress = tqdm(total=len(self.config.blocks()), desc="audit", unit="block", disable=self.quiet)
        for spec in cfg.models:
            model, model_info[spec.label] = models[spec.label]
            todo = [(a, lam) for (m, a, lam) in self.config.blocks()
                    if m is spec and not self.store.block_done(block_stem(spec.label, a, lam))]
            progress.update(len(cfg.attacks) * len(cfg.lambdas) - len(todo))
            if not todo:
                continue
            # With labels, every block also scores the latent classifier (the paper's Table 3).
            head = self.classifier_head(spec, model, pool) if plan.labels is not None else None
            for attack_name, lam in todo:
                progress.set_postfix_str(f"{spec.label} {attack_name} lambda={lambda_text(lam)}")
                frame, arrays, notes = self.run_block(spec, model, attack_name, lam, plan, head, clean[spec.label])
                self.store.save_block(block_stem(spec.label, attack_name, lam), frame, arrays, notes)
                progress.update(1)
        progress.close()
        return self.finish(plan, model_info, model_flags)

    def finish(self, plan: Plan, model_info: dict, model_flags: list[dict]) -> pd.DataFrame:
        frames, examples, flags, attack_configs, radii = [], {}, list(model_flags), {}, {}
        for spec, attack_name, lam in self.config.blocks():
            stem = block_stem(spec.label, attack_name, lam)
            frame, example, notes = self.store.read_block(stem)
            frames.append(frame)
            examples[f"{spec.label}::{attack_name}::{lambda_text(lam)}"] = example
            for note in notes:
                if "config" in note:
                    attack_configs[attack_name] = note["config"]
                    # the absolute radius of every lambda (its unit is the attack's budget)
                    radii.setdefault(attack_name, {})[f"{lam:g}"] = note["config"].get("radii", [lam])[0]
                else:
                    flags.append({"model": spec.label, "attack": attack_name, "lambda": lam, **note})
        results = pd.concat(frames, ignore_index=True)
        self.store.write_results(results, examples)
        self.store.write_manifest(config=self.config.to_dict(), seed=self.config.seed, device=self.device,
                                  metrics=self.msssim.as_dict(), attacks=attack_configs, radii=radii,
                                  models=model_info, flags=flags, plan=plan.as_dict())
        return results


def run_audit(config: AuditConfig, out_dir, *, device: str = "auto", quiet: bool = False, download: bool = False,
              trust_unhashed: bool = False) -> pd.DataFrame:
    """Run (or resume) an audit into ``out_dir``; returns the long-format results table.

    Its records and report are views of the folder, built afterwards: ``aerobust.records.write_records``
    and ``aerobust.report.build_report`` (``aerobust audit`` does both).
    """
    return Audit(config, out_dir, device=device, quiet=quiet, download=download,
                 trust_unhashed=trust_unhashed).run()
