#!/usr/bin/env bash
# Fine-tune the default model (configs/default_model_finetune.yaml) on a machine that holds only the repository,
# within a wall-clock budget: a short run measures the speed, then the real run gets as many steps as fit.
#   scripts/device_train.sh OUT_DIR [SECONDS] [extra `seem train` arguments...]
# Needs ../shared/data, or .devdata/data made by `python scripts/pack_training_data.py .devdata/data` (linked in as
# ../shared/data when ../shared/data is missing); wheels in .whl/ are installed first (pycocotools, ftfy, wcwidth on
# a machine without them). Writes OUT_DIR/: the model split into two safetensors files (files of at most 16 MB;
# `python scripts/make_default_model.py OUT_DIR` joins them), config.json, metrics.csv, train.log.
# SMOKE_STEPS (default 20) sets the length of the speed run; PROCS (default 1) the number of training processes (on an
# H200 one process reached only 3 images/s: the per-image decoder calls and the CPU-side prompt simulation bound it,
# so several processes share the GPU; data.batch_size is per process).
set -euo pipefail
out="${1:?usage: scripts/device_train.sh OUT_DIR [SECONDS] [seem train arguments]}"
budget="${2:-420}"
shift $(( $# < 2 ? $# : 2 ))
t0=$(date +%s)
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null && ! python3 -c "import pycocotools, ftfy" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
if [ ! -e ../shared/data ] && [ -d .devdata/data ]; then
  mkdir -p ../shared && ln -s "$PWD/.devdata/data" ../shared/data
fi
nvidia-smi -L 2>/dev/null || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
procs="${PROCS:-1}"
seem() {  # PROCS > 1: that many data-parallel processes (torchrun), sharing the GPU(s) round-robin
  if [ "$procs" -gt 1 ]; then python3 -m torch.distributed.run --standalone --nproc_per_node "$procs" -m seem.cli "$@"
  else python3 -m seem.cli "$@"; fi
}
cfg=configs/default_model_finetune.yaml

# 1. speed: a short run (its model is thrown away)
smoke="${SMOKE_STEPS:-20}"
seem train "$cfg" --set output_dir=runs/device_smoke --set "schedule.max_steps=$smoke" \
  --set "logging.log_every=$(( smoke / 2 ))" --set logging.progress=false "$@" 2>&1 | tail -n 5
sps=$(python3 -c "import csv; r = list(csv.DictReader(open('runs/device_smoke/metrics.csv'))); print(r[-1]['sec_per_step'])")
left=$(( budget - ($(date +%s) - t0) ))
steps=$(python3 -c "print(max(int(($left - 40) / (1.1 * $sps)), 1))")
echo "speed run: $sps s/step; $left s left of $budget -> $steps steps" | tee "$out/train.log"

# 2. the run
seem train "$cfg" --set "output_dir=runs/device_finetune" --set "schedule.max_steps=$steps" \
  --set logging.log_every=25 --set logging.progress=false "$@" 2>&1 | tee -a "$out/train.log" | tail -n 5
cp runs/device_finetune/metrics.csv runs/device_finetune/final/config.json "$out/"
python3 - "$out" <<'EOF'
import sys
from safetensors.torch import load_file, save_file
sd = load_file("runs/device_finetune/final/model.safetensors")
keys = sorted(sd)
total = sum(t.numel() * t.element_size() for t in sd.values())
parts: tuple[dict, dict] = ({}, {})
done = 0
for k in keys:  # the first half of the bytes, the rest
    parts[done >= total / 2][k] = sd[k]
    done += sd[k].numel() * sd[k].element_size()
for i, part in enumerate(parts, 1):
    save_file(part, f"{sys.argv[1]}/model_part{i}.safetensors")
print("saved", len(keys), "tensors in two parts")
EOF
echo "total $(( $(date +%s) - t0 )) s" | tee -a "$out/train.log"
