#!/usr/bin/env bash
# One device call, ordered by value, each phase writing its results as it goes, the whole stopping itself LIMIT
# seconds after its start (benchmarks/gpu/README.md, "The contest call"):
#   lego    the compressed paper protocol (benchmarks/gpu/lego_contest.py --preset gpu): lego 400x400, 2048 rays x
#           128 samples, every registered Gaussian-NeRF method and coarse vanilla-nerf, interleaved, each method's
#           registered lr schedule compressed to LEGO_STEPS steps; final test PSNR / SSIM on 4 fixed test views and
#           the steps and seconds to gaussian-nerf-adam's final PSNR;
#   speed   benchmarks/gpu/speed.sh with what is left: (1), (4), (7) at the paper's batch, then TF32 against FP32
#           on ESGD-Max's trajectory;
#   images  the image contest at the paper's image protocol (experiments.reproduce --tasks image: IMAGES at
#           256x256, 200 epochs, Gaussian networks, IMAGE_OPTIMIZERS, IMAGE_WORKERS runs at a time), stopped when
#           the time is up; every run's metrics.jsonl, metrics.csv, config.json and log come back, partial runs too.
# A phase starts only if its minimum (LEGO_MIN, SPEED_MIN, IMAGES_MIN seconds) is left; PHASES chooses and orders
# them. What comes back in $OUT (at most 8 files): contest.log, lego_gpu_contest.md/.png/.json, speed.md,
# lego_tf32.md, image_runs.tgz (the image runs without checkpoints or images, the grid's results.csv and
# summary.md, the report) and contest.tgz (the per-method lego records, speed.log, the TF32 run's JSON and
# figure, the image report's figure), each tarball rewritten when its phase ends.
#
#   carry [".whl", ".gpu-data"] (bash benchmarks/gpu/prepare.sh first), timeout_s 600, command:
#   OUT=$OUT bash benchmarks/gpu/contest.sh
#   PHASES="speed images" OUT=$OUT bash benchmarks/gpu/contest.sh     # a later call: what the first left out
#   TINY=1 PYTHON=.venv/bin/python OUT=/tmp/contest bash benchmarks/gpu/contest.sh  # rehearsal on a CPU, tiny sizes
# (TINY=1: 12 lego steps at 20 px, the speed benchmarks at 16 rays x 8 samples, the photos at 8 x 8 for 2 epochs;
# LEGO_DATA, IMAGE_DATA, TINY_SCALE, SPEED_ONLY, IMAGES and IMAGE_OPTIMIZERS choose data and trim it further.)
set -u
: "${OUT:?set OUT to the folder that comes back}"
mkdir -p "$OUT"
TINY=${TINY:-0}
LIMIT=${LIMIT:-570}                      # seconds for the whole call (timeout_s 600 leaves 30 for the shell)
PHASES=${PHASES:-lego speed images}
WORK=${WORK:-/tmp/contest}               # what is packed into contest.tgz / image_runs.tgz
LEGO_MIN=${LEGO_MIN:-120} SPEED_MIN=${SPEED_MIN:-90} IMAGES_MIN=${IMAGES_MIN:-90}
LEGO_DATA=${LEGO_DATA:-.gpu-data/lego}
[ -f "$LEGO_DATA/transforms_train.json" ] || LEGO_DATA=../shared/data/nerf_synthetic/lego
IMAGE_DATA=${IMAGE_DATA:-.gpu-data}      # holds images/kodak/<stem>.png
[ -d "$IMAGE_DATA/images/kodak" ] || IMAGE_DATA=../shared/data
IMAGES=${IMAGES:-kodim01 kodim02 kodim03 kodim04}
IMAGE_OPTIMIZERS=${IMAGE_OPTIMIZERS:-adam esgd esgd-adam-start muon-esgd muon-esgd-eq psgd-kron-esgd muon adam-cosine adam-linear soap psgd-kron schedulefree-adamw}
IMAGE_WORKERS=${IMAGE_WORKERS:-10}
if [ "$TINY" = 1 ]; then  # a rehearsal: every phase end to end at tiny sizes on a CPU, nothing installed
  export SKIP_WHEELS=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one thread: a shared CPU's cores oversubscribed stall
  TINY_SCALE=${TINY_SCALE:-0.05}  # of lego's 400 px: 20 px (1 for a procedural 16 px scene)
  LEGO_STEPS=${LEGO_STEPS:-12}
  LEGO_ARGS=${LEGO_ARGS:---preset tiny --image-scale $TINY_SCALE}
  export RUN_ARGS=${RUN_ARGS:---quick --device cpu --rays 16 --samples 8 --image-scale $TINY_SCALE --points 256 --rounds 1}
  export LEGO_ARGS_TF32=${LEGO_ARGS_TF32:---device cpu --threads 1 --rays 16 --samples 8 --hidden 16 --layers 3
    --image-scale $TINY_SCALE --views 1 --max-steps 6}
  export LEGO_BUDGET=${LEGO_BUDGET:-3} TF32_MIN=${TF32_MIN:-60}
  IMAGE_ARGS=${IMAGE_ARGS:---size 8 8 --epochs 2 --threads 1}
  IMAGE_WORKERS=${IMAGE_WORKERS_TINY:-2}
else
  LEGO_STEPS=${LEGO_STEPS:-800}
  LEGO_ARGS=${LEGO_ARGS:---preset gpu}
  export LEGO_ARGS_TF32=${LEGO_ARGS_TF32:-}
  IMAGE_ARGS=${IMAGE_ARGS:---threads 2}
fi
rm -rf "$WORK"
mkdir -p "$WORK"
exec > >(tee "$OUT/contest.log") 2>&1
start=$SECONDS
left() { echo $((LIMIT - (SECONDS - start))); }
source "$(dirname "$0")/env.sh"
echo "== contest: phases '$PHASES', limit ${LIMIT} s; lego data $LEGO_DATA, images $IMAGE_DATA"

pack() {  # everything of $WORK but the image runs, which image_runs.tgz holds
  tar czf "$OUT/contest.tgz" -C "$WORK" --exclude=./images .
}

phase_lego() {
  local l; l=$(left)
  echo "== lego at $((SECONDS - start)) s: N = $LEGO_STEPS, deadline $((l - 20)) s"
  run_until $((l - 5)) "$PYTHON" -m benchmarks.gpu.lego_contest $LEGO_ARGS --data "$LEGO_DATA" --steps "$LEGO_STEPS" \
    --deadline $((l - 20)) --out "$OUT" --records "$WORK/lego_records" --checkpoints "$WORK/lego_checkpoints"
  rm -rf "$WORK/lego_checkpoints"
  pack
}

phase_speed() {
  OUT="$WORK/speed" LIMIT=$(($(left) - 5)) LEGO_ARGS="$LEGO_ARGS_TF32" DATA="$LEGO_DATA" \
    bash "$(dirname "$0")/speed.sh"
  cp "$WORK/speed/speed.md" "$OUT/" 2>/dev/null
  cp "$WORK/speed/lego_tf32.md" "$OUT/" 2>/dev/null
  pack
}

phase_images() {
  local l grid
  l=$(left)
  grid=(--tasks image --data-dir "$IMAGE_DATA" --images $IMAGES --activations gaussian --optimizers $IMAGE_OPTIMIZERS
        --workers "$IMAGE_WORKERS" $IMAGE_ARGS --output-dir "$WORK/images" --report "$WORK/images/reproduction_images_gpu.md"
        --figure-dir "$WORK/images" --figure-prefix reproduction_images_gpu)
  echo "== images at $((SECONDS - start)) s (at most $((l - 40)) s): $IMAGES x $IMAGE_OPTIMIZERS"
  if ! run_until $((l - 40)) "$PYTHON" -m experiments.reproduce "${grid[@]}"; then
    echo "== images stopped: report from the runs as far as they got"
    run_until 25 "$PYTHON" -m experiments.reproduce "${grid[@]}" --plot-only >/dev/null
  fi
  tar czf "$OUT/image_runs.tgz" -C "$WORK/images" --exclude='*.pt' --exclude='*.png' --exclude=tensorboard \
    --exclude=.lock --exclude=jobs .
  cp "$WORK/images/"*.png "$WORK/" 2>/dev/null
  pack
}

for phase in $PHASES; do
  case $phase in
    lego) min=$LEGO_MIN ;; speed) min=$SPEED_MIN ;; images) min=$IMAGES_MIN ;;
    *) echo "== unknown phase '$phase' (lego, speed, images)"; continue ;;
  esac
  if [ "$(left)" -lt "$min" ]; then
    echo "== $phase skipped: $(left) s left, it needs at least $min"
    continue
  fi
  "phase_$phase"
done
echo "== done at $((SECONDS - start)) s"
ls -l "$OUT"
tail -c 6000 "$OUT"/lego_*contest.md 2>/dev/null
exit 0
