"""RBF features on random anchors, shared by the kernel baselines (KSH, SDH)."""

import torch


def pick_anchors(x: torch.Tensor, n_anchors: int, generator: torch.Generator) -> torch.Tensor:
    """n_anchors random training points (all of them if there are fewer)."""
    order = torch.randperm(x.shape[0], generator=generator)[:n_anchors].to(x.device)
    return x[order].to(torch.float64)


def rbf(x: torch.Tensor, anchors: torch.Tensor, width: float, batch: int = 8192) -> torch.Tensor:
    """exp(-||x - a||^2 / width) for every anchor a: float64 (n, n_anchors), computed in batches."""
    out = [
        torch.exp(-(torch.cdist(x[i : i + batch].to(torch.float64), anchors) ** 2) / width)
        for i in range(0, x.shape[0], batch)
    ]
    return torch.cat(out)
