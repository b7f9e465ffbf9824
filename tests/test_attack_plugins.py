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
