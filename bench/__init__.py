"""hashbench: a benchmark harness for learning to hash.

The host is small on purpose. Methods are pluggy plugins (``bench.hookspecs``); the host owns data and protocols
(``bench.data``), the evaluator (``bench.metrics``), running and storing (``bench.runner``, ``bench.results``) and
paper tables (``bench.tables``). ``bench.cli`` is the ``bench`` command.
"""

from bench.errors import BenchError
from bench.method import Method, binarize

__all__ = ["BenchError", "Method", "binarize"]
__version__ = "0.1.0"
