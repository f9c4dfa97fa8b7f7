#!/usr/bin/env bash
# LJSpeech 1.1: download + prepare -> train -> decode the last 250 utterances.
# Usage: LJSPEECH_DIR=path bash recipes/ljspeech/run.sh [config overrides]
set -euo pipefail
ASR=${ASR:-asr}
LJSPEECH_DIR=${LJSPEECH_DIR:-data/raw/ljspeech}
$ASR prepare ljspeech --data-dir "$LJSPEECH_DIR" --out data/ljspeech --download
$ASR train --config recipes/ljspeech/conf.yaml "$@"
$ASR evaluate --model exp/ljspeech/model.pt --manifest data/ljspeech/test.jsonl --beam-size 10
