"""The three plugin examples in attacks/ load by path and run through the base class on a tiny model."""
from pathlib import Path

import pytest
import torch

from aerobust.attacks import Attack
from aerobust.classifiers import train_latent_classifier
from aerobust.registry import ATTACKS, load_plugin

PLUGINS = Path(__file__).resolve().parents[1] / "attacks"


@pytest.fixture(scope="module")
def head(small_ae, mnist_train_small):
    return train_latent_classifier(small_ae, mnist_train_small.images, mnist_train_small.labels, epochs=5, seed=1)


@pytest.fixture(scope="module")
def batch(mnist_test):
    return mnist_test.images[:6], mnist_test.labels[:6]


@pytest.mark.parametrize("file, name", [("torchattacks_pgdl2.py", "torchattacks-pgdl2"), ("art_pgd.py", "art-pgd")])
def test_library_plugins_attack_the_latent_classifier(small_ae, head, batch, file, name):
    load_plugin(PLUGINS / file)
    attack = ATTACKS.create(name, steps=10, restarts=1)
    assert isinstance(attack, Attack) and attack.needs_classifier
    x, y = batch
    result = attack.sweep(small_ae, x, [0.0, 1.5], 1, 0, labels=y, classifier=head)
    assert torch.equal(result.x_adv[0, 0], x)
    assert float(result.delta_norm[1].max()) <= 1.5 * (1 + 1e-5)
    # Cross-entropy of the true label rises on every image: the library attack did its job.
    assert bool((result.attack_loss[1] > result.attack_loss[0]).all())
    assert result.config["attack"] == name and result.config["steps"] == 10


def test_random_search_plugin_is_gradient_free_deterministic_and_per_sample(small_ae, batch):
    load_plugin(PLUGINS / "random_search.py")
    attack = ATTACKS.create("random-search", steps=60)
    x, _ = batch
    result = attack.sweep(small_ae, x, [0.0, 1.0, 2.0], 2, 3)
    damage = result.attack_loss.mean(dim=(1, 2))
    assert float(damage[0]) == 0 and bool((damage[1:] > damage[:-1]).all())
    assert result.history.shape[-1] == 60
    again = attack.sweep(small_ae, x, [0.0, 1.0, 2.0], 2, 3)
    assert torch.equal(result.x_adv, again.x_adv)
    keep = torch.tensor([4, 1])
    alone = attack.sweep(small_ae, x[keep], [2.0], 2, 3, image_ids=keep)
    torch.testing.assert_close(alone.attack_loss[0], result.attack_loss[2][:, keep], rtol=1e-4, atol=1e-5)
    # Gradient PGD should be at least as strong as blind search at the same budget of model calls.
    pgd = ATTACKS.create("max-damage", steps=60, restarts=1).sweep(small_ae, x, [1.0], 2, 3)
    assert float(pgd.attack_loss.mean()) >= float(result.attack_loss[1].mean())


def test_random_search_plugin_on_the_latent_objective(small_ae, mnist_test):
    load_plugin(PLUGINS / "random_search.py")
    attack = ATTACKS.create("random-search", objective="latent", steps=30)
    assert attack.needs_targets
    x = mnist_test.images[:4]
    targets = mnist_test.images[10:14][None]
    result = attack.sweep(small_ae, x, [0.0, 2.0], 1, 0, targets=targets)
    assert bool((result.attack_loss[1] < result.attack_loss[0]).all())


def test_plugins_extend_the_optimizer_and_objective_registries_and_name_their_attack_once(small_ae, batch,
                                                                                          monkeypatch):
    from aerobust.attacks import OptimizationResult
    from aerobust.objectives import MaxDamageObjective
    from aerobust.registry import OBJECTIVES, OPTIMIZERS, register_attack, register_optimizer

    OPTIMIZERS.list(), OBJECTIVES.list(), ATTACKS.list()  # built-ins in place before the patched entries
    for registry in (OPTIMIZERS, OBJECTIVES, ATTACKS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))  # dropped again after the test

    def opposite_corner(attack, problem):
        """Jumps to the far side of the ball along -x (then clipped to the box): no gradient."""
        direction = -problem.x / problem.x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return OptimizationResult(problem.threat.apply(problem.x, direction * problem.threat.radii(problem.x)
                                                       .view(-1, 1, 1, 1)))

    register_optimizer("opposite-corner", opposite_corner)
    OBJECTIVES.register("damage-copy", MaxDamageObjective)

    @register_attack("corner-damage")
    class CornerDamage(Attack):
        objective_name = "damage-copy"

    attack = ATTACKS.create("corner-damage", optimizer="opposite-corner")
    assert attack.name == "corner-damage" == attack.config()["attack"]
    x, _ = batch
    result = attack.sweep(small_ae, x, [1.0], 1, 0)
    expected = (x - x / x.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)
    torch.testing.assert_close(result.x_adv[0, 0].cpu(), expected.cpu())
    with pytest.raises(Exception, match="unknown optimizer 'nope'"):
        ATTACKS.create("corner-damage", optimizer="nope")
