#!/usr/bin/env bash
# FSDD connected digits: prepare -> train -> decode the conventional test indices (0-4).
# Usage: FSDD_DIR=/path/to/free-spoken-digit-dataset bash recipes/fsdd/run.sh [config overrides]
set -euo pipefail
ASR=${ASR:-asr}
FSDD_DIR=${FSDD_DIR:-../shared/data/fsdd}
# --connected 0.5: half the training utterances joined as connected speech (README: cross-corpus, 27.5% -> 22.5%)
$ASR prepare fsdd --data-dir "$FSDD_DIR" --out data/fsdd --connected 0.5
$ASR train --config recipes/fsdd/conf.yaml "$@"
$ASR evaluate --model exp/fsdd/model.pt --manifest data/fsdd/test.jsonl --beam-size 5
