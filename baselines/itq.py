"""ITQ: Iterative Quantization (Gong & Lazebnik, CVPR 2011).

Project the centred input on its top n_bits principal components, V = (x - mean) W_pca, then learn an
orthogonal rotation R minimising the quantization loss ||B - V R||_F^2 by alternating
  B = sgn(V R)                     (fix R, best codes),
  C = B^T V = U S W^T (SVD), R = W U^T  (fix B, orthogonal Procrustes),
starting from the orthogonal factor of a random Gaussian matrix (``baselines._linear.itq_rotation``).
Codes: sgn((x - mean) W_pca R). Follows the authors' MATLAB code, whose loop runs 0..n_iter.
"""

import dataclasses

import torch

from baselines._linear import ProjectionHash, centre, itq_rotation, pca_directions
from bench.hookspecs import hookimpl
from bench.method import FitContext, setting


class ITQ(ProjectionHash):
    name = "itq"
    paper = "Gong & Lazebnik, CVPR 2011"
    supervision = "none"
    input = "vectors"
    smoke = {"n_iter": 5}

    @dataclasses.dataclass(frozen=True)
    class Config:
        # the paper: "we have found 50 iterations to be sufficient" (authors' code: 0..50; 0: one rotation update)
        n_iter: int = setting(50, at_least=0)

    def fit(self, x, y=None, context=FitContext()):
        centred, self.mean_ = centre(x)
        self.pca_ = pca_directions(centred, self.n_bits, self.name)
        v = (centred @ self.pca_).to(torch.float64)
        self.rotation_ = itq_rotation(v, self.config.n_iter, self.generator()).to(x.dtype)
        self.projection_ = self.pca_ @ self.rotation_
        return self


@hookimpl
def bench_methods():
    return [ITQ]
