"""The plugin registry: one pluggy PluginManager for built-in and third-party code alike.

Registered, in order: the host's own modules (datasets, tables), every module in the built-in folders
``baselines/`` and ``plugins/`` (dropping a file there is the whole registration), and every installed package's
module named in the ``bench`` entry-point group. Each implements hooks from ``bench.hookspecs``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from functools import lru_cache

import pluggy

from bench import hookspecs
from bench.errors import BenchError, unknown
from bench.method import INPUTS, SUPERVISION, Method

BUILTIN_HOST = ("bench.data", "bench.tables")
BUILTIN_FOLDERS = ("baselines", "plugins")


def _import(module_name: str):
    try:
        return importlib.import_module(module_name)
    except Exception as e:  # a broken plugin fails with its module name
        raise BenchError(f"plugin module {module_name} failed to import: {type(e).__name__}: {e}") from e


def make_plugin_manager(entry_points: bool = True) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN_HOST:
        pm.register(_import(name), name)
    for folder in BUILTIN_FOLDERS:
        package = _import(folder)
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if not info.name.startswith("_"):
                name = f"{folder}.{info.name}"
                pm.register(_import(name), name)
    if entry_points:
        # As pluggy's load_setuptools_entrypoints, but a failure names the module and the package it came from.
        for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT):
            if pm.get_plugin(ep.value) is not None:  # plugins are registered by module name (ep.value)
                continue
            package = ep.dist.name if ep.dist else "?"
            try:
                plugin = ep.load()
            except Exception as e:
                raise BenchError(
                    f"plugin module {ep.value} (entry point {ep.name!r} of package {package}) failed "
                    f"to import: {type(e).__name__}: {e}"
                ) from e
            pm.register(plugin, ep.value)
    return pm


class Registry:
    """Methods, protocols and tables by name, collected from every plugin's hooks."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self.origins: dict[tuple[str, str], str] = {}  # (kind, name) -> the plugin module that registered it
        self.methods = self._collect(pm.hook.bench_methods, "method", lambda m: m.name)
        self.protocols = self._collect(pm.hook.bench_protocols, "dataset/protocol", lambda p: p.name)
        self.tables = self._collect(pm.hook.bench_tables, "table", lambda t: t.name)
        for cls in self.methods.values():
            _check_method_class(cls)

    def _collect(self, hook, kind, key):
        found, origin = {}, {}
        for impl in hook.get_hookimpls():
            for item in impl.function() or []:
                name = key(item)
                if name in found:
                    raise BenchError(
                        f"duplicate {kind} {name!r}: registered by {origin[name]} and by {impl.plugin_name}"
                    )
                found[name], origin[name] = item, impl.plugin_name
        self.origins.update({(kind, n): o for n, o in origin.items()})
        return found

    def method(self, name: str) -> type[Method]:
        if name not in self.methods:
            raise unknown("method", name, self.methods)
        return self.methods[name]

    def protocol(self, name: str):
        if name not in self.protocols:
            raise unknown("dataset", name, self.protocols)
        return self.protocols[name]

    def table(self, name: str):
        if name not in self.tables:
            raise unknown("table", name, self.tables)
        return self.tables[name]


def _check_method_class(cls) -> None:
    where = f"method class {cls.__module__}.{cls.__qualname__}"
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise BenchError(f"{where} is not a bench.Method subclass")
    for attr in ("name", "paper", "supervision", "input"):
        if not isinstance(getattr(cls, attr, None), str) or not getattr(cls, attr):
            raise BenchError(f"{where} must set the class attribute {attr!r}")
    if cls.supervision not in SUPERVISION:
        raise unknown(f"supervision of {cls.name}", cls.supervision, SUPERVISION)
    if cls.input not in INPUTS:
        raise unknown(f"input of {cls.name}", cls.input, INPUTS)


@lru_cache(maxsize=1)
def get_registry() -> Registry:
    """The process-wide registry (built once)."""
    return Registry(make_plugin_manager())
