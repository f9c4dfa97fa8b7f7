#!/usr/bin/env bash
# The embedded default corpus: synthetic English speech from eSpeak NG (generated, nothing downloaded).
# prepare -> train -> decode the held-out voices with beam search -> WER/CER.   Usage: bash recipes/synth/run.sh [overrides]
set -euo pipefail
ASR=${ASR:-asr}
$ASR prepare synth --out data/synth
$ASR train --config recipes/synth/conf.yaml "$@"
$ASR evaluate --model exp/synth/model.pt --manifest data/synth/test.jsonl --beam-size 5
