# Sourced by the device scripts here: the machine and versions into the log, the carried wheels installed
# (bash benchmarks/gpu/prepare.sh made them), Python pointed at them and at this checkout. Sourcing it a second
# time in the same environment (a script calling another) does nothing.
#   PYTHON       the interpreter the scripts run (python3: the GPU image's)
#   SKIP_WHEELS  1: install nothing (a development machine that has nerfstudio: rehearsals)
PYTHON=${PYTHON:-python3}
if [ -z "${GNERF_DEVICE_ENV:-}" ]; then
  date -u; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  if [ "${SKIP_WHEELS:-0}" = 1 ]; then
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  else
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
  fi
  export PYTHON PYTHONUNBUFFERED=1 GNERF_DEVICE_ENV=1
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
    torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
fi

# run_until S CMD...: run CMD in a process group of its own; after S seconds stop the whole group (SIGTERM, which the
# lego scripts turn into KeyboardInterrupt to write what they have; SIGKILL 10 s later) and return 124. A job
# engine's children go with it. (SIGTERM, not SIGINT: a script's background commands ignore SIGINT.)
run_until() {
  local limit=$1 begun=$SECONDS pid
  shift
  if [ "$limit" -le 0 ]; then return 124; fi
  if command -v setsid >/dev/null; then setsid "$@" & else "$@" & fi  # without setsid: the process alone
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if [ $((SECONDS - begun)) -ge "$limit" ]; then
      echo "== stopped after ${limit} s: $*"
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
      for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
      return 124
    fi
    sleep 1
  done
  wait "$pid"
}
