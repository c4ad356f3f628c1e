"""The one error type users see, and the helper that suggests what they meant."""

import difflib


class BenchError(Exception):
    """A problem with the user's input or environment. The CLI prints its message on one line and exits non-zero,
    without a traceback; anything else escaping is a bug and keeps its traceback."""


def unknown(kind: str, value, choices) -> BenchError:
    """`unknown method 'itk'; did you mean 'itq'? (choices: itq, lsh, pcah)`"""
    choices = sorted(str(c) for c in choices)
    close = difflib.get_close_matches(str(value), choices, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return BenchError(f"unknown {kind} {value!r}{hint} (choices: {', '.join(choices)})")
