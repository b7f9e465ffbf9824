"""One registry type for architectures, attacks, defenses, datasets, metrics, objectives and optimizers.

Built-in entries live in modules that are imported on first use, third-party entries come from
entry-point groups ``aerobust.<kind>`` or from plugin files loaded by path.
"""
from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import AerobustError, UnknownNameError


class Registry:
    """A name -> object table with a ``register`` decorator, pattern listing and helpful lookups."""

    def __init__(self, kind: str, builtin_modules: Iterable[str] = ()):
        self.kind = kind
        self.entry_point_group = f"aerobust.{kind}"
        self._builtin_modules = tuple(builtin_modules)
        self._entries: dict[str, Any] = {}
        self._populated = False

    def register(self, name: str | Callable | None = None, obj: Any = None, *, override: bool = False):
        """Register ``obj`` under ``name``; without ``obj`` this is a decorator.

        ``@REG.register`` uses the object's ``__name__``; ``@REG.register("name")`` names it.
        """
        if callable(name) and obj is None:
            return self.register(name.__name__, name, override=override)

        def add(target):
            key = name or target.__name__
            if key in self._entries and self._entries[key] is not target and not override:
                raise AerobustError(
                    f"{self.kind} '{key}' is already registered; pass override=True to replace it"
                )
            self._entries[key] = target
            return target

        return add if obj is None else add(obj)

    def _populate(self):
        if self._populated:
            return
        self._populated = True
        for module in self._builtin_modules:
            importlib.import_module(module)
        for entry_point in importlib.metadata.entry_points(group=self.entry_point_group):
            if entry_point.name in self._entries:
                continue
            try:
                loaded = entry_point.load()
            except Exception as exc:  # a broken third-party plugin must not break aerobust
                raise AerobustError(
                    f"entry point '{entry_point.name}' in group {self.entry_point_group} failed to "
                    f"load ({type(exc).__name__}: {exc}); fix or uninstall the package providing it"
                ) from exc
            self._entries.setdefault(entry_point.name, loaded)

    def get(self, name: str) -> Any:
        self._populate()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} '{name}'; known {self.kind}: {known}") from None

    def create(self, name: str, **kwargs) -> Any:
        """Call the registered factory ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)

    def items(self) -> list[tuple[str, Any]]:
        """``(name, object)`` pairs in registration order: built-ins first, then entry points and plugins."""
        self._populate()
        return list(self._entries.items())

    def list(self, pattern: str = "*") -> list[str]:
        self._populate()
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: str) -> bool:
        self._populate()
        return name in self._entries

    def __repr__(self):
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


ARCHITECTURES = Registry("architectures", ["aerobust.architectures", "aerobust.defenses.lipschitz"])
ATTACKS = Registry("attacks", ["aerobust.attacks"])
DEFENSES = Registry("defenses", ["aerobust.defenses"])
DATASETS = Registry("datasets", ["aerobust.datasets"])
# Curve metrics (auddc) and set-level metrics (the Frechet distances) register in their own modules.
METRICS = Registry("metrics", ["aerobust.metrics", "aerobust.fidelity", "aerobust.distortion"])
# What an attack is made of (aerobust/attacks/base.py): an objective and an optimizer.
OBJECTIVES = Registry("objectives", ["aerobust.objectives"])
OPTIMIZERS = Registry("optimizers", ["aerobust.attacks.optimizers"])

REGISTRIES = {r.kind: r for r in (ARCHITECTURES, ATTACKS, DEFENSES, DATASETS, METRICS, OBJECTIVES, OPTIMIZERS)}

register_architecture = ARCHITECTURES.register
register_defense = DEFENSES.register
register_dataset = DATASETS.register
register_metric = METRICS.register
register_objective = OBJECTIVES.register
register_optimizer = OPTIMIZERS.register


def register_attack(name: str, obj: Any = None, *, override: bool = False):
    """``@register_attack("name")``: register an attack class, whose ``name`` becomes that name.

    The name is written once, here; the class attribute follows it (what configs and errors print).
    """
    def add(cls):
        ATTACKS.register(name, cls, override=override)
        cls.name = name
        return cls

    return add if obj is None else add(obj)


def get_registry(kind: str) -> Registry:
    try:
        return REGISTRIES[kind]
    except KeyError:
        raise UnknownNameError(f"unknown registry '{kind}'; known: {', '.join(REGISTRIES)}") from None


def load_plugin(path: str | Path):
    """Import a Python file by path so that its ``register_*`` decorators run; returns the module."""
    path = Path(path)
    if not path.is_file():
        raise AerobustError(f"plugin file {path} does not exist; pass the path of a .py file")
    module_name = f"aerobust_plugin_{path.stem}_{abs(hash(str(path.resolve()))):x}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise AerobustError(f"plugin {path} is not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except AerobustError:
        del sys.modules[module_name]
        raise
    except SystemExit as exc:  # exiting would end aerobust with the plugin's code and no message
        del sys.modules[module_name]
        raise AerobustError(f"plugin {path} called sys.exit({exc.code!r}) while loading; a plugin must raise an "
                            "exception instead of exiting") from None
    except Exception as exc:
        del sys.modules[module_name]
        raise AerobustError(f"plugin {path} failed to import ({type(exc).__name__}: {exc})") from exc
    return module
