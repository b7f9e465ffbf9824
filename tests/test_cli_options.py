"""The CLI's one KEY=VALUE parser, as --model-arg, --arch-option, --option and --attack-option use it."""
import pytest
from click.testing import CliRunner

from aerobust.cli import main
from aerobust.cli.audit import parse_attack_options
from aerobust.cli.common import UserError, parse_pairs


def test_pairs_keep_their_order_and_parse_json_lists_and_strings():
    assert parse_pairs(["hidden=64,32", "latent-dim=3", "name= vae ", "flag=true"], "--model-arg") == [
        ("hidden", [64, 32]), ("latent_dim", 3), ("name", "vae"), ("flag", True)]
    assert parse_pairs(["weighting=1"], "--option", str) == [("weighting", "1")]


@pytest.mark.parametrize("item, key_form, message", [
    ("novalue", "KEY", "--x takes KEY=VALUE (e.g. --x name=value); got 'novalue'"),
    ("=3", "KEY", "takes KEY=VALUE"),
    ("steps=3", "ATTACK.KEY", "takes ATTACK.KEY=VALUE"),
    (".steps=3", "ATTACK.KEY", "takes ATTACK.KEY=VALUE"),
    ("latent.=3", "ATTACK.KEY", "takes ATTACK.KEY=VALUE"),
])
def test_malformed_pairs_are_one_clear_error(item, key_form, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
        parse_pairs([item], "--x", key_form=key_form)


def test_attack_options_apply_in_the_order_given():
    items = ["max-damage.steps=3", "*.steps=5", "max-damage.early-stop=2", "max-damage.steps=7"]
    assert parse_attack_options(items, ["latent", "max-damage"]) == {
        "latent": {"steps": 5}, "max-damage": {"steps": 7, "early_stop": 2}}
    with pytest.raises(UserError, match="not in --attacks"):
        parse_attack_options(["jacobian.steps=3"], ["latent"])


def test_the_audit_reports_a_malformed_attack_option_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["audit", "--model", "mlp-ae-32", "--attack-option", "steps=3",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: --attack-option takes ATTACK.KEY=VALUE (e.g. --attack-option latent.steps=200); got 'steps=3'"]
