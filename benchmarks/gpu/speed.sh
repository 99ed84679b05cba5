#!/usr/bin/env bash
# The speed study of the Gaussian field in one device call of about 7 minutes (carry [".whl", ".gpu-data"], timeout_s 600):
#   1. benchmarks/run.py --only 1 4 7 at the paper's batch: the trunk's step and achieved TFLOP/s (1); rays/s of
#      gaussian-nerf-esgd, gaussian-nerf-adam, coarse vanilla-nerf, the plain-Gaussian field and gaussian-nerf-esgd
#      with TF32 matmuls, side by side, with the projected 200k-step time (4); where a train_iteration's time goes (7);
#   2. lego: gaussian-nerf-esgd against itself with TF32 matmuls, same seed and same rays (each run keeps its own
#      RNG stream), LEGO_BUDGET seconds each: does TF32 leave the PSNR trajectory unchanged?
# $OUT receives speed.md, lego_tf32.md/.png/.json and speed.log.
#
#   OUT=$OUT bash benchmarks/gpu/speed.sh
#   RUN_ARGS="--quick --rays 16 --samples 8" LEGO_ARGS="--device cpu --rays 64 --samples 16 --hidden 32 --layers 3
#     --image-scale 0.1" LEGO_BUDGET=5 OUT=/tmp/speed bash benchmarks/gpu/speed.sh   # a CPU rehearsal (about 5 min)
set -u
: "${OUT:?set OUT to the folder that comes back}"
RUN_ARGS=${RUN_ARGS:---gpu}
LEGO_ARGS=${LEGO_ARGS:-}
LEGO_BUDGET=${LEGO_BUDGET:-45}
LIMIT=${LIMIT:-560}  # seconds for the whole call; lego stops (files written) when they are up
exec > >(tee "$OUT/speed.log") 2>&1
start=$SECONDS
source "$(dirname "$0")/env.sh"
echo "== benchmarks (1), (4), (7) at $((SECONDS - start)) s"
python3 -m benchmarks.run $RUN_ARGS --only 1 4 7 --plain-gaussian --tf32 --output "$OUT/speed.md"
echo "== lego, TF32 against FP32, at $((SECONDS - start)) s"
python3 -m benchmarks.gpu.lego_convergence --methods gaussian-nerf-esgd gaussian-nerf-esgd+tf32 --budget "$LEGO_BUDGET" \
  --deadline $((LIMIT - (SECONDS - start))) --name lego_tf32 --out "$OUT" $LEGO_ARGS
echo "== done at $((SECONDS - start)) s"
