#!/usr/bin/env bash
# One device call that runs both prepared GPU benchmarks inside LIMIT seconds (benchmarks/gpu/README.md):
#   1. shapes at the paper's protocol (Adam vs ESGD, ACTIVATIONS networks (Gaussian), bunny and dragon, seed 0), at most
#      SHAPES_S seconds (0: skipped); runs cut short are reported as far as they got (--plot-only);
#   2. lego: gaussian-nerf-esgd, gaussian-nerf-adam and coarse vanilla-nerf at 2048 rays x 128 samples,
#      LEGO_BUDGET seconds of training each, stopped (with every file written) when LIMIT is reached.
# Everything it reports lands in $OUT (at most 8 files come back): the two markdown reports, their figures,
# the lego JSON, shape_runs.tgz (each run's metrics, config and log, to rebuild the report anywhere with
# --plot-only) and session.log.
#
#   carry [".whl", ".gpu-data"]  (OCCUPANCY=1 bash benchmarks/gpu/prepare.sh first), timeout_s 600, command:
#   OUT=$OUT bash benchmarks/gpu/session.sh
set -u
: "${OUT:?set OUT to the folder that comes back}"
LIMIT=${LIMIT:-560}
SHAPES_S=${SHAPES_S:-210}
LEGO_BUDGET=${LEGO_BUDGET:-100}
ACTIVATIONS=${ACTIVATIONS:-gaussian}  # shapes: network activations (word-split)
exec > >(tee "$OUT/session.log") 2>&1
start=$SECONDS
source "$(dirname "$0")/env.sh"

shapes=(--tasks occupancy --data-dir .gpu-data --activations $ACTIVATIONS --optimizers adam esgd --workers 1 --threads 8
        --output-dir /tmp/reproduce --report "$OUT/reproduction_shapes_gpu.md" --figure-dir "$OUT"
        --figure-prefix reproduction_shapes_gpu)
if [ "$SHAPES_S" -gt 0 ]; then  # SHAPES_S=0: lego only
  echo "== shapes (at most ${SHAPES_S} s) at $((SECONDS - start)) s"
  if ! timeout "$SHAPES_S" python3 -m experiments.reproduce "${shapes[@]}"; then
    echo "== shapes stopped at ${SHAPES_S} s: report from the runs as far as they got"
    timeout 60 python3 -m experiments.reproduce "${shapes[@]}" --plot-only
  fi
  (cd /tmp/reproduce && tar czf "$OUT/shape_runs.tgz" --exclude='*.pt' --exclude='*.ply' --exclude='*.png' \
     --exclude=tensorboard --exclude=.lock .)
fi

left=$((LIMIT - (SECONDS - start)))
echo "== lego (deadline ${left} s) at $((SECONDS - start)) s"
python3 -m benchmarks.gpu.lego_convergence --methods gaussian-nerf-esgd gaussian-nerf-adam vanilla-nerf-coarse \
  --budget "$LEGO_BUDGET" --deadline "$left" --out "$OUT"
echo "== done at $((SECONDS - start)) s"
cat "$OUT/reproduction_shapes_gpu.md" "$OUT/lego_gpu.md" 2>/dev/null | tail -c 9000
