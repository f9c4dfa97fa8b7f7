"""Command line: `asr prepare | train | transcribe | evaluate`.

    asr prepare fsdd --data-dir ../shared/data/fsdd --out data/fsdd
    asr train --config recipes/fsdd/conf.yaml [--resume] [section.key=value ...]
    asr transcribe --model exp/fsdd/model.pt [--beam-size N] a.wav [b.flac ...]
    asr evaluate --model exp/fsdd/model.pt --manifest data/fsdd/test.jsonl [--beam-size N] [--out hyps.jsonl]
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

log = logging.getLogger("asr")


def _split_overrides(extra: list[str]) -> list[str]:
    """Accept `a.b=v`, `--a.b=v` and `--a.b v` for config overrides."""
    out, i = [], 0
    while i < len(extra):
        item = extra[i]
        if item.startswith("--") and "=" not in item:
            if i + 1 >= len(extra):
                raise SystemExit(f"error: override {item} has no value")
            item = f"{item}={extra[i + 1]}"
            i += 1
        out.append(item.lstrip("-"))
        i += 1
    return out


def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    from asr.config import load_config
    from asr.training import train

    cfg = load_config(args.config, _split_overrides(extra))
    path = train(cfg, resume=args.resume)
    print(f"model: {path}")
    return 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    from asr.audio import AudioError, load_audio
    from asr.recognizer import load_model

    rec = load_model(args.model, device=args.device)
    sr = rec.cfg.features.sample_rate
    wavs, names, failed = [], [], 0
    for path in args.audio:
        try:
            wavs.append(load_audio(path, sr))
            names.append(path)
        except AudioError as e:  # one bad file does not stop the others
            print(f"error: {e}", file=sys.stderr)
            failed += 1
    if wavs:
        texts = rec.recognize_waveforms(wavs, beam_size=args.beam_size, ctc_weight=args.ctc_weight)
        for name, text in zip(names, texts):
            print(f"{name}\t{text}", flush=True)
    return 1 if failed else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from asr.evaluation import evaluate, write_hypotheses
    from asr.recognizer import load_model

    rec = load_model(args.model, device=args.device)
    beam = rec.cfg.decode.beam_size if args.beam_size is None else args.beam_size
    ctc_weight = rec.decode_ctc_weight if args.ctc_weight is None else args.ctc_weight
    result = evaluate(rec, args.manifest, beam_size=beam, batch_size=args.batch_size, ctc_weight=ctc_weight)
    r = result.rates
    name = f"{Path(args.manifest).stem}_beam{beam}" + (f"_ctc{ctc_weight:g}" if beam > 1 and ctc_weight > 0 else "")
    out = Path(args.out) if args.out else Path(args.model).parent / "decode" / f"{name}.jsonl"
    write_hypotheses(out, result)
    decoder = "greedy attention" if beam <= 1 else f"beam {beam}"
    if beam > 1:
        decoder += f", CTC weight {ctc_weight:g}" if ctc_weight > 0 else ", attention only"
    print(f"{args.manifest}: {r.sentences} utterances, {decoder}, text normalisation: lower-case, no punctuation")
    print(f"WER {r.wer:.2f}%  CER {r.cer:.2f}%  (substitutions {r.substitutions}, deletions {r.deletions}, "
          f"insertions {r.insertions}, reference words {r.ref_words})")
    print(f"real-time factor {result.rtf:.4f} ({result.decode_seconds:.1f} s for {result.audio_seconds:.0f} s of audio)")
    if result.skipped:
        print(f"{len(result.skipped)} unreadable files skipped (listed above)")
    print(f"hypotheses: {out}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    if args.corpus == "fsdd":
        from asr.data.fsdd import FSDDConfig, prepare_fsdd

        if not args.data_dir:
            raise SystemExit("error: asr prepare fsdd needs --data-dir (the folder with FSDD's recordings/)")
        cfg = FSDDConfig(seed=args.seed, held_out_speakers=args.held_out_speakers or [])
        for name in ("n_train", "n_dev", "n_test"):
            if getattr(args, name) is not None:
                setattr(cfg, name, getattr(args, name))
        manifests = prepare_fsdd(args.data_dir, args.out, cfg)
    elif args.corpus == "synth":
        from asr.data.synth import prepare_synth

        kw = {k: getattr(args, k) for k in ("n_train", "n_dev", "n_test") if getattr(args, k) is not None}
        manifests = prepare_synth(args.out, seed=args.seed, **kw)
    else:  # argparse choices make this unreachable
        raise SystemExit(f"error: unknown corpus {args.corpus}")
    for split, path in manifests.items():
        print(f"{split}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asr", description="Speech-Transformer ASR toolkit")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a recipe config; extra args override config values",
                       epilog="overrides: section.key=value, e.g. model.d_model=256 train.max_epochs=10")
    t.add_argument("--config", required=True, help="recipe YAML (e.g. recipes/fsdd/conf.yaml)")
    t.add_argument("--resume", action="store_true", help="continue from <out_dir>/checkpoints/last.ckpt")

    tr = sub.add_parser("transcribe", help="print one line per audio file: path<TAB>text")
    tr.add_argument("--model", required=True)
    tr.add_argument("--beam-size", type=int, default=None, help="1 = greedy (default: the model's decode config)")
    tr.add_argument("--ctc-weight", type=float, default=None, help="joint CTC/attention weight for beam search")
    tr.add_argument("--device", default="cpu")
    tr.add_argument("audio", nargs="+")

    e = sub.add_parser("evaluate", help="decode a manifest, print WER/CER, write per-utterance hypotheses")
    e.add_argument("--model", required=True)
    e.add_argument("--manifest", required=True)
    e.add_argument("--beam-size", type=int, default=None, help="1 = greedy (default: the model's decode config)")
    e.add_argument("--ctc-weight", type=float, default=None, help="joint CTC/attention weight for beam search")
    e.add_argument("--batch-size", type=int, default=None)
    e.add_argument("--out", default=None, help="hypotheses JSONL (default: next to the model, in decode/)")
    e.add_argument("--device", default="cpu")

    pr = sub.add_parser("prepare", help="build train/dev/test manifests for a corpus")
    pr.add_argument("corpus", choices=["fsdd", "synth"])
    pr.add_argument("--data-dir", help="where the corpus is (fsdd: the folder holding recordings/)")
    pr.add_argument("--out", required=True, help="output folder for wavs and manifests")
    pr.add_argument("--n-train", type=int)
    pr.add_argument("--n-dev", type=int)
    pr.add_argument("--n-test", type=int)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--held-out-speakers", nargs="*", help="fsdd: speakers kept out of train/dev (test only)")
    return p


def main(argv: list[str] | None = None) -> int:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from asr.audio import AudioError
    from asr.config import ConfigError
    from asr.data.manifest import ManifestError

    try:
        if args.command == "train":
            return cmd_train(args, extra)
        return {"transcribe": cmd_transcribe, "evaluate": cmd_evaluate, "prepare": cmd_prepare}[args.command](args)
    except (ConfigError, ManifestError, AudioError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
