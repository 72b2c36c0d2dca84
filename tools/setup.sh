#!/usr/bin/env bash
# Set up rnnstream on a fresh Debian machine: system libraries, then .venv/ from the locked versions.
#   bash tools/setup.sh          the recognizer (libsndfile comes with the soundfile wheel)
#   bash tools/setup.sh --test   also what the tests need: PulseAudio (virtual microphone), PortAudio, TTS voices
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libportaudio2)
if [[ "${1:-}" == "--test" || "${1:-}" == "--dev" ]]; then
    packages+=(pulseaudio pulseaudio-utils libasound2-plugins alsa-utils sox)
    packages+=(chromium chromium-driver)  # the browser test of `rnnstream serve`'s page (selenium, headless)
fi
if [[ "${1:-}" == "--dev" ]]; then  # training data and the peer system
    packages+=(espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts)
    packages+=(tesseract-ocr)  # the handwriting peer (tools/peer_tesseract.py)
fi
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
    SUDO=$([[ $(id -u) == 0 ]] || echo sudo)
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3.11}
if [[ ! -x .venv/bin/python ]]; then
    "$PY" -m venv .venv
fi
if ! cmp -s requirements.lock .venv/.installed-lock; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -r requirements.lock
    cp requirements.lock .venv/.installed-lock
fi
.venv/bin/pip install -q --no-deps -e .
# The handwriting model's English LMs (models/lm.py), built once into the user's cache (~25 s of one core), so the
# first pen stream does not wait for them.
.venv/bin/python -m tools.build_lm >/dev/null
