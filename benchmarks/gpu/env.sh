# Sourced by the device scripts here: the machine and versions into the log, the carried wheels installed
# (bash benchmarks/gpu/prepare.sh made them), Python pointed at them and at this checkout.
date -u; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
  torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
