"""DeepBit: Lin, Lu, Chen, Zhou, "Learning Compact Binary Descriptors with Unsupervised Deep Neural Networks",
CVPR 2016 (official Caffe release: kevinlin311tw/cvpr16-deepbit).

A backbone with a new K-unit layer F(x) (sigmoid outputs in [0, 1]) trained without labels, in two stages:
  stage 1:  1/2 ||b - F(x)||^2           quantization, b = 1[F(x) > 0.5] held fixed
          + sum_k (mu_k - 0.5)^2          even distribution: mu_k = fraction of the batch with bit k on
  stage 2:  + sum_theta C(theta) ||F(rot_theta x) - F(x)||^2   rotation invariance, theta in {-10, -5, 5, 10}
            degrees, C(theta) = exp(-(i - 3)^2 / 2) for the i-th of (-10, -5, 0, 5, 10)
Codes: bit k on when F_k(x) exceeds its mean over the training set (the release's ``mean_th``).

Departures from the release: it fine-tunes only this layer on a frozen ImageNet VGG-16; offline there are no
pretrained weights, so by default the new layer learns on a frozen, randomly initialised small CNN
(bench.backbones) on 32 x 32 inputs; ``backbone``/``weights`` restore the paper's setup for users who have the
weights. The Caffe loss layers back-propagate a scalar to every unit; we use the formulas' gradients. Schedule as
the release's solvers (SGD, momentum 0.9, weight decay 5e-4, batch 32), counted in iterations.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from bench.backbones import DeepHashMethod
from bench.deep import BackboneConfig, LossLog, iteration_batches, rotate, sgd_stage
from bench.hookspecs import hookimpl
from bench.method import FitContext, binarize, setting

ANGLES = (-10.0, -5.0, 0.0, 5.0, 10.0)  # the release's aug_img_faster.m
ANGLE_WEIGHTS = tuple(math.exp(-((i - 3) ** 2) / 2) for i in range(1, 6))  # C(theta), 1 at theta = 0


class DeepBit(DeepHashMethod):
    name = "deepbit"
    paper = "Lin et al., CVPR 2016"
    supervision = "none"
    activation = "sigmoid"
    smoke = {"stage1_iterations": 40, "stage2_iterations": 10}
    recipes = {"cpu-reduced": {"stage1_iterations": 5000, "stage2_iterations": 500}}  # CPU-only runs: a tenth

    @dataclasses.dataclass(frozen=True)
    class Config(BackboneConfig):  # paper: VGG-16 with ImageNet weights
        # The release trains only the new layer on a frozen pretrained VGG-16. From scratch we keep the trunk
        # frozen too (random features): these losses reward any balanced, saturated output, and training the trunk
        # with them erases the input's structure (codes near chance on digits), where random features keep it.
        freeze_backbone: bool = True
        w_quantization: float = setting(1.0, at_least=0)  # the release's loss weights are all 1
        w_even: float = setting(1.0, at_least=0)
        w_rotation: float = setting(1.0, at_least=0)
        stage1_iterations: int = 50_000  # solver_stage1: 50k iterations, lr 1e-3, x0.1 at 25k
        stage1_lr: float = setting(1e-3, above=0)
        stage1_step: int = 25_000
        stage2_iterations: int = 5_000  # solver_stage2: 5k iterations, lr 1e-4, x0.1 every 1k
        stage2_lr: float = setting(1e-4, above=0)
        stage2_step: int = 1_000
        batch_size: int = 32
        momentum: float = setting(0.9, at_least=0, below=1)
        weight_decay: float = setting(5e-4, at_least=0)

    def fit(self, x, y=None, context=FitContext()):
        c, g = self.config, self.generator()
        self.net_ = self.network(x).train()
        log, step = LossLog(self.name), 0
        stages = ((c.stage1_iterations, c.stage1_lr, c.stage1_step), (c.stage2_iterations, c.stage2_lr, c.stage2_step))
        for stage, (iterations, lr, lr_step) in enumerate(stages, 1):
            opt, schedule = sgd_stage(self.net_.trainable(), lr, lr_step, c.momentum, c.weight_decay)
            for i, idx in enumerate(iteration_batches(x.shape[0], c.batch_size, iterations, g, x.device), 1):
                loss, terms = self._loss(self.net_.backbone.prepare(x[idx]), with_rotation=stage == 2)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                schedule.step()
                step += 1
                log.add(loss=loss, **terms)
                if step % 500 == 0 or i == iterations:
                    log.close(step, c.stage1_iterations + c.stage2_iterations, stage=stage, iteration=step)
        self.threshold_ = self.net_.outputs(x).mean(0)  # the release's mean_th: each bit's training-set mean
        self.training_ = {"iterations": step, "selection": "last iteration (fixed schedule)", "log": log.entries}
        return self

    def _loss(self, inputs: torch.Tensor, with_rotation: bool):
        """The release's losses on a batch of prepared images: (loss, {term: value})."""
        c = self.config
        f = self.net_(inputs)
        b = (f > 0.5).float().detach()
        terms = {
            "quantization": 0.5 * ((b - f) ** 2).sum(1).mean(),  # MinQuantizeLoss: 1/2 ||b - F(x)||^2
            "even": ((f.mean(0) - 0.5) ** 2).sum(),
        }  # EvenDistLoss, mu_k as the batch mean of F_k (smooth)
        loss = c.w_quantization * terms["quantization"] + c.w_even * terms["even"]
        if with_rotation:  # TransformLoss: sum_theta C(theta) ||F(rot_theta x) - F(x)||^2
            terms["rotation"] = sum(
                weight * ((self.net_(rotate(inputs, angle)) - f) ** 2).sum(1).mean()
                for angle, weight in zip(ANGLES, ANGLE_WEIGHTS)
                if angle
            )
            loss = loss + c.w_rotation * terms["rotation"]
        return loss, terms

    def encode(self, x):
        self.check_fitted("threshold_")
        return binarize(self.net_.outputs(x) - self.threshold_)


@hookimpl
def bench_methods():
    return [DeepBit]
