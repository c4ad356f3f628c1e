import os
from pathlib import Path

import numpy as np
import pytest
import torch

# The read-only data shipped beside the checkout (CI clones with shared/ beside it), or the user's own root.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA_ROOT = Path(os.environ.get("HASHBENCH_DATA") or SHARED_DATA)
HAS_MNIST = (DATA_ROOT / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists()
needs_mnist = pytest.mark.skipif(not HAS_MNIST, reason=f"MNIST not found under {DATA_ROOT}")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture
def results_dir(tmp_path):
    return tmp_path / "results"


def random_case(rng, n_q, n_d, n_bits, n_classes=4, multi_label=False, n_patterns=None, flip=0.1):
    """Codes drawn from few prototypes with some flipped bits: heavy ties, like real codes."""
    n_patterns = n_patterns or 4
    protos = rng.choice([-1, 1], (n_patterns, n_bits))
    q = protos[rng.integers(0, n_patterns, n_q)]
    d = protos[rng.integers(0, n_patterns, n_d)]
    d = np.where(rng.random(d.shape) < flip, -d, d)
    if multi_label:
        ql = (rng.random((n_q, n_classes)) < 0.3).astype(np.int64)
        dl = (rng.random((n_d, n_classes)) < 0.3).astype(np.int64)
    else:
        ql, dl = rng.integers(0, n_classes, n_q), rng.integers(0, n_classes, n_d)
    return q, d, ql, dl
