#!/bin/bash
# Re-renders the committed Cao et al. (CVPR 2018) tables and figures from results/runs/ (run from the repository
# root after adding runs). The "-cpu500" files show the runs at the reduced CPU schedule used when no GPU was lent:
# 500 iterations of batch 64, GAN nets of width 16 with one critic step, and the authors'-code variant with 500
# GAN iterations before F. results/tables/renders.json lists them so tests/test_tables.py can re-check them.
set -euo pipefail
REDUCED=(iterations=500 batch_size=64 gan_width=16 n_critic=1)
manifest="{"
for t in cao2018-table1 cao2018-table2; do
  [ $t = cao2018-table2 ] && REDUCED+=(hashgan-cao2018-official.gan_iterations=500)  # its authors'-code row
  SETS=(); for kv in "${REDUCED[@]}"; do SETS+=(--set "$kv"); done
  bench table $t --out results/tables/$t.md > /dev/null
  bench table $t --format latex --out results/tables/$t.tex > /dev/null
  bench table $t "${SETS[@]}" --out results/tables/$t-cpu500.md > /dev/null
  bench table $t "${SETS[@]}" --format latex --out results/tables/$t-cpu500.tex > /dev/null
  set_json=$(printf '"%s": "%s", ' $(for kv in "${REDUCED[@]}"; do echo "${kv%%=*} ${kv#*=}"; done))
  manifest+="\"$t-cpu500.md\": {\"table\": \"$t\", \"set\": {${set_json%, }}}, "
done
python3 -c "import json, sys; print(json.dumps(json.loads(sys.argv[1]), indent=1))" "${manifest%, }}" \
  > results/tables/renders.json
METHODS=(--method hashgan-cao2018 --method hashnet --method dhn --method dnnh --method cnnh)
SETS=(--set iterations=500 --set batch_size=64 --set gan_width=16 --set n_critic=1)
bench plot ph2 --dataset cifar10-cao2018 --bits 16 32 48 64 "${SETS[@]}" "${METHODS[@]}"
bench plot pr --dataset cifar10-cao2018 --bits 16 32 64 "${SETS[@]}" "${METHODS[@]}"
bench plot pn --dataset cifar10-cao2018 --bits 16 32 64 "${SETS[@]}" "${METHODS[@]}"
