import importlib.metadata
import textwrap

import pytest

from aerobust import AerobustError
from aerobust.errors import UnknownNameError
from aerobust.registry import ARCHITECTURES, Registry, load_plugin


def test_register_get_list_and_unknown_name():
    reg = Registry("widgets")

    @reg.register
    def alpha():
        return 1

    @reg.register("beta-2")
    def beta():
        """Second widget."""
        return 2

    reg.register("gamma", lambda: 3)
    assert reg.get("alpha") is alpha and reg.create("beta-2") == 2
    assert reg.list() == ["alpha", "beta-2", "gamma"]
    assert reg.list("b*") == ["beta-2"]
    with pytest.raises(UnknownNameError) as info:
        reg.get("delta")
    assert str(info.value) == "unknown widgets 'delta'; known widgets: alpha, beta-2, gamma"
    with pytest.raises(AerobustError, match="already registered"):
        reg.register("alpha", lambda: 0)
    reg.register("alpha", lambda: 0, override=True)


def test_builtin_architectures_listed_with_pattern():
    assert ARCHITECTURES.list("conv-*") == ["conv-ae-32x3", "conv-ae-64x3", "conv-vae-32x3", "conv-vae-64x3"]


def test_plugin_file_registers_and_broken_plugin_is_one_error(tmp_path):
    plugin = tmp_path / "my_arch.py"
    plugin.write_text(textwrap.dedent('''
        from aerobust import register_architecture
        from aerobust.architectures import MLPAutoencoder

        @register_architecture("plugin-tiny-ae")
        def tiny(**kw):
            return MLPAutoencoder(hidden=(8,), latent_dim=2, **kw)
    '''))
    load_plugin(plugin)
    assert "plugin-tiny-ae" in ARCHITECTURES
    assert ARCHITECTURES.create("plugin-tiny-ae").latent_dim == 2
    broken = tmp_path / "broken.py"
    broken.write_text("import definitely_not_a_module_xyz\n")
    with pytest.raises(AerobustError, match="broken.py failed to import"):
        load_plugin(broken)
    with pytest.raises(AerobustError, match="does not exist"):
        load_plugin(tmp_path / "missing.py")


def test_entry_point_group_is_loaded(tmp_path, monkeypatch):
    (tmp_path / "ep_pkg_for_test.py").write_text("def factory():\n    return 'from entry point'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = importlib.metadata.EntryPoint(name="ep-thing", value="ep_pkg_for_test:factory",
                                          group="aerobust.gadgets")
    real = importlib.metadata.entry_points

    def fake_entry_points(**kwargs):
        if kwargs.get("group") == "aerobust.gadgets":
            return importlib.metadata.EntryPoints([entry])
        return real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    reg = Registry("gadgets")
    assert reg.list() == ["ep-thing"]
    assert reg.create("ep-thing") == "from entry point"
