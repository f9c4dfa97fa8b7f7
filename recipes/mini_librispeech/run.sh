#!/usr/bin/env bash
# Mini LibriSpeech: download + prepare (train-clean-5, dev-clean-2, LibriSpeech test-clean) -> train -> decode.
# Usage: MINI_LIBRISPEECH_DIR=path bash recipes/mini_librispeech/run.sh [config overrides]
set -euo pipefail
ASR=${ASR:-asr}
MINI_LIBRISPEECH_DIR=${MINI_LIBRISPEECH_DIR:-data/raw/mini_librispeech}
$ASR prepare mini_librispeech --data-dir "$MINI_LIBRISPEECH_DIR" --out data/mini_librispeech --download
$ASR train --config recipes/mini_librispeech/conf.yaml "$@"
$ASR evaluate --model exp/mini_librispeech/model.pt --manifest data/mini_librispeech/test.jsonl --beam-size 10
