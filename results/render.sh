#!/bin/bash
# Re-renders every committed table and figure from results/runs/ (run from the repository root after adding runs).
# Tables: every table at its rows' own recipes, and at each table-wide recipe its spec lists (cpu-reduced: the
# reduced schedules of the runs made without a GPU), as bench table --all writes them.
# 'bash results/render.sh tables' stops after the tables: the t-SNE and sample figures below need the fitted
# models, which are trained again (tens of CPU minutes) when their checkpoints are not in the cache.
set -euo pipefail
bench table --all results/tables > /dev/null
[ "${1:-}" = tables ] && exit 0

METHODS=(--method hashgan-cao2018 --method hashnet --method dhn --method dnnh --method cnnh)
bench plot ph2 --dataset cifar10-cao2018 --bits 16 32 48 64 --recipe cpu-reduced "${METHODS[@]}"
bench plot pr --dataset cifar10-cao2018 --bits 16 32 64 --recipe cpu-reduced "${METHODS[@]}"
bench plot pn --dataset cifar10-cao2018 --bits 16 32 64 --recipe cpu-reduced "${METHODS[@]}"

METHODS=(--method hashgan-dizaji --method dh --method itq --method sph --method speh --method pcah --method lsh)
bench plot pr --dataset mnist-dizaji2018 --bits 16 32 64 "${METHODS[@]}"
bench plot pr --dataset cifar10-dizaji2018 --bits 16 32 64 --recipe dcgan-5-epochs "${METHODS[@]}"
# t-SNE and samples need the fitted model: read from the run's checkpoint in the cache, else trained again.
for kind in tsne samples; do
  bench plot $kind --dataset mnist-dizaji2018 --bits 32 --seed 2 --method hashgan-dizaji
  bench plot $kind --dataset usps --bits 32 --seed 0 --method hashgan-dizaji --recipe 300-epochs
done
bench plot samples --dataset cifar10-dizaji2018 --bits 32 --method hashgan-dizaji --recipe dcgan-5-epochs
