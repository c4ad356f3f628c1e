"""A test double for the executors, loaded as a plugin (an entry point, so that Ray workers and other driver
processes find it too): sign of random projections, whose fit can log itself, fail, or kill its own process."""

import dataclasses
import os
import signal
import time
from pathlib import Path

import torch

from bench import Method, binarize
from bench.hookspecs import hookimpl


class Probe(Method):
    name = "probe"
    paper = "test double"
    supervision = "none"
    input = "vectors"

    @dataclasses.dataclass(frozen=True)
    class Config:
        log: str = ""  # a file that gets one line "seed n_bits pid" per fit started (to count computations)
        sleep: float = 0.0  # seconds each fit takes
        fail_seed: str = ""  # the fit of this seed raises
        die_marker: str = ""  # while this file is absent, a fit creates it and kills its own process

    def fit(self, x, y=None, context=None):
        c = self.config
        if c.log:
            with open(c.log, "a") as f:
                f.write(f"{self.seed} {self.n_bits} {os.getpid()}\n")
        if c.fail_seed == str(self.seed):
            raise RuntimeError(f"probe fails at seed {self.seed}")
        if c.die_marker and not Path(c.die_marker).exists():
            Path(c.die_marker).write_text("died once")
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(c.sleep)
        self.w_ = torch.randn(x.shape[1], self.n_bits, generator=self.generator()).to(x.device)
        self.mean_ = x.mean(0)
        return self

    def encode(self, x):
        self.check_fitted("w_")
        return binarize((x - self.mean_) @ self.w_)


@hookimpl
def bench_methods():
    return [Probe]
