"""PCAH: PCA hashing (as used by Gong & Lazebnik, CVPR 2011, and Wang et al. 2010 as a baseline).

Each bit is the sign of one of the top n_bits principal components of the centred input,
b = sgn(W_pca^T (x - mean)). Deterministic. Its mAP falls as bits are added, because the low-variance
components carry little neighbourhood information yet weigh as much as the first in the Hamming distance.
"""

import dataclasses

from baselines._linear import ProjectionHash, centre, pca_directions
from bench.hookspecs import hookimpl
from bench.method import FitContext


class PCAH(ProjectionHash):
    name = "pcah"
    paper = "PCA hashing (baseline in Gong & Lazebnik, CVPR 2011)"
    supervision = "none"
    input = "vectors"

    @dataclasses.dataclass(frozen=True)
    class Config:
        pass  # nothing to set: the top principal directions are fixed by the data

    def fit(self, x, y=None, context=FitContext()):
        centred, self.mean_ = centre(x)
        self.projection_ = pca_directions(centred, self.n_bits, self.name)
        return self


@hookimpl
def bench_methods():
    return [PCAH]
