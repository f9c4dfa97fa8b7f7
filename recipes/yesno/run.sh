#!/usr/bin/env bash
# yesno: download (4.5 MB) + prepare -> train (a few minutes on a CPU) -> decode.
# Usage: YESNO_DIR=path bash recipes/yesno/run.sh [config overrides]
set -euo pipefail
ASR=${ASR:-asr}
YESNO_DIR=${YESNO_DIR:-data/raw/yesno}
$ASR prepare yesno --data-dir "$YESNO_DIR" --out data/yesno --download
$ASR train --config recipes/yesno/conf.yaml "$@"
$ASR evaluate --model exp/yesno/model.pt --manifest data/yesno/test.jsonl --beam-size 5
