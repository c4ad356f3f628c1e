"""K-means on the input vectors (raw pixels by default): the clustering baseline of Dizaji et al. Table 2
(MacQueen 1967; k-means++ seeding, Arthur & Vassilvitskii 2007).

It makes clusters, not binary codes, so it only runs on clustering protocols; hashing methods are compared with
it through k-means on their codes, which the runner does with the same settings (``bench.method.kmeans``).
"""

from __future__ import annotations

import dataclasses

import torch

from bench.errors import BenchError
from bench.hookspecs import hookimpl
from bench.method import FitContext, Method, kmeans


class KMeans(Method):
    name = "kmeans"
    paper = "MacQueen 1967 (k-means++ seeding)"
    supervision = "none"
    input = "vectors"
    tasks = ("clustering",)

    @dataclasses.dataclass(frozen=True)
    class Config:
        # No settings: k is the protocol's number of classes, restarts and seeding are the harness's
        # (bench.method.KMEANS_N_INIT), the same as for k-means on any method's codes.
        pass

    def fit(self, x, y=None, context=FitContext()):
        if context.n_clusters is None:
            raise BenchError("kmeans needs the number of clusters: run it on a clustering protocol")
        self.labels_, self.centres_ = kmeans(x, context.n_clusters, self.seed)
        return self

    def cluster(self, x):
        """The nearest centre of each item."""
        self.check_fitted("centres_")
        return torch.cdist(x, self.centres_).argmin(1)

    def encode(self, x):
        raise BenchError(
            "kmeans makes clusters, not binary codes: run it on a clustering protocol (digits-clustering, mnist, usps)"
        )


@hookimpl
def bench_methods():
    return [KMeans]
