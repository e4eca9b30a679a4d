#!/usr/bin/env bash
# Regenerates the alanine-dipeptide MD data: the training data in data/ and the
# parallel-tempering references shipped in trade_md/data/ (see data/README.md).
# Each command is resumable: run it again after an interruption and it continues.
# Run from the repository root with the package installed.
set -euo pipefail
mkdir -p runs
# 600 K training data: 100 ns Langevin MD, one frame per ps (100k frames)
trade-md simulate --system alanine-dipeptide --temperature 600 --nanoseconds 100 --seed 1 --out runs/ala2_600K.h5
# validation data: parallel tempering over 300-1000 K, 10 ns per temperature, one frame per ps
trade-md simulate --system alanine-dipeptide --temperatures 300,370,450,530,600,700,830,1000 \
    --nanoseconds 10 --seed 3 --out runs/ala2_pt.h5
cp runs/ala2_600K.h5 data/ala2_600K.h5
for t in 300 450 600 700 1000; do cp "runs/ala2_pt_${t}K.h5" "trade_md/data/ala2_pt_${t}K.h5"; done
