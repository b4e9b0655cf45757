#!/usr/bin/env bash
# The one command to run on a GPU machine: installs the GPU builds (torch with CUDA, vLLM in .venv-vllm), runs the
# GPU-marked tests, then a 2-iteration loop of an ~85M-parameter testbed model with vLLM sampling and accelerate
# training on every GPU, and prints its throughput (responses/s, tokens/s, pairs/s). Everything it prints is also in
# gpu_check/ (logs, the run's reports).
#   ALIGNLOOP_GPU_CHECK_CPU=1  try the script's steps on a CPU-only machine: no GPU installs, a small model, 2 CPU
#                              processes instead of the GPUs (what CI machines can check of it)
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/gpu_check"
mkdir -p "$out"
cpu="${ALIGNLOOP_GPU_CHECK_CPU:-0}"

if [ "$cpu" = 1 ]; then
  [ -x .venv/bin/python ] || bash scripts/setup.sh
  [ -x .venv-vllm/bin/python ] || bash scripts/setup_vllm.sh
else
  nvidia-smi -L
  ALIGNLOOP_TORCH="torch" bash scripts/setup.sh
  ALIGNLOOP_VLLM="vllm" ALIGNLOOP_TORCH="" bash scripts/setup_vllm.sh
fi
.venv/bin/python -c "import torch; print('torch', torch.__version__, 'CUDA devices:', torch.cuda.device_count())"
if [ "$cpu" != 1 ]; then
  # A CPU torch left in place would skip every GPU test and "pass": stop here instead.
  .venv/bin/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else
    'gpu_check: torch ' + torch.__version__ + ' sees no CUDA device (a CPU build left in .venv? rm -rf .venv and rerun)')"
  export ALIGNLOOP_REQUIRE_GPU=1  # the GPU tests fail, not skip, without CUDA
fi

echo "== GPU-marked tests"
.venv/bin/python -m pytest -n 0 -m gpu -q -rs tests/test_gpu.py 2>&1 | tee "$out/gpu_tests.log"

echo "== 2-iteration loop: vLLM sampling, accelerate training"
project="$out/loop"
rm -rf "$project"
mkdir -p "$project"
cp presets/gpu_check.yaml "$project/params.yaml"
if [ "$cpu" = 1 ]; then
  cp configs/accelerate/cpu_ddp_2proc.yaml "$project/accelerate.yaml"
  .venv/bin/python - "$project/params.yaml" <<'PY'
import sys, yaml
path = sys.argv[1]
params = yaml.safe_load(open(path))
params["model"].update({"n_layer": 2, "n_embd": 64, "n_head": 2, "device": "cpu", "dtype": "float32"})
params["testbed"]["sft_examples"] = 2000
params["sample"]["num_prompts"] = 256
yaml.safe_dump(params, open(path, "w"), sort_keys=False)
PY
else
  gpus=$(nvidia-smi -L | wc -l)
  if [ "$gpus" -gt 1 ]; then
    sed "s/^num_processes: 8.*/num_processes: $gpus/" configs/accelerate/multi_gpu.yaml > "$project/accelerate.yaml"
  else
    cp configs/accelerate/single_gpu.yaml "$project/accelerate.yaml"
  fi
fi
start=$(date +%s)
(cd "$project" && ALIGNLOOP_PROGRESS=0 ../../.venv/bin/alignloop run) 2>&1 | tee "$out/loop.log"
echo "loop wall time: $(( $(date +%s) - start )) s"

echo "== throughput"
.venv/bin/python benchmarks/pipeline_throughput.py --project "$project" --out "$out/throughput.json" \
  | tee "$out/throughput.txt"
