"""hashbench: a benchmark harness for learning to hash.

The host is small on purpose. Methods are pluggy plugins (``bench.hookspecs``); the host owns data and protocols
(``bench.data``), the evaluator (``bench.metrics``), running and storing (``bench.runner``, ``bench.results``) and
paper tables (``bench.tables``). ``bench.cli`` is the ``bench`` command.

``Method`` and ``binarize`` are imported on first use: they pull in torch, which scoring stored codes
(``bench evaluate``) never needs.
"""

from bench.errors import BenchError

__all__ = ["BenchError", "Method", "binarize"]
__version__ = "0.1.0"

_FROM_METHOD = ("Method", "binarize")


def __getattr__(name: str):
    if name in _FROM_METHOD:
        from bench import method

        return getattr(method, name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
