#!/usr/bin/env bash
# The speed study of the Gaussian field in one device call of about 6 minutes (carry [".whl", ".gpu-data"], timeout_s 600):
#   1. benchmarks/run.py --only 1 4 7 at the paper's batch: the trunk's step and achieved TFLOP/s (1); rays/s of
#      gaussian-nerf-esgd, gaussian-nerf-adam, coarse vanilla-nerf, the plain-Gaussian field and gaussian-nerf-esgd
#      with TF32 matmuls, side by side, with the projected 200k-step time (4); where a train_iteration's time goes (7);
#      speed.md is rewritten after each of them, and they are stopped when only TF32_MIN seconds are left (with
#      less than TF32_MIN + 60 seconds in all, they get all of it);
#   2. lego: gaussian-nerf-esgd against itself with TF32 matmuls, same seed and same rays (each run keeps its own
#      RNG stream), LEGO_BUDGET seconds each, if TF32_MIN seconds are left: does TF32 leave the PSNR trajectory unchanged?
# Everything stops LIMIT seconds after the start. $OUT receives speed.md, lego_tf32.md/.png/.json and speed.log.
# benchmarks/gpu/contest.sh runs this as its second phase with what its first left.
#
#   OUT=$OUT bash benchmarks/gpu/speed.sh
#   SKIP_WHEELS=1 PYTHON=.venv/bin/python OMP_NUM_THREADS=1 RUN_ARGS="--quick --rays 16 --samples 8 --image-scale 0.05 --points 256 --rounds 1"
#     LEGO_ARGS="--device cpu --rays 16 --samples 8 --hidden 16 --layers 3 --image-scale 0.05 --views 1 --max-steps 6"
#     LEGO_BUDGET=3 OUT=/tmp/speed bash benchmarks/gpu/speed.sh   # a CPU rehearsal (a few minutes)
set -u
: "${OUT:?set OUT to the folder that comes back}"
mkdir -p "$OUT"
DATA=${DATA:-.gpu-data/lego}  # benchmarks.run's default, ../shared/data, does not travel to the device
[ -f "$DATA/transforms_train.json" ] || DATA=../shared/data/nerf_synthetic/lego
RUN_ARGS=${RUN_ARGS:---gpu}
LEGO_ARGS=${LEGO_ARGS:-}
LEGO_BUDGET=${LEGO_BUDGET:-45}
LIMIT=${LIMIT:-560}     # seconds for the whole script
TF32_MIN=${TF32_MIN:-150}  # seconds kept for the TF32 run (set-up, 2 x LEGO_BUDGET, evaluations)
exec > >(tee "$OUT/speed.log") 2>&1
start=$SECONDS
source "$(dirname "$0")/env.sh"
left=$((LIMIT - (SECONDS - start)))
bench=$((left - TF32_MIN)); [ "$bench" -ge 60 ] || bench=$left  # too little for both: the benchmarks alone
echo "== benchmarks (1), (4), (7) at $((SECONDS - start)) s (at most ${bench} s)"
run_until "$bench" "$PYTHON" -m benchmarks.run $RUN_ARGS --data "$DATA" \
  --only ${SPEED_ONLY:-1 4 7} --plain-gaussian --tf32 --output "$OUT/speed.md"
left=$((LIMIT - (SECONDS - start)))
if [ "$left" -ge "$((TF32_MIN / 2))" ]; then
  echo "== lego, TF32 against FP32, at $((SECONDS - start)) s (deadline $((left - 15)) s)"
  run_until "$left" "$PYTHON" -m benchmarks.gpu.lego_convergence --methods gaussian-nerf-esgd gaussian-nerf-esgd+tf32 \
    --data "$DATA" --budget "$LEGO_BUDGET" --deadline $((left - 15)) --name lego_tf32 --out "$OUT" $LEGO_ARGS
else
  echo "== lego, TF32 against FP32: skipped, ${left} s left"
fi
echo "== done at $((SECONDS - start)) s"
