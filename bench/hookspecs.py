"""Every hook a plugin can implement. This module is the whole plugin surface.

A plugin is any module (a file in ``plugins/`` or ``baselines/``, or an installed package's module named in the
``bench`` entry-point group) that implements some of these hooks with ``@bench.hookspecs.hookimpl``::

    from bench.hookspecs import hookimpl

    @hookimpl
    def bench_methods():
        return [MyMethod]

The built-in datasets and tables are registered through the same hooks (``bench.data``, ``bench.tables``).
"""

import pluggy

PROJECT = "bench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def bench_methods():
    """Return a list of ``bench.Method`` subclasses. Each class's ``name`` is its registry key."""


@hookspec
def bench_protocols():
    """Return a list of ``bench.data.Protocol`` objects (a dataset, its split and its description)."""


@hookspec
def bench_tables():
    """Return a list of ``bench.tables.TableSpec`` objects (paper-layout tables with their published numbers)."""
