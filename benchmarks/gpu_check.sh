#!/usr/bin/env bash
# The prepared GPU check (issue 14, part 3) as one command for a lent GPU machine whose Python
# already holds torch, torchvision and lightning: eager steps first (seconds), then the real
# command line (bf16-mixed + torch.compile on the shapes data), then the compiled micro step.
# Each part has its own time limit, so a slow compile costs that part only; every part writes
# its figures as it goes, and they are gathered into OUT at the end.
#
#   bash benchmarks/gpu_check.sh OUT_DIR
#
# PARTS (default "attention eager e2e compiled"; also "profile", and "compile_check_bf16-mixed"
# / "compile_check_fp32": compiled against eager gradients across batch shapes) picks the parts,
# ATTENTION_S / EAGER_S / E2E_S / COMPILED_S / PROFILE_S / CHECK_S their limits in seconds,
# CHECK_ARGS extra compile_check.py arguments for "attention" and "compile_check_*" (such as
# --dynamic), BENCH_ARGS extra bench_gpu.py arguments (on a CPU: "--device cpu --backbone
# resnet18 --batch 1 --size 64 64 --steps 1").
# "attention" runs bf16 gradients at 48 and 64 tokens with cuDNN's attention kernel and without
# it (utils/attention_backend.py): on a stack with pytorch#196678 the first gives NaN at 64.
#
# Packages the machine lacks (hydra-core, omegaconf, antlr4, pycocotools, faster-coco-eval)
# travel as wheels in .whl/ (see README, "Speed and GPU readiness"); they are installed into
# /tmp/site when that folder exists.
set -u
out=${1:?usage: gpu_check.sh OUT_DIR}
work=/tmp/gpu_check
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1
# Every recompile prints the guard that failed (a few lines each), so the log says why a shape
# compiled another graph.
export TORCH_LOGS=${TORCH_LOGS:-recompiles}
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-}
log=$out/gpu_check.log
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, torchvision, lightning; print('torch', torch.__version__, \
'torchvision', torchvision.__version__, 'lightning', lightning.__version__, \
'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count())"
} 2>&1 | tee "$log"
part() {  # part SECONDS NAME ARGS...: one bench_gpu.py run under its own limit
  local seconds=$1 name=$2
  shift 2
  echo "== $name (limit ${seconds}s) $(date -u +%T)" | tee -a "$log"
  timeout "$seconds" python3 benchmarks/bench_gpu.py --out "$work/$name" "$@" ${BENCH_ARGS:-} 2>&1 |
    tee -a "$log"
  echo "== $name rc ${PIPESTATUS[0]} $(date -u +%T)" | tee -a "$log"
  cp "$work/$name/gpu.json" "$out/$name.json" 2>/dev/null
  cp "$work/$name/profile.txt" "$out/$name.txt" 2>/dev/null
}
parts=" ${PARTS:-attention eager e2e compiled} "
if [[ $parts == *" attention "* ]]; then
  for cudnn in --cudnn-attention ""; do
    state=off && [ -n "$cudnn" ] && state=allowed
    echo "== attention, cuDNN's kernel $state $(date -u +%T)" | tee -a "$log"
    timeout "${ATTENTION_S:-90}" python3 benchmarks/compile_check.py --backend aot_eager \
      --precision bf16-mixed --sizes 192x256,256x256 $cudnn ${CHECK_ARGS:-} 2>&1 | tee -a "$log"
  done
fi
[[ $parts == *" eager "* ]] && part "${EAGER_S:-100}" eager --modes fp32,bf16-mixed,16-mixed
[[ $parts == *" e2e "* ]] &&
  part "${E2E_S:-400}" e2e --modes '' --e2e --e2e-timeout "$((${E2E_S:-400} - 15))"
[[ $parts == *" compiled "* ]] && part "${COMPILED_S:-170}" compiled --modes "compiled bf16-mixed"
[[ $parts == *" profile "* ]] && part "${PROFILE_S:-60}" profile --modes '' --profile bf16-mixed
for precision in bf16-mixed fp32; do  # compiled against eager gradients (compile_check.py)
  [[ $parts == *" compile_check_$precision "* ]] || continue
  echo "== compile_check $precision $(date -u +%T)" | tee -a "$log"
  timeout "${CHECK_S:-230}" python3 benchmarks/compile_check.py --precision "$precision" \
    ${CHECK_ARGS:-} 2>&1 |
    tee -a "$log"
done
metrics=$(ls "$work"/e2e/e2e_gpu/csv/*/metrics.csv "$work"/e2e/e2e_gpu/csv/metrics.csv \
  2>/dev/null | tail -1)
[ -n "$metrics" ] && cp "$metrics" "$out/e2e_metrics.csv"
ls "$out"
