#!/usr/bin/env bash
# Unseen-speaker evaluation on FSDD: for each of the speakers, train on the others and test on all of that
# speaker's recordings. Prints a WER table (beam 5 + CTC). Usage:
#   MINUTES=10 bash recipes/fsdd/unseen_speakers.sh [config overrides]     (FSDD_DIR defaults to ../shared/data/fsdd)
# SPEAKERS="george lucas" picks held-out speakers; OUT=exp/fsdd_unseen_vtlp keeps a variant's models and table apart;
# TTS=N adds N eSpeak NG copies of every training transcript, in random synthetic voices (`corpus` extra).
# EXTRA=data/an4_rest4k/train.jsonl adds another corpus's training manifest (more speakers; see README.md).
# CONNECTED=0.5 joins that share of the training utterances as connected speech (`asr prepare fsdd --connected`).
# Each model is also decoded with test-time VTLN over VTLN_WARPS (5 searches; VTLN_WARPS= skips it).
set -euo pipefail
ASR=${ASR:-asr}
FSDD_DIR=${FSDD_DIR:-../shared/data/fsdd}
MINUTES=${MINUTES:-10}
SPEAKERS=${SPEAKERS:-"george jackson lucas nicolas yweweler"}
OUT=${OUT:-exp/fsdd_unseen}
TTS=${TTS:-0}
CONNECTED=${CONNECTED:-0}
EXTRA=${EXTRA:-}
VTLN_WARPS=${VTLN_WARPS-0.92,0.96,1,1.04,1.08}
table=$OUT/results.md
mkdir -p $OUT
echo "| held-out speaker | test WER (beam 5 + CTC) | CER | + test-time VTLN: WER | CER | train minutes | TTS copies |" > $table
echo "| --- | --- | --- | --- | --- | --- | --- |" >> $table
for spk in $SPEAKERS; do
    data=data/fsdd_unseen_$spk
    if [ "$CONNECTED" != 0 ]; then data=${data}_conn$CONNECTED; fi  # its own folder: other training utterances
    $ASR prepare fsdd --data-dir "$FSDD_DIR" --out $data --held-out-speakers $spk --connected $CONNECTED
    train=$data/train.jsonl
    if [ "$TTS" -gt 0 ]; then
        $ASR prepare tts --texts $train --out ${data}_tts$TTS --copies $TTS
        train=${data}_tts$TTS/mixed.jsonl  # the real recordings + the synthetic copies
    fi
    if [ -n "$EXTRA" ]; then train=$train,$EXTRA; fi  # read as one manifest
    $ASR train --config recipes/fsdd/conf.yaml train.out_dir=$OUT/$spk train.max_minutes=$MINUTES \
        data.train_manifest=$train data.dev_manifest=$data/dev.jsonl \
        data.test_manifest=$data/test.jsonl train.progress_bar=false "$@"
    out=$($ASR evaluate --model $OUT/$spk/model.pt --manifest $data/test.jsonl --beam-size 5)
    echo "$out"
    wer=$(echo "$out" | sed -n 's/^WER \([0-9.]*\)%.*/\1/p')
    cer=$(echo "$out" | sed -n 's/.*CER \([0-9.]*\)%.*/\1/p')
    vwer=-; vcer=-
    if [ -n "$VTLN_WARPS" ]; then
        out=$($ASR evaluate --model $OUT/$spk/model.pt --manifest $data/test.jsonl --beam-size 5 \
            --vtln-warps $VTLN_WARPS)
        echo "$out"
        vwer=$(echo "$out" | sed -n 's/^WER \([0-9.]*\)%.*/\1%/p')
        vcer=$(echo "$out" | sed -n 's/.*CER \([0-9.]*\)%.*/\1%/p')
    fi
    echo "| $spk | $wer% | $cer% | $vwer | $vcer | $MINUTES | $TTS |" >> $table
done
cat $table
