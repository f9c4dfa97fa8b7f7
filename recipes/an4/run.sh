#!/usr/bin/env bash
# CMU AN4: prepare -> TTS augmentation -> train -> decode. The test part (an4test_clstk) is decoded when the data
# folder has it; otherwise the held-out dev speakers are (optimistic: dev also picked the checkpoint).
# Usage: AN4_DIR=path/to/an4 bash recipes/an4/run.sh [config overrides]
#        (without AN4_DIR and without ../shared/data/an4: downloads an4_sphere.tar.gz from CMU into data/raw/an4)
#        TTS=0 bash recipes/an4/run.sh     trains on the real recordings only (no eSpeak NG needed)
set -euo pipefail
ASR=${ASR:-asr}
TTS=${TTS:-1}
if [ -n "${AN4_DIR:-}" ] || [ -d ../shared/data/an4 ]; then
    $ASR prepare an4 --data-dir "${AN4_DIR:-../shared/data/an4}" --out data/an4
else
    $ASR prepare an4 --data-dir data/raw/an4 --out data/an4 --download
fi
if [ "$TTS" = 1 ]; then
    # Two eSpeak NG renditions of every training transcript in random voices (needs the `corpus` extra):
    # data/an4_tts/mixed.jsonl = the real recordings + them, the config's training manifest.
    $ASR prepare tts --texts data/an4/train.jsonl --out data/an4_tts --copies 2 --spell-letters
    $ASR train --config recipes/an4/conf.yaml "$@"
else
    $ASR train --config recipes/an4/conf.yaml data.train_manifest=data/an4/train.jsonl "$@"
fi
if [ -f data/an4/test.jsonl ]; then
    $ASR evaluate --model exp/an4/model.pt --manifest data/an4/test.jsonl --beam-size 5
else
    echo "no AN4 test part here: decoding the dev speakers instead"
    $ASR evaluate --model exp/an4/model.pt --manifest data/an4/dev.jsonl --beam-size 5
fi
