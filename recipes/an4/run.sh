#!/usr/bin/env bash
# CMU AN4: prepare -> train -> decode. The test part (an4test_clstk) is decoded when the data folder has it;
# otherwise the held-out dev speakers are (optimistic: dev also picked the checkpoint).
# Usage: AN4_DIR=path/to/an4 bash recipes/an4/run.sh [config overrides]
#        (without AN4_DIR and without ../shared/data/an4: downloads an4_sphere.tar.gz from CMU into data/raw/an4)
set -euo pipefail
ASR=${ASR:-asr}
if [ -n "${AN4_DIR:-}" ] || [ -d ../shared/data/an4 ]; then
    $ASR prepare an4 --data-dir "${AN4_DIR:-../shared/data/an4}" --out data/an4
else
    $ASR prepare an4 --data-dir data/raw/an4 --out data/an4 --download
fi
$ASR train --config recipes/an4/conf.yaml "$@"
if [ -f data/an4/test.jsonl ]; then
    $ASR evaluate --model exp/an4/model.pt --manifest data/an4/test.jsonl --beam-size 5
else
    echo "no AN4 test part here: decoding the dev speakers instead"
    $ASR evaluate --model exp/an4/model.pt --manifest data/an4/dev.jsonl --beam-size 5
fi
