#!/usr/bin/env bash
# CI stage: the verl integration in its own fresh virtualenv (verl 0.9.1 pins transformers<5.11 and ray, which
# cannot share a venv with ospo-gym's dev dependencies). torch first (the CPU wheel), then verl and its pins, then
# ospo-gym with the agents extra; the verl tests run on the CPU without Ray or a GPU. Any skip fails the stage.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE_START=$SECONDS
VERL_VENV="${CI_VERL_VENV:-$(mktemp -d)/venv-verl}"
python3.11 -m venv "$VERL_VENV"
# shellcheck disable=SC1091
source "$VERL_VENV/bin/activate"
python -m pip install --quiet --upgrade pip
pip install --quiet torch==2.13.0
# cachetools / uvicorn / fastapi: verl's trainer modules import them (its verl-core extra) but it does not require them
pip install --quiet 'verl==0.9.1' 'transformers<5.11' cachetools uvicorn fastapi 'pytest>=8'
pip install --quiet -e ".[agents]"   # agents' transformers>=4.45 accepts verl's 5.10
python - <<'PY'
import torch, transformers, verl
print(f"verl {verl.__version__}, torch {torch.__version__}, transformers {transformers.__version__}")
PY
VERL_LOG="$(mktemp)"
python -m pytest -q -rs -p no:cacheprovider -m "slow or not slow" tests/integrations/test_integrations_verl.py \
    tests/integrations/test_integrations_verl_conversation.py 2>&1 \
    | tee "$VERL_LOG"
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then exit "$status"; fi
if grep -qiE "[0-9]+ skipped|^SKIPPED" "$VERL_LOG"; then
    echo "verl stage: tests were skipped; they must run" >&2
    exit 1
fi
echo "verl stage: $((SECONDS - STAGE_START)) s"
