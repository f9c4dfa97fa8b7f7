#!/usr/bin/env bash
# LibriSpeech 100 h: download + prepare -> train -> decode test-clean and test-other.
# Usage: LIBRISPEECH_DIR=/big/disk/librispeech bash recipes/librispeech/run.sh [config overrides]
set -euo pipefail
ASR=${ASR:-asr}
LIBRISPEECH_DIR=${LIBRISPEECH_DIR:-data/raw/librispeech}
$ASR prepare librispeech --data-dir "$LIBRISPEECH_DIR" --out data/librispeech --download \
    --train-subsets train-clean-100 --dev-subsets dev-clean --test-subsets test-clean
$ASR prepare librispeech --data-dir "$LIBRISPEECH_DIR" --out data/librispeech/test_other --download \
    --test-subsets test-other
$ASR train --config recipes/librispeech/conf.yaml "$@"
$ASR evaluate --model exp/librispeech/model.pt --manifest data/librispeech/test.jsonl --beam-size 10
$ASR evaluate --model exp/librispeech/model.pt --manifest data/librispeech/test_other/test.jsonl --beam-size 10 \
    --out exp/librispeech/decode/test_other_beam10.jsonl
