#!/usr/bin/env bash
# Mozilla Common Voice, one language: prepare (the download is manual, see README.md) -> train -> decode test.tsv.
# Usage: CV_DIR=path/to/cv-corpus-XX/<lang> bash recipes/commonvoice/run.sh [config overrides]
set -euo pipefail
ASR=${ASR:-asr}
: "${CV_DIR:?set CV_DIR to a Common Voice language folder (the one holding train.tsv and clips/)}"
$ASR prepare commonvoice --data-dir "$CV_DIR" --out data/commonvoice
$ASR train --config recipes/commonvoice/conf.yaml "$@"
$ASR evaluate --model exp/commonvoice/model.pt --manifest data/commonvoice/test.jsonl --beam-size 10
