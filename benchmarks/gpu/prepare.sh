#!/usr/bin/env bash
# Prepare, on a development machine with PyPI, what the scripts here (lego_convergence.py, lego_contest.py,
# session.sh, speed.sh, contest.sh) need on a lent GPU machine that reaches no registry (see benchmarks/gpu/README.md):
#   .whl/       nerfstudio 1.1.5 and the packages its import chain for gnerf's methods needs that the GPU image
#               lacks, as CPython 3.12 x86-64 / pure-Python wheels (installed there with --no-deps); the optimizers
#               of the image contest (heavyball, schedulefree)
#   .gpu-data/  lego (Blender format, 400x400): the 100 training views and test views r_0, r_50, r_100, r_150;
#               with OCCUPANCY=1, shapes/bunny.obj and shapes/dragon.obj for experiments/reproduce.py --tasks occupancy
#               (benchmarks/gpu/README.md, shapes), and the wheels of trimesh and libigl in .whl/;
#               images/kodak/kodim01-04.png for experiments/reproduce.py --tasks image (contest.sh, images)
# Both folders are ignored through the repository's info/exclude (not .gitignore): the device tool carries an
# ignored folder only when `carry` names it. Prints the sizes against the 64 MiB a device call carries.
#
#   bash benchmarks/gpu/prepare.sh              # lego from ../shared/data/nerf_synthetic/lego
#   LEGO=path/to/lego bash benchmarks/gpu/prepare.sh
#   OCCUPANCY=1 bash benchmarks/gpu/prepare.sh  # also what the shapes' call needs (16.9 MiB more)
set -euo pipefail

ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$ROOT"
LEGO=${LEGO:-../shared/data/nerf_synthetic/lego}
PYTHON=${PYTHON:-python3}
OCCUPANCY=${OCCUPANCY:-0}

# The GPU image (KINDS.md) has torch, numpy, matplotlib, imageio, rich, tensorboard, torchmetrics, jaxtyping,
# scipy, opencv, requests, pyyaml, tqdm, ... but none of these. Each is imported when benchmarks.recipes,
# method_configs.gnerf_methods and nerfstudio.engine.trainer are (the trainer imports the viewer, which imports
# splatfacto and so gsplat; the datamanager imports every dataparser, and so rawpy and pyquaternion). Not
# nerfstudio.scripts.train, which would add fpsample and pathos (+ multiprocess, ppft, dill, pox).
WHEELS=(
  nerfstudio==1.1.5
  tyro==1.0.17 docstring_parser==0.18.0 typeguard==4.6.1          # nerfstudio's configs
  viser==0.2.7 msgspec==0.22.0 websockets==17.4                   # nerfstudio.viewer (imported by cameras, trainer)
  gsplat==1.4.0 pytorch_msssim==1.0.0 tensorly==0.10.0            # splatfacto (imported by the viewer); CUDA built lazily, never here
  nerfacc==0.5.2 splines==0.3.0                                   # renderers, samplers; the viewer's render panel
  appdirs==1.4.4 rawpy==0.28.0 pyquaternion==0.9.9                # dataparsers that the datamanager config imports
  fpsample==0.3.3 pathos==0.3.5 ppft==1.7.8 multiprocess==0.70.19 dill==0.4.1 pox==0.3.7  # vanilla-nerf-coarse:
                                                                  # nerfstudio's method_configs imports every datamanager
  submitit==1.5.4 cloudpickle==3.1.3                              # experiments.reproduce runs each fitting run as a job
  heavyball==3.2.1 schedulefree==1.4.1                            # the image contest's soap, psgd-kron, schedulefree-adamw
)                                                                 # (heavyball's numpy and opt-einsum are in the image)
# occupancy fitting (benchmarks/gpu/README.md, shapes): mesh loading, labels; only for the shapes' call, since the
# contest's call carries the whole working tree beside these within the device's 64 MiB
if [ "$OCCUPANCY" = 1 ]; then WHEELS+=(trimesh==5.2.0 libigl==2.6.3); fi
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
for pattern in /.whl/ /.gpu-data/; do
  grep -qxF "$pattern" "$exclude" 2>/dev/null || echo "$pattern" >> "$exclude"
done

# .whl/ holds exactly this set: two versions of one package would stop the install there.
mkdir -p .whl
rm -f .whl/*.whl
for spec in "${WHEELS[@]}"; do
  "$PYTHON" -m pip download -q --no-deps "${PLATFORM[@]}" -d .whl "$spec" 2>&1 | grep -v "is ignored" || true
  name=${spec%%==*}
  ls .whl/ | grep -qi "^${name//[-_]/[-_]}-${spec##*==}-" || { echo "error: no wheel for $spec in .whl/" >&2; exit 1; }
done

# lego: train split whole, four test views (the views the benchmark evaluates), one transforms file each.
[ -f "$LEGO/transforms_train.json" ] || { echo "error: $LEGO is not the Blender lego scene (set LEGO=...)" >&2; exit 1; }
rm -rf .gpu-data/lego
mkdir -p .gpu-data/lego/train .gpu-data/lego/test
"$PYTHON" - "$LEGO" .gpu-data/lego <<'EOF'
import json, shutil, sys
from pathlib import Path

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for split, keep in (("train", None), ("test", ["./test/r_0", "./test/r_50", "./test/r_100", "./test/r_150"])):
    meta = json.loads((src / f"transforms_{split}.json").read_text())
    frames = meta["frames"] if keep is None else [f for k in keep for f in meta["frames"] if f["file_path"] == k]
    assert keep is None or len(frames) == len(keep), f"{split}: views missing from {src}"
    for f in frames:
        name = f["file_path"].removeprefix("./") + ".png"
        shutil.copyfile(src / name, dst / name)
    (dst / f"transforms_{split}.json").write_text(json.dumps({**meta, "frames": frames}, indent=1))
    print(f"lego {split}: {len(frames)} views")
EOF

# the paper's two shapes, where experiments/reproduce.py --data-dir .gpu-data looks for them (OCCUPANCY=1)
SHAPES=${SHAPES:-../shared/data/shapes}
rm -rf .gpu-data/shapes
if [ "$OCCUPANCY" = 1 ]; then
  mkdir -p .gpu-data/shapes
  for shape in bunny dragon; do
    [ -f "$SHAPES/$shape.obj" ] || { echo "error: no $SHAPES/$shape.obj (set SHAPES=...)" >&2; exit 1; }
    cp "$SHAPES/$shape.obj" .gpu-data/shapes/
  done
  echo "shapes: $(ls .gpu-data/shapes | tr '\n' ' ')"
fi

# the image contest's four Kodak photos (contest.sh resizes them to 256x256, as the paper's protocol does)
KODAK=${KODAK:-../shared/data/images/kodak}
mkdir -p .gpu-data/images/kodak
for photo in kodim01 kodim02 kodim03 kodim04; do
  [ -f "$KODAK/$photo.png" ] || { echo "error: no $KODAK/$photo.png (set KODAK=...)" >&2; exit 1; }
  cp "$KODAK/$photo.png" .gpu-data/images/kodak/
done
echo "images: $(ls .gpu-data/images/kodak | tr '\n' ' ')"

wheels=$(du -cb .whl/*.whl | tail -1 | cut -f1)
data=$(du -sb .gpu-data | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
ls -l .whl | awk 'NR > 1 { printf "  %9d  %s\n", $5, $9 }'
echo "wheels .whl/:        $(mib "$wheels") ($(ls .whl/*.whl | wc -l) files)"
echo "data .gpu-data/:     $(mib "$data") (lego, Kodak photos; the shapes with OCCUPANCY=1)"
echo "working tree:        $(mib $((tree + ${untracked:-0}))) (tracked and untracked files)"
echo "total carried:       $(mib $((wheels + data + tree + ${untracked:-0}))) of the 64 MiB a device call takes"
