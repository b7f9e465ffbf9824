"""The attack engine on the small MNIST autoencoder: contract, monotonicity, determinism, flags."""
import sys

import pytest
import torch

from aerobust.adapter import wrap
from aerobust.attacks import Attack, OptimizationResult, SweepResult, choose_targets
from aerobust.errors import AerobustError, ShapeError, ThreatViolation
from aerobust.attacks import require_torchattacks
from aerobust.classifiers import AutoencoderClassifier, latent_codes, train_latent_classifier
from aerobust.registry import ATTACKS

N_IMAGES = 8
FAST = dict(steps=40, restarts=1)


@pytest.fixture(scope="module")
def batch(mnist_test):
    x, y = mnist_test.images[:N_IMAGES], mnist_test.labels[:N_IMAGES]
    index = choose_targets(y, 2, seed=0, pool_labels=mnist_test.labels)
    return x, y, mnist_test.images[index], index


def strength(result: SweepResult) -> torch.Tensor:
    return result.attack_loss if result.maximize else -result.attack_loss


def test_registry_contract():
    assert {"latent", "max-damage", "latent-classifier"} <= set(ATTACKS.list())
    latent, damage, classifier = (ATTACKS.create(n) for n in ("latent", "max-damage", "latent-classifier"))
    assert latent.needs_targets and not latent.needs_classifier
    assert not damage.needs_targets and not damage.needs_classifier
    assert classifier.needs_classifier and not classifier.needs_targets
    attack = ATTACKS.create("max-damage", optimizer="fgsm", norm="linf", restarts=2)
    config = attack.config()
    assert (config["optimizer"], config["norm"], config["random_start"], config["restarts"]) == ("fgsm", "linf", True, 2)
    # FGSM takes one step: the PGD and L-BFGS-B settings are not its own, so they are not recorded...
    assert not {"steps", "step_size", "schedule", "early_stop", "lbfgs_memory"} & set(config)
    # ...and not taken: one line names the optimizer and the options it has.
    with pytest.raises(AerobustError, match=r"^optimizer 'fgsm' does not take step_size, steps; its options are "
                                            r"random_start$"):
        ATTACKS.create("max-damage", optimizer="fgsm", steps=7, step_size=0.1)
    pgd = ATTACKS.create("max-damage", steps=7).config()
    assert pgd["steps"] == 7 and "lbfgs_memory" not in pgd
    with pytest.raises(AerobustError, match="optimizer"):
        ATTACKS.create("latent", optimizer="adam")


@pytest.mark.parametrize("optimizer, evaluations", [("pgd", FAST["steps"]), ("pqn", FAST["steps"] + 1)])
def test_lambda_zero_returns_x_and_results_stay_in_the_threat(small_ae, batch, optimizer, evaluations):
    x, _, targets, _ = batch
    result = ATTACKS.create("latent", optimizer=optimizer, **FAST).sweep(small_ae, x, [0.0, 1.0, 3.0], 2, 0,
                                                                         targets=targets)
    assert result.x_adv.shape == (3, 2, N_IMAGES, *x.shape[1:])
    assert result.attack_loss.shape == result.delta_norm.shape == (3, 2, N_IMAGES)
    assert result.history.shape == (3, 2, N_IMAGES, evaluations)  # PQN also records its start
    assert torch.equal(result.x_adv[0], x.expand(2, *x.shape))
    assert bool((result.delta_norm[0] == 0).all())
    for i, lam in enumerate(result.lambdas):
        assert float(result.delta_norm[i].max()) <= lam * (1 + 1e-5)
    assert float(result.x_adv.min()) >= 0 and float(result.x_adv.max()) <= 1
    # The reported loss is the objective recomputed on the returned images.
    codes = small_ae.encode(result.x_adv[1, 0])
    expected = (codes - small_ae.encode(targets[0])).norm(dim=1)
    torch.testing.assert_close(result.attack_loss[1, 0], expected.detach(), rtol=1e-5, atol=1e-5)
    assert result.config["lambdas"] == [0.0, 1.0, 3.0] and result.config["steps"] == FAST["steps"]


def test_latent_distance_falls_and_damage_rises_with_lambda(small_ae, batch):
    x, _, targets, _ = batch
    lambdas = [0.0, 0.5, 1.0, 2.0, 4.0]
    latent = ATTACKS.create("latent", steps=60, restarts=2).sweep(small_ae, x, lambdas, 2, 0, targets=targets)
    damage = ATTACKS.create("max-damage", steps=60, restarts=2).sweep(small_ae, x, lambdas, 2, 0)
    distance = latent.attack_loss.mean(dim=(1, 2))
    harm = damage.attack_loss.mean(dim=(1, 2))
    assert bool((distance[1:] < distance[:-1]).all()), distance
    assert bool((harm[1:] > harm[:-1]).all()), harm
    # Per sample too: the worst case over nested balls never weakens.
    assert bool((latent.attack_loss[1:] <= latent.attack_loss[:-1] * 1.01).all())
    assert bool((damage.attack_loss[1:] >= damage.attack_loss[:-1] * 0.99).all())
    # A sound attack on a smooth model raises no sanity flag (including the unbounded-target check).
    assert latent.flags == [] and damage.flags == []
    # The clean value is the lambda = 0 row.
    torch.testing.assert_close(latent.clean_loss, latent.attack_loss[0])


@pytest.mark.parametrize("name", ["latent", "max-damage"])
def test_pgd_is_as_strong_as_the_legacy_lbfgs_protocol(small_ae, batch, name):
    x, _, targets, _ = batch
    kwargs = dict(targets=targets[:1, :5]) if name == "latent" else {}
    pgd = ATTACKS.create(name, steps=100, restarts=1).sweep(small_ae, x[:5], [1.0], 1, 0, **kwargs)
    legacy = ATTACKS.create(name, optimizer="lbfgs-legacy", restarts=1, sanity_checks=False).sweep(
        small_ae, x[:5], [1.0], 1, 0, **kwargs)
    assert legacy.config["lbfgs_memory"] == 25 and legacy.config["lbfgs_factr"] == 10
    assert float(legacy.delta_norm.max()) <= 1 + 1e-5
    pgd_median, legacy_median = float(pgd.attack_loss.median()), float(legacy.attack_loss.median())
    if name == "latent":
        assert pgd_median <= 1.02 * legacy_median
    else:
        assert pgd_median >= legacy_median / 1.02
    # Both beat doing nothing.
    for result in (pgd, legacy):
        gain = result.attack_loss[0] - result.clean_loss
        assert bool(((gain if result.maximize else -gain) > 0).all())


def test_fgsm_and_linf_options(small_ae, batch):
    x = batch[0]
    fgsm = ATTACKS.create("max-damage", optimizer="fgsm", restarts=1).sweep(small_ae, x, [1.0], 1, 0)
    pgd = ATTACKS.create("max-damage", **FAST).sweep(small_ae, x, [1.0], 1, 0)
    assert fgsm.history.shape[-1] == 2 and fgsm.flags == []
    # Without a random start, eq. 13 sits at its minimum (zero gradient): flagged, not hidden.
    stuck = ATTACKS.create("max-damage", optimizer="fgsm", restarts=1, random_start=False).sweep(small_ae, x, [1.0], 1, 0)
    assert "zero-gradient" in {flag["flag"] for flag in stuck.flags}
    assert float(fgsm.attack_loss.mean()) > 0 and float(pgd.attack_loss.mean()) >= float(fgsm.attack_loss.mean())
    linf = ATTACKS.create("max-damage", norm="linf", **FAST).sweep(small_ae, x, [0.05], 1, 0)
    step = (linf.x_adv[0, 0] - x).flatten(1).abs().amax(dim=1)
    assert float(step.max()) <= 0.05 * (1 + 1e-5) and float(linf.attack_loss.min()) > 0


# A row's last bits can depend on its batch's size (the matrix kernels a CPU library picks by shape): PGD's
# fixed steps keep that at float noise; pqn's line-search tests can flip on it (measured on the device
# machine's CPU, torch 2.11: iterates 2e-4 apart), so its results agree to 1e-3.
@pytest.mark.parametrize("optimizer, tolerance", [("pgd", 1e-5), ("pqn", 1e-3)])
def test_sweep_is_deterministic_and_independent_of_the_batch(small_ae, batch, optimizer, tolerance):
    x, _, targets, _ = batch
    attack = ATTACKS.create("latent", optimizer=optimizer, steps=15, restarts=2)
    first = attack.sweep(small_ae, x, [1.0, 3.0], 2, 5, targets=targets)
    second = attack.sweep(small_ae, x, [1.0, 3.0], 2, 5, targets=targets)
    assert torch.equal(first.x_adv, second.x_adv) and torch.equal(first.attack_loss, second.attack_loss)
    # Same (seed, lambda, trial, image id) in a different company: same result.
    keep = torch.tensor([5, 2])
    alone = attack.sweep(small_ae, x[keep], [3.0], 2, 5, targets=targets[:, keep], image_ids=keep)
    torch.testing.assert_close(alone.x_adv[0], first.x_adv[1][:, keep], rtol=0, atol=tolerance)
    torch.testing.assert_close(alone.attack_loss[0], first.attack_loss[1][:, keep], rtol=tolerance, atol=tolerance)
    other_seed = attack.sweep(small_ae, x[keep], [3.0], 2, 6, targets=targets[:, keep], image_ids=keep)
    assert not torch.equal(other_seed.x_adv, alone.x_adv)


def test_early_stop_retires_samples_without_losing_strength(small_ae, batch):
    x = batch[0]
    full = ATTACKS.create("max-damage", optimizer="pgd", steps=60, restarts=1).sweep(small_ae, x, [1.0], 1, 0)
    early = ATTACKS.create("max-damage", optimizer="pgd", steps=60, restarts=1, early_stop=5).sweep(
        small_ae, x, [1.0], 1, 0)
    assert bool(torch.isnan(early.history).any())  # some samples stopped before the last step
    assert float(early.attack_loss.median()) >= 0.95 * float(full.attack_loss.median())


def test_choose_targets_picks_other_classes_reproducibly(mnist_test):
    labels, pool = mnist_test.labels[:20], mnist_test.labels
    index = choose_targets(labels, 3, seed=1, pool_labels=pool)
    assert index.shape == (3, 20)
    assert bool((pool[index] != labels).all())
    assert torch.equal(index, choose_targets(labels, 3, seed=1, pool_labels=pool))
    subset = torch.tensor([3, 7])
    torch.testing.assert_close(choose_targets(labels[subset], 3, 1, pool, image_ids=subset), index[:, subset])
    unlabeled = choose_targets(None, 4, seed=0, image_ids=torch.arange(5))
    assert bool((unlabeled != torch.arange(5)).all()) and int(unlabeled.max()) < 5
    # From a larger pool that holds the attacked images (the audit's split), never the image itself; the
    # draws that did not hit the image are the ones made without the rule.
    ids, positions = torch.arange(40), torch.randperm(40, generator=torch.Generator().manual_seed(3))
    anywhere = choose_targets(None, 6, seed=2, image_ids=ids, pool_size=40)
    elsewhere = choose_targets(None, 6, seed=2, image_ids=ids, pool_size=40, pool_positions=positions)
    assert bool((elsewhere != positions).all()) and int(elsewhere.max()) < 40
    hit = anywhere == positions
    assert bool(hit.any()) and torch.equal(elsewhere[~hit], anywhere[~hit])
    assert len(set(index.flatten().tolist())) > 10


def test_user_errors(small_ae, batch):
    x, _, targets, _ = batch
    attack = ATTACKS.create("latent", **FAST)
    with pytest.raises(AerobustError, match="lambda"):
        attack.sweep(small_ae, x, [-1.0], 1, 0, targets=targets[:1])
    with pytest.raises(AerobustError, match="target"):
        attack.sweep(small_ae, x, [1.0], 1, 0)
    with pytest.raises(ShapeError):
        attack.sweep(small_ae, x, [1.0], 2, 0, targets=targets[:1])
    with pytest.raises(AerobustError, match="NaN"):
        attack.sweep(small_ae, x * float("nan"), [1.0], 1, 0, targets=targets[:1])
    with pytest.raises(AerobustError, match="classifier"):
        ATTACKS.create("latent-classifier").sweep(small_ae, x, [1.0], 1, 0, labels=batch[1])


class _Reckless(Attack):
    """Returns a perturbation twice as long as allowed (inside the box): the base must refuse it."""

    name = "reckless"
    objective_name = "max-damage"

    def optimize(self, problem):
        room = 1 - problem.x
        scale = 2 * problem.threat.radii(problem.x) / room.flatten(1).norm(dim=1)
        return OptimizationResult(problem.x + room * scale.view(-1, 1, 1, 1))


class _Idle(Attack):
    """Never moves (a broken optimizer): the sanity checks must notice."""

    name = "idle"
    objective_name = "latent"
    needs_targets = True

    def optimize(self, problem):
        return OptimizationResult(problem.x.clone())


class _Shrinking(Attack):
    """Strong at small lambda, idle at large lambda: the worst case is then not monotone."""

    name = "shrinking"
    objective_name = "max-damage"

    def optimize(self, problem):
        from aerobust.attacks.optimizers import pgd

        result = pgd(self.settings, problem)
        large = problem.threat.radii(problem.x) > 1.5
        result.x_adv[large] = problem.x[large]
        return result


def test_threat_violations_raise(small_ae, batch):
    with pytest.raises(ThreatViolation):
        _Reckless().sweep(small_ae, batch[0], [1.0], 1, 0)


def test_sanity_flags_catch_broken_attacks(small_ae, batch):
    x, _, targets, _ = batch
    idle = _Idle(sanity_checks=True).sweep(small_ae, x, [1.0], 2, 0, targets=targets)
    names = {flag["flag"] for flag in idle.flags}
    assert "unbounded-target-missed" in names
    assert all(set(flag) >= {"flag", "message"} for flag in idle.flags)
    shrinking = _Shrinking(steps=20, restarts=1).sweep(small_ae, x, [1.0, 2.0], 1, 0)
    names = {flag["flag"] for flag in shrinking.flags}
    assert {"non-monotone-lambda", "weaker-than-noise"} <= names
    # A model whose code ignores the input has zero gradients everywhere.
    flat = wrap((lambda images: images.flatten(1)[:, :4] * 0, lambda z: z.new_zeros(len(z), 1, 32, 32)),
                input_shape=(1, 32, 32), device="cpu")
    masked = ATTACKS.create("max-damage", steps=3, restarts=1).sweep(flat, x, [1.0], 1, 0)
    assert "zero-gradient" in {flag["flag"] for flag in masked.flags}


def latent_classifier_accuracy(model, head, images, labels, *, lam, trials=1, seed=0, pool_images=None,
                               pool_labels=None, **attack_options) -> dict:
    """The head's clean accuracy and its accuracy on the codes after the latent attack at ``lam``."""
    pool_images = images if pool_images is None else pool_images
    pool_labels = labels if pool_labels is None else pool_labels
    index = choose_targets(labels, trials, seed, pool_labels)
    result = ATTACKS.create("latent", **attack_options).sweep(model, images, [lam], trials, seed,
                                                              targets=pool_images[index])

    def accuracy(batch: torch.Tensor) -> float:
        predictions = head(latent_codes(model, batch)).argmax(dim=1)
        return float((predictions == labels.repeat(len(batch) // len(labels))).float().mean())

    with torch.no_grad():
        return {"clean_accuracy": accuracy(images), "attacked_accuracy": accuracy(result.x_adv[0].flatten(0, 1))}


@pytest.fixture(scope="module")
def head(small_ae, mnist_train_small):
    return train_latent_classifier(small_ae, mnist_train_small.images, mnist_train_small.labels, epochs=15, seed=0)


def test_latent_classifier_trains_and_suffers_under_the_latent_attack(small_ae, head, mnist_test):
    images, labels = mnist_test.images[:60], mnist_test.labels[:60]
    network = AutoencoderClassifier(small_ae, head)
    torch.testing.assert_close(network(images), head(latent_codes(small_ae, images)))
    report = latent_classifier_accuracy(small_ae, head, images, labels, lam=2.0, trials=1, seed=0,
                                        pool_images=mnist_test.images, pool_labels=mnist_test.labels,
                                        steps=40, restarts=1)
    clean = float((network(images).argmax(1) == labels).float().mean())
    assert report["clean_accuracy"] == pytest.approx(clean)
    assert report["clean_accuracy"] > 0.7
    assert report["attacked_accuracy"] < report["clean_accuracy"] - 0.1
    none = latent_classifier_accuracy(small_ae, head, images, labels, lam=0.0, steps=5, restarts=1)
    assert none["attacked_accuracy"] == pytest.approx(none["clean_accuracy"])


def test_latent_classifier_attack_untargeted_and_targeted(small_ae, head, batch):
    x, y, _, _ = batch
    untargeted = ATTACKS.create("latent-classifier", **FAST).sweep(
        small_ae, x, [0.0, 2.0], 1, 0, labels=y, classifier=head)
    assert bool((untargeted.attack_loss[1] > untargeted.attack_loss[0]).all())
    targeted = ATTACKS.create("latent-classifier", targeted=True, **FAST).sweep(
        small_ae, x, [0.0, 2.0], 1, 0, labels=y, classifier=head)
    assert bool((targeted.target_classes != y).all())
    assert bool((targeted.attack_loss[1] < targeted.attack_loss[0]).all())
    assert all(p.requires_grad for p in head.parameters())  # frozen only during the attack


def test_missing_torchattacks_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchattacks", None)
    with pytest.raises(AerobustError, match="pip install --no-deps torchattacks"):
        require_torchattacks()


def test_budget_units_give_the_same_attack_as_the_absolute_radius(small_ae, batch):
    x = batch[0]  # 1 x 32 x 32: an RMS budget of 0.03 is an L2 radius of 0.03 * 32
    rms = ATTACKS.create("max-damage", budget="rms", **FAST).sweep(small_ae, x, [0.03], 1, 0)
    absolute = ATTACKS.create("max-damage", **FAST).sweep(small_ae, x, [0.03 * 32], 1, 0)
    assert rms.radii == pytest.approx([0.96]) and absolute.radii == [0.96]
    assert rms.lambdas == [0.03] and rms.config["budget"] == "rms" and rms.config["norm"] == "l2"
    torch.testing.assert_close(rms.x_adv, absolute.x_adv, rtol=0, atol=1e-6)
    assert float((rms.x_adv[0, 0] - x).flatten(1).norm(dim=1).max()) <= 0.96 * (1 + 1e-5)
    levels = ATTACKS.create("max-damage", budget="linf-255", **FAST).sweep(small_ae, x, [8], 1, 0)
    pixels = ATTACKS.create("max-damage", norm="linf", **FAST).sweep(small_ae, x, [8 / 255], 1, 0)
    assert levels.config["norm"] == "linf" and levels.radii == pytest.approx([8 / 255])
    torch.testing.assert_close(levels.x_adv, pixels.x_adv, rtol=0, atol=1e-6)
    assert float((levels.x_adv[0, 0] - x).abs().amax()) <= 8 / 255 * (1 + 1e-5)
    with pytest.raises(AerobustError, match="measured in linf, not norm 'l2'"):
        ATTACKS.create("max-damage", budget="linf-255", norm="l2")
    with pytest.raises(AerobustError, match="unknown budget unit 'pixels'"):
        ATTACKS.create("max-damage", budget="pixels")


# (pixel atol, loss rtol). The quasi-Newton step divides by curvatures, so the float32 rounding of
# differently sized matmuls grows faster than in PGD; losses still agree to 1e-6.
CHUNKING_TOLERANCES = {"pgd": (1e-6, 1e-6), "pqn": (1e-3, 1e-6)}


@pytest.mark.parametrize("optimizer", sorted(CHUNKING_TOLERANCES))
def test_forced_small_chunks_give_the_results_of_one_chunk(small_ae, batch, optimizer):
    x, _, targets, _ = batch
    options = dict(optimizer=optimizer, steps=6, restarts=2)
    one = ATTACKS.create("latent", batch_size=10_000, **options).sweep(small_ae, x, [1.0, 2.0], 2, 3, targets=targets)
    small = ATTACKS.create("latent", batch_size=3, **options).sweep(small_ae, x, [1.0, 2.0], 2, 3, targets=targets)
    assert one.config["chunk_size"] == 10_000 and small.config["chunk_size"] == 3
    pixels, losses = CHUNKING_TOLERANCES[optimizer]
    torch.testing.assert_close(small.x_adv, one.x_adv, rtol=0, atol=pixels)
    # losses of size ~10: float32 sums over differently sized matmuls agree to a relative 1e-6
    torch.testing.assert_close(small.attack_loss, one.attack_loss, rtol=losses, atol=0)
    if optimizer == "pgd":
        assert torch.equal(small.restart, one.restart)
    # pqn: two restarts can end at the same point (to the pixel tolerance above) and the same loss to
    # float32 rounding, and then which of them is kept may differ; the kept point and loss do not.


# Few steps: float32 differences between batch shapes grow with every step.
FEW_STEPS = dict(steps=6, restarts=1)


def test_chunks_follow_the_configuration_and_back_off_on_out_of_memory(small_ae, batch):
    from aerobust.attacks import chunking

    # "auto": 2**21 image elements per call, whatever the memory: 2048 samples of 32x32, 8 of 3x256x256.
    assert chunking.samples_per_call("auto", (1, 32, 32)) == 2048
    assert chunking.samples_per_call("auto", (3, 256, 256)) == 8
    assert chunking.images_per_chunk(100, 2 * 2, (1, 32, 32)) == 16  # 25 images' rows fit: a power of two
    assert chunking.images_per_chunk(3, 2 * 2, (1, 32, 32)) == 1  # one image's rows, cut into runs of 3
    lam_idx, img_idx = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    chunks = chunking.sweep_chunks(torch.arange(8), lam_idx, img_idx, 2, 1, (1, 4, 4))
    assert [c.tolist() for c in chunks] == [[0, 1], [2, 3], [4, 5], [6, 7]]  # never across lambdas

    x = batch[0][:4]
    reference = ATTACKS.create("max-damage", batch_size=10_000, **FEW_STEPS).sweep(small_ae, x, [1.0], 2, 0)
    # With 2 images per chunk, the images 2:4 alone are attacked exactly as inside the whole sweep.
    attack = ATTACKS.create("max-damage", batch_size=4, **FEW_STEPS)
    whole = attack.sweep(small_ae, x, [1.0, 2.0], 2, 0, image_ids=torch.arange(4))
    part = attack.sweep(small_ae, x[2:], [1.0, 2.0], 2, 0, image_ids=torch.arange(2, 4))
    assert whole.config["images_per_chunk"] == 2 and whole.config["chunk_size"] == 4
    assert torch.equal(part.x_adv, whole.x_adv[:, :, 2:]) and torch.equal(part.attack_loss, whole.attack_loss[:, :, 2:])

    # A model that runs out of memory above 3 samples: the chunk is halved until it fits.
    class Limited(torch.nn.Module):
        input_shape = small_ae.input_shape

        def __init__(self):
            super().__init__()
            self.inner = small_ae

        def encode(self, images):
            if images.shape[0] > 3:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return self.inner.encode(images)

        def decode(self, codes):
            return self.inner.decode(codes)

    limited = wrap(Limited(), device="cpu")
    # (sanity checks off: their noise baseline evaluates all samples at once)
    backed_off = ATTACKS.create("max-damage", batch_size=16, sanity_checks=False, **FEW_STEPS).sweep(limited, x, [1.0], 2, 0)
    assert backed_off.config["chunk_size"] == 2 and backed_off.config["chunk_halvings"] == 2  # 8 -> 4 -> 2 rows
    torch.testing.assert_close(backed_off.x_adv, reference.x_adv, rtol=0, atol=1e-6)


def test_the_sync_free_step_used_on_cuda_gives_the_cpu_results(small_ae, batch, monkeypatch):
    from aerobust import threat

    x, _, targets, _ = batch
    attack = ATTACKS.create("latent", optimizer="pgd", **FEW_STEPS)  # pqn's own test is in test_quasi_newton
    usual = attack.sweep(small_ae, x, [1.0, 3.0], 1, 0, targets=targets[:1])
    monkeypatch.setattr(threat, "sync_free", lambda device: True)
    queued = attack.sweep(small_ae, x, [1.0, 3.0], 1, 0, targets=targets[:1])
    torch.testing.assert_close(queued.x_adv, usual.x_adv, rtol=0, atol=1e-5)
    torch.testing.assert_close(queued.attack_loss, usual.attack_loss, rtol=1e-5, atol=0)


def test_compiled_objective_gives_the_eager_results_and_falls_back(small_ae, batch, monkeypatch):
    x = batch[0][:4]
    eager = ATTACKS.create("max-damage", **FEW_STEPS).sweep(small_ae, x, [1.0], 1, 0)
    # "eager" is torch.compile's tracing without code generation: fast enough for a test
    traced = ATTACKS.create("max-damage", compile="eager", **FEW_STEPS).sweep(small_ae, x, [1.0], 1, 0)
    assert traced.config["compile"] == "eager" and traced.config["compile_fallback"] is None
    torch.testing.assert_close(traced.x_adv, eager.x_adv, rtol=0, atol=1e-6)
    with pytest.raises(AerobustError, match="compile: Invalid backend"):
        ATTACKS.create("max-damage", compile="no-such-backend")

    def broken_compile(function, backend):
        def fails(*args):
            raise RuntimeError("no C++ compiler found\nmore")
        return fails

    monkeypatch.setattr(torch, "compile", broken_compile)
    fallback = ATTACKS.create("max-damage", compile="inductor", **FEW_STEPS).sweep(small_ae, x, [1.0], 1, 0)
    assert fallback.config["compile_fallback"] == "RuntimeError: no C++ compiler found"
    assert torch.equal(fallback.x_adv, eager.x_adv)


def test_classifier_objective_refuses_a_module_without_logits(small_ae, batch):
    x, y, _, _ = batch
    for name in ("classifier", "classifier-cw"):
        with pytest.raises(ShapeError, match="logits of shape"):
            ATTACKS.create(name, steps=2, restarts=1).sweep(small_ae, x, [1.0], 1, 0, labels=y)


@pytest.mark.parametrize("budget, lam", [("l2", 2.0), ("linf-255", 16.0)])
def test_random_noise_lies_on_the_budget_sphere_and_is_weaker_than_the_attack(small_ae, batch, budget, lam):
    x, _, _, _ = batch
    grey = torch.full_like(x, 0.5)  # far from the box: the drawn noise is not clipped
    noise = ATTACKS.create("random-noise", budget=budget)
    result = noise.sweep(small_ae, grey, [lam], 2, 0)
    delta = (result.x_adv[0] - grey).flatten(2)
    radius = result.radii[0]
    if budget == "l2":
        torch.testing.assert_close(delta.norm(dim=2), torch.full(delta.shape[:2], radius), rtol=1e-5, atol=0)
    else:
        torch.testing.assert_close(delta.abs(), torch.full_like(delta, radius), rtol=1e-5, atol=1e-7)
    assert result.flags == [] and noise.config()["sanity_checks"] is False
    # one draw per (trial, image): another trial draws another direction, the same seed the same one
    assert not torch.equal(result.x_adv[0, 0], result.x_adv[0, 1])
    again = noise.sweep(small_ae, grey[2:5], [lam], 2, 0, image_ids=torch.arange(2, 5))
    torch.testing.assert_close(again.x_adv[0], result.x_adv[0, :, 2:5], rtol=0, atol=1e-7)
    # on real digits the box clips the noise; the optimized attack at the same budget does more damage
    real = noise.sweep(small_ae, x, [lam], 1, 0)
    attack = ATTACKS.create("max-damage", budget=budget, **FAST).sweep(small_ae, x, [lam], 1, 0)
    if budget == "l2":
        assert bool((real.delta_norm <= radius + 1e-5).all())
    assert bool((attack.attack_loss > real.attack_loss).all())
