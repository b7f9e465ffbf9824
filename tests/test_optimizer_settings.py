"""Optimizer settings as objects: one frozen, checked class per optimizer; the one projected step."""
import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aerobust.attacks import Attack, OptimizationResult
from aerobust.attacks.base import options_for
from aerobust.attacks.optimizers import (APGDSettings, FGSMSettings, LegacyLBFGSSettings, PGDSettings,
                                         projected_step, settings_class_of)
from aerobust.attacks.quasi_newton import PQNSettings
from aerobust.attacks.settings import OptimizerSettings, setting, whole_number
from aerobust.errors import AerobustError
from aerobust.registry import ATTACKS, OPTIMIZERS, register_attack
from aerobust.threat import Threat
from tests.test_beyond_attacks import tiny_ae

BUILT_IN = {"pgd": PGDSettings, "apgd": APGDSettings, "fgsm": FGSMSettings, "lbfgs-legacy": LegacyLBFGSSettings,
            "pqn": PQNSettings}


def test_each_optimizer_declares_its_settings_class_and_an_attack_holds_that_object_alone():
    for name, settings_class in BUILT_IN.items():
        assert settings_class_of(OPTIMIZERS.get(name)) is settings_class
        attack = ATTACKS.create("max-damage", optimizer=name)
        assert type(attack.settings) is settings_class
        # the config records exactly the chosen optimizer's settings, in the class's field order
        config = attack.config()
        recorded = [key for key in config if key in {n for c in BUILT_IN.values() for n in c.names()}]
        assert recorded == list(settings_class.names())
        assert {key: config[key] for key in recorded} == dataclasses.asdict(attack.settings)
    with pytest.raises(dataclasses.FrozenInstanceError):
        PGDSettings().steps = 3


@pytest.mark.parametrize("chosen", sorted(BUILT_IN))
def test_another_optimizers_setting_is_refused_in_one_line_that_names_the_chosen_ones(chosen):
    own = BUILT_IN[chosen].names()
    foreign = sorted({n for c in BUILT_IN.values() for n in c.names()} - set(own))
    for key in foreign:
        value = dict(dataclasses.asdict(next(c() for c in BUILT_IN.values() if key in c.names())))[key]
        with pytest.raises(AerobustError) as error:
            ATTACKS.create("max-damage", optimizer=chosen, **{key: value})
        assert str(error.value) == f"optimizer '{chosen}' does not take {key}; its options are {', '.join(own)}"


def test_values_are_converted_like_the_options_they_replace():
    converted = PGDSettings(steps=50.0, step_size=1, early_stop=3.0)
    assert (converted.steps, converted.step_size, converted.early_stop) == (50, 1.0, 3)
    assert type(converted.steps) is int and type(converted.step_size) is float
    assert LegacyLBFGSSettings(lbfgs_factr=10).lbfgs_factr == 10.0
    for bad in ({"steps": True}, {"schedule": "cubic"}, {"step_size": 0}, {"early_stop": 0}):
        with pytest.raises(AerobustError):
            PGDSettings(**bad)


def test_one_option_set_gives_each_ensemble_member_its_own_optimizers_settings():
    options = {"steps": 4, "lbfgs_maxiter": 10, "budget": "l2"}
    damage = ATTACKS.get("max-damage")
    assert options_for(damage, "pgd", options) == {"steps": 4, "budget": "l2"}
    assert options_for(damage, "lbfgs-legacy", options) == {"lbfgs_maxiter": 10, "budget": "l2"}
    # an attack with its own search keeps only its own settings, whatever optimizer it is named with
    assert options_for(ATTACKS.get("jacobian"), "lbfgs-legacy", {**options, "power_iterations": 3}) == \
        {"budget": "l2", "power_iterations": 3}


def test_an_attack_with_its_own_optimizer_declares_its_settings_and_refuses_the_optimizers(monkeypatch):
    monkeypatch.setattr(ATTACKS, "_entries", {**dict(ATTACKS.items())})  # dropped again after the test

    @dataclasses.dataclass(frozen=True)
    class HopSettings(OptimizerSettings):
        hops: int = setting(2, whole_number(1))

    @register_attack("hop")
    class Hop(Attack):
        objective_name = "max-damage"
        settings_class = HopSettings

        def optimize(self, problem):
            return OptimizationResult(problem.x)

    config = ATTACKS.create("hop", hops=5).config()
    assert config["optimizer"].endswith("Hop.optimize") and config["hops"] == 5 and "steps" not in config
    with pytest.raises(AerobustError, match="^attack 'hop' runs its own optimizer, which does not take steps; "
                                            "its options are hops$"):
        ATTACKS.create("hop", steps=3)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["l2", "linf"]), st.floats(0.05, 3.0))
def test_the_projected_step_is_a_normalized_descent_step_then_the_exact_projection(seed, norm, length):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 1, 5, 5, generator=generator)
    delta = (torch.rand(4, 1, 5, 5, generator=generator) - 0.5) * 0.2
    grad = torch.randn(4, 1, 5, 5, generator=generator)
    ball = Threat(torch.tensor([0.3, 0.5, 1.0, 2.0]), norm)
    lengths = torch.full((4,), length)
    # independently: the steepest descent direction in the norm, then the threat's own projection
    direction = grad.sign() if norm == "linf" else grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    expected = ball.project(x, delta - length * direction)
    stepped, size, bad = projected_step(ball, x, delta, grad.clone(), lengths, (-x, 1 - x))
    torch.testing.assert_close(stepped, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(size, grad.flatten(1).norm(dim=1))
    assert not bool(bad.any())
    ball.check(x, x + stepped)


def test_the_universal_attack_and_pgd_step_through_the_engines_projected_step(monkeypatch):
    import aerobust.attacks.optimizers as optimizers
    import aerobust.attacks.universal as universal

    calls = []

    def counted(*args, **kwargs):
        calls.append(args[0].norm)
        return projected_step(*args, **kwargs)

    monkeypatch.setattr(universal, "projected_step", counted)
    monkeypatch.setattr(optimizers, "projected_step", counted)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ATTACKS.create("universal", steps=4).sweep(tiny_ae(), x, [0.5], 1, seed=0)
    assert len(calls) == 4  # one shared step per ascent step (all patterns at once)
    calls.clear()
    ATTACKS.create("max-damage", steps=3, restarts=1, norm="linf").sweep(tiny_ae(), x, [0.1], 1, seed=0)
    assert calls == ["linf"] * 3
