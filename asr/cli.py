"""Command line: argument parsing; the work is done by the modules each command names.

    asr prepare CORPUS --data-dir DIR --out OUT [--download] [corpus options]     (asr prepare --help: the corpora)
    asr train --config recipes/fsdd/conf.yaml [--resume] [section.key=value ...]      asr.training.train
    asr transcribe --model M [decode flags] [--format txt|json|srt|vtt] [--out-dir D] a.wav folder/ m.jsonl
                                                                                      asr.transcribe
    asr evaluate --model M --manifest test.jsonl [decode flags] [--out hyps.jsonl]    asr.benchmark.run.evaluate
    asr benchmark --models A.pt B.pt --sets test.jsonl --decoders greedy,beam10,ctc [--by speaker] [--out DIR]
    asr train-lm --model M --manifest train.jsonl --out lm.pt [--minutes 2]           asr.lm
    asr serve --model M [decode flags] [--host 127.0.0.1] [--port 8000] [--api-key K]  asr.serve
    asr validate MANIFEST... [--audio]                                                asr.data.validate

Decode flags (transcribe, evaluate, serve): --decoder NAME[:key=value,...], --beam-size, --ctc-weight, --lm/--lm-weight,
--length-penalty, --max-len-ratio, --vtln-warps, --batch-size, --device; they become one DecodingOptions
(asr/decoding/options.py), and a flag that contradicts another is an error naming both.
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

    overrides = _split_overrides(extra) + ([f"train.init_from={args.init_from}"] if args.init_from else [])
    cfg = load_config(args.config, overrides)
    path = train(cfg, resume=args.resume)
    print(f"model: {path}")
    return 0


# --- decoding flags, defined once for transcribe, evaluate and benchmark -------------------------------------------

# Flags that set a DecodingOptions field (asr/decoding/options.py), with how they parse and what they say.
SEARCH_FLAGS = {
    "beam_size": (int, "beam width (with the beam decoder; default: the model's decode.beam_size)"),
    "ctc_weight": (float, "weight of the CTC prefix score in beam search (default: the model's; 0 = attention only)"),
    "lm_weight": (float, "shallow fusion weight of the --lm in beam search (default: the model's decode.lm_weight)"),
    "length_penalty": (float, "beam search ranks by score / (tokens + 1) ** this (default: the model's)"),
    "max_len_ratio": (float, "at most this many tokens per encoder frame (default: the model's)"),
    "vtln_warps": (
        str,
        "test-time VTLN: decode at each of these comma-separated frequency-warp factors and keep each utterance's "
        "best-scoring text, e.g. 0.92,0.96,1,1.04,1.08 (5x the search; for models trained with data.vtlp)",
    ),
}


def _add_runtime_flags(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=int, default=None, help=f"{what} decoded at once (default: the model's)")
    p.add_argument("--lm", default=None, help="token LM file (asr train-lm) for shallow fusion in beam search")


def _add_decode_flags(p: argparse.ArgumentParser, what: str) -> None:
    """--decoder and the option flags of transcribe and evaluate, plus --device, --batch-size, --lm."""
    from asr.decoding.options import known_decoders

    p.add_argument(
        "--decoder",
        default=None,
        help=f"{known_decoders()}, or a setup such as beam10:ctc_weight=0.5 (default: the model's decode.decoder, "
        "normally beam; see asr benchmark --help)",
    )
    for name, (typ, text) in SEARCH_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=None, help=text)
    _add_runtime_flags(p, what)


def _load_recognizer(args: argparse.Namespace):
    """--model on --device, with --lm attached; an export folder (asr export) runs on asr.runtime instead."""
    from asr.recognizer import load_model

    if Path(args.model).is_dir():
        return _load_runtime(args)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: CUDA is not available here (use --device cpu)")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    rec = load_model(args.model, device=args.device)
    if args.lm is not None:
        from asr.lm import load_lm

        try:
            rec.attach_lm(load_lm(args.lm, device=args.device))
        except ValueError as e:
            raise ValueError(f"--lm {args.lm} with --model {args.model}: {e}") from None
    return rec


def _load_runtime(args: argparse.Namespace):
    from asr.runtime import Runtime

    if args.device != "cpu":
        raise ValueError(f"--device {args.device}: an export folder runs on ONNX Runtime's CPU provider (--device cpu)")
    if args.lm is not None:
        raise ValueError(
            f"--lm: an export folder carries its own LM (--model {args.model}); export one with it: "
            "asr export --model M --lm LM.pt --out DIR"
        )
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    return Runtime(args.model)


def _decoding_options(rec, args: argparse.Namespace):
    """The decode flags -> the model's DecodingOptions; contradictions are errors naming both flags."""
    from asr.decoding.options import flag

    given = {name: getattr(args, name) for name in SEARCH_FLAGS}
    if given["vtln_warps"] is not None:
        try:
            given["vtln_warps"] = tuple(float(x) for x in given["vtln_warps"].split(",") if x.strip())
        except ValueError:
            raise ValueError(f"--vtln-warps must be comma-separated numbers, got {args.vtln_warps!r}") from None
    options = rec.options(spell=flag, decoder=args.decoder, **given)
    if args.lm is not None and options.lm_weight == 0:
        if options.decoder != "beam":
            raise ValueError(f"--lm applies to beam search, not to --decoder {options.decoder}")
        log.warning("warning: --lm without --lm-weight and the model's decode.lm_weight is 0: the LM is not used")
    return options


def _add_chunk_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-chunk-seconds", type=float, default=None, help="longest chunk decoded at once (default 20)")


def _check_chunk_seconds(args: argparse.Namespace) -> None:
    from asr.segment import MIN_CHUNK_SECONDS

    if args.max_chunk_seconds is not None and not args.max_chunk_seconds >= MIN_CHUNK_SECONDS:
        raise ValueError(f"--max-chunk-seconds must be at least {MIN_CHUNK_SECONDS}, got {args.max_chunk_seconds}")


def cmd_transcribe(args: argparse.Namespace) -> int:
    from asr.transcribe import find_inputs, transcribe_inputs

    _check_chunk_seconds(args)
    rec = _load_recognizer(args)
    options = _decoding_options(rec, args)
    items, errors = find_inputs(args.audio)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    out_dir = Path(args.out_dir) if args.out_dir else None
    failed = len(errors) + transcribe_inputs(
        rec, items, options, args.format, out_dir, args.batch_size, args.max_chunk_seconds
    )
    if out_dir is not None:
        log.info("wrote %d %s files to %s", len(items) - failed + len(errors), args.format, out_dir)
    if failed:
        print(f"{failed} input(s) failed (see the errors above)", file=sys.stderr)
    return 1 if failed else 0


def _model_name(path: Path) -> str:
    """What /v1/models calls a model file: its stem, or its folder's name for the usual exp/NAME/model.pt."""
    return path.resolve().parent.name if path.stem == "model" and path.resolve().parent.name else path.stem


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    try:
        from asr.serve import ServeConfig, serve
    except ImportError as e:
        raise ImportError(f"asr serve needs the serve extra: pip install -e '.[serve]' ({e})") from None
    _check_chunk_seconds(args)
    for name in ("max_wait_ms", "max_upload_mb", "max_audio_seconds"):
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.max_queue < 1:
        raise ValueError(f"--max-queue must be at least 1, got {args.max_queue}")
    rec = _load_recognizer(args)
    options = _decoding_options(rec, args)
    config = ServeConfig(
        model_id=args.model_id or _model_name(Path(args.model)),
        max_batch=args.batch_size or rec.cfg.decode.batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_upload_mb=args.max_upload_mb,
        max_audio_seconds=args.max_audio_seconds,
        max_chunk_seconds=args.max_chunk_seconds,
        api_key=args.api_key or os.environ.get("ASR_API_KEY") or None,
    )
    serve(rec, options, config, args.host, args.port)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from asr.benchmark.report import hypothesis_rows, render_evaluation, write_hypotheses
    from asr.benchmark.run import evaluate, system_facts
    from asr.data.manifest import read_manifest
    from asr.outputs import check_output
    from asr.text import get_normalizer

    rec = _load_recognizer(args)
    options = _decoding_options(rec, args)
    default = Path(args.model).parent / "decode" / f"{Path(args.manifest).stem}_{options.slug()}.jsonl"
    out = check_output(Path(args.out) if args.out else default)  # before decoding, not after
    result = evaluate(rec, args.manifest, options, batch_size=args.batch_size)
    rows = hypothesis_rows(result, read_manifest(args.manifest))
    write_hypotheses(out, rows)
    print(render_evaluation(result, rows, get_normalizer(system_facts(rec).normalizer)), end="")
    if options.lm_weight > 0:
        print(f"LM: {args.lm} (shallow fusion, weight {options.lm_weight:g})")
    print(f"hypotheses: {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from asr.export import export

    out = export(args.model, args.out, int8=args.int8, lm=args.lm)
    with_lm = f", with the LM {args.lm} (--lm-weight to fuse it)" if args.lm else ""
    precision = "int8" if args.int8 else "fp32"
    print(f"export: {out} ({precision}{with_lm}); transcribe with asr transcribe --model {out} ...")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from asr.data.validate import validate_manifest

    failed = False
    for path in args.manifests:
        result = validate_manifest(path, audio=args.audio, for_transcription=args.for_transcription)
        for p in result.problems:
            print(p)
        print(result.summary(args.audio))
        failed |= result.bad_lines > 0
    return 1 if failed else 0


def cmd_train_lm(args: argparse.Namespace) -> int:
    import dataclasses

    from asr.lm import LMConfig, LMTrainConfig, read_sentences, save_lm, train_lm
    from asr.outputs import check_output
    from asr.recognizer import load_model

    if not args.text and not args.manifest:
        raise ValueError("asr train-lm needs training text: --text FILE.txt and/or --manifest FILE.jsonl")
    check_output(args.out)  # before training, not after
    tokenizer = load_model(args.model).tokenizer  # the ASR model's vocabulary, so that token ids line up
    sentences = read_sentences(args.text or (), args.manifest or ())
    dev = read_sentences(args.dev_text or (), args.dev_manifest or ()) if args.dev_text or args.dev_manifest else None

    def given(cls) -> dict:  # the dataclass fields set on the command line; the rest keep their defaults
        names = (f.name for f in dataclasses.fields(cls))
        return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}

    cfg, train_cfg = LMConfig(**given(LMConfig)), LMTrainConfig(**given(LMTrainConfig))
    lm, report = train_lm(sentences, tokenizer, cfg, train_cfg, dev)
    extra = {"asr_model": str(args.model), **dataclasses.asdict(report), "train": dataclasses.asdict(train_cfg)}
    path = save_lm(args.out, lm, extra)
    n_params = sum(p.numel() for p in lm.parameters())
    print(
        f"LM: {n_params / 1e6:.2f} M parameters, {report.train_sentences} training / {report.dev_sentences} dev "
        f"sentences, {report.epochs} epochs in {report.minutes:.1f} min"
    )
    print(f"dev perplexity {report.dev_perplexity:.3f} per token (uniform over the vocabulary: {len(tokenizer)})")
    print(f"LM: {path}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from asr.benchmark.report import REPORT_FILES, render_markdown, write_report
    from asr.benchmark.run import BenchmarkSpec, run_benchmark
    from asr.decoding.options import parse_decoders
    from asr.outputs import check_outputs

    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: CUDA is not available here (use --device cpu)")
    check_outputs([Path(args.out) / name for name in REPORT_FILES])  # before decoding, not after
    spec = BenchmarkSpec(
        models=[Path(m) for m in args.models],
        sets=[Path(s) for s in args.sets],
        decoders=parse_decoders(args.decoders),
        out_dir=Path(args.out),
        by=args.by,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        device=args.device,
        batch_size=args.batch_size,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        lm=Path(args.lm) if args.lm else None,
        threads=args.threads,
    )
    report = run_benchmark(spec)
    files = write_report(report, args.out)
    print(render_markdown(report, details=False), end="")
    print(f"\nerror analysis and everything above: {files[0]}; also {', '.join(str(f) for f in files[1:])}")
    return 0


# `asr prepare` options that only some corpora take (dest names; each corpus lists its own in CORPORA[...].options).
PREPARE_OPTIONS = (
    "train_subsets",
    "dev_subsets",
    "test_subsets",
    "n_train",
    "n_dev",
    "n_test",
    "seed",
    "held_out_speakers",
    "connected",
    "dev_speakers",
    "n_dev_speakers",
    "split",
    "dev_fraction",
    "test_fraction",
    "texts",
    "copies",
    "spell_letters",
    "rest",
)


def cmd_prepare(args: argparse.Namespace) -> int:
    from asr.data.corpora import download_corpus, get_corpus, prepare_corpus
    from asr.data.download import DownloadError, UnsafeArchiveError
    from asr.outputs import check_outputs

    corpus = get_corpus(args.corpus)
    # Before any download or generation: a user's file named like a manifest is refused now, not after the work.
    check_outputs([Path(args.out) / f"{split}.jsonl" for split in ("train", "dev", "test")])
    given = {k: getattr(args, k) for k in PREPARE_OPTIONS if getattr(args, k) is not None}
    wrong = [k for k in given if k not in corpus.options]
    if wrong:
        flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
        takes = ", ".join("--" + k.replace("_", "-") for k in corpus.options) or "none"
        raise ValueError(f"asr prepare {corpus.name}: {flags} does not apply (its options: {takes})")
    if args.download or args.parts:
        if not args.data_dir:
            raise ValueError(f"asr prepare {corpus.name} --download needs --data-dir (where to put the corpus)")
        # LibriSpeech: the subsets named for the splits are the ones to fetch.
        named = [s for k in ("train_subsets", "dev_subsets", "test_subsets") for s in given.get(k, [])]
        parts = args.parts or [s for s in named if s in corpus.archives] or None
        try:
            download_corpus(corpus.name, args.data_dir, parts, keep_archive=args.keep_archive)
        except (DownloadError, UnsafeArchiveError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    options = {corpus.options[k]: v for k, v in given.items()}
    result = prepare_corpus(corpus.name, args.data_dir, args.out, **options)
    for line in result.summary():
        print(line)
    if result.skipped:  # each one was logged above with its reason
        print(f"{len(result.skipped)} item(s) skipped (each listed above with the reason)")
    return 0


def _add_overwrite_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files even if asr did not write them (by default those are refused)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asr", description="Speech-Transformer ASR toolkit")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train",
        help="train a model from a recipe config; extra args override config values",
        epilog="overrides: section.key=value, e.g. model.d_model=256 train.max_epochs=10",
    )
    t.add_argument("--config", required=True, help="recipe YAML (e.g. recipes/fsdd/conf.yaml)")
    t.add_argument("--resume", action="store_true", help="continue from <out_dir>/checkpoints/last.ckpt")
    t.add_argument(
        "--init-from", default=None, metavar="MODEL", help="fine-tune: start from this model file (train.init_from)"
    )
    _add_overwrite_flag(t)

    tr = sub.add_parser(
        "transcribe",
        help="transcribe audio files, folders or manifests (txt: path<TAB>text lines)",
        epilog="long recordings are cut at pauses into chunks of at most --max-chunk-seconds; a manifest line with "
        "offset and duration (a Kaldi segment) decodes that span only",
    )
    tr.add_argument("--model", required=True)
    _add_decode_flags(tr, "chunks")
    _add_chunk_flag(tr)
    tr.add_argument(
        "--format",
        choices=["txt", "json", "srt", "vtt"],
        default="txt",
        help="txt: path<TAB>text; json: one object a line with timed, scored segments; srt/vtt: subtitles",
    )
    tr.add_argument("--out-dir", default=None, help="write one file per input here instead of printing")
    _add_overwrite_flag(tr)
    tr.add_argument("audio", nargs="+", help="audio files, folders (searched recursively) or .jsonl manifests")

    e = sub.add_parser(
        "evaluate",
        help="decode a manifest, print WER/CER with its 95%% interval, write per-utterance hypotheses "
        "(one system of asr benchmark)",
    )
    e.add_argument("--model", required=True)
    e.add_argument("--manifest", required=True)
    _add_decode_flags(e, "utterances")
    e.add_argument("--out", default=None, help="hypotheses JSONL (default: next to the model, in decode/)")
    _add_overwrite_flag(e)

    x = sub.add_parser(
        "export",
        help="write an ONNX folder (encoder + decoder step, tokenizer, model card) that asr.runtime transcribes "
        "with, without torch",
        epilog="asr transcribe/benchmark/serve take the folder as --model; python -m asr.runtime needs only numpy, "
        "onnxruntime and soundfile",
    )
    x.add_argument("--model", required=True, help="model file (model.pt)")
    x.add_argument("--out", required=True, help="folder to write")
    x.add_argument("--int8", action="store_true", help="dynamic int8 quantisation of the MatMul/Gemm weights")
    x.add_argument("--lm", default=None, help="token LM file (asr train-lm) to export too, for shallow fusion")
    _add_overwrite_flag(x)

    v = sub.add_parser(
        "validate",
        help="check manifests line by line and report every problem as file:line: problem (exit 1 if any error)",
        epilog="without --audio only the lines are checked (what every command checks on reading a manifest): JSON, "
        "required fields and types, durations, offsets, duplicate ids, empty or odd text; --audio also opens every "
        "file: missing or unreadable, a segment outside its file, too short, a duration that disagrees with the file",
    )
    v.add_argument("manifests", nargs="+", help="JSONL manifests")
    v.add_argument("--audio", action="store_true", help="open and decode every utterance's audio too")
    v.add_argument(
        "--for-transcription",
        action="store_true",
        help="a manifest for asr transcribe: only audio_filepath is required, ids need not be unique",
    )

    lm = sub.add_parser(
        "train-lm",
        help="train a token LM on text, over an ASR model's vocabulary (for --lm)",
        epilog="text: one sentence a line (--text) and/or the text fields of manifests (--manifest)",
    )
    lm.add_argument("--model", required=True, help="ASR model file: its tokenizer is the LM's vocabulary")
    lm.add_argument("--text", nargs="+", help="text files, one sentence a line")
    lm.add_argument("--manifest", nargs="+", help="JSONL manifests: their text fields")
    lm.add_argument("--dev-text", nargs="+", help="dev text for perplexity (default: hold out --dev-fraction)")
    lm.add_argument("--dev-manifest", nargs="+", help="dev manifests for perplexity")
    lm.add_argument("--out", required=True, help="LM file to write")
    _add_overwrite_flag(lm)
    lm.add_argument("--epochs", type=int, default=None, help="passes over the text (default 10)")
    lm.add_argument("--minutes", dest="max_minutes", type=float, default=None, help="wall-clock budget (0 = none)")
    lm.add_argument("--batch-size", type=int, default=None, help="sentences per batch (default 64)")
    lm.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 3e-3)")
    lm.add_argument("--dev-fraction", type=float, default=None, help="held-out share without dev text (default 0.05)")
    lm.add_argument("--seed", type=int, default=None)
    lm.add_argument("--d-model", type=int, default=None, help="LM width (default 128)")
    lm.add_argument("--n-heads", type=int, default=None, help="attention heads (default 4)")
    lm.add_argument("--d-ff", type=int, default=None, help="feed-forward width (default 512)")
    lm.add_argument("--n-layers", type=int, default=None, help="Transformer layers (default 2)")
    lm.add_argument("--dropout", type=float, default=None, help="dropout (default 0.1)")

    from asr.decoding.options import DECODERS

    decoders_help = "\n".join(
        f"  {d.name + ('N' if d.size_option else ''):12s}{d.help}\n  {'':12s}parameters: "
        f"{', '.join(k for k in d.takes if k != d.size_option) or 'none'}"
        for d in DECODERS.values()
    )
    b = sub.add_parser(
        "benchmark",
        help="WER with confidence intervals, speed, memory, significance and error "
        "analysis for every model x test set x decoder",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="decoders (name[:key=value,...], comma-separated, e.g. "
        "greedy,beam10:ctc_weight=0.5,length_penalty=0.8,ctc):\n" + decoders_help,
    )
    b.add_argument(
        "--models", nargs="+", required=True, help="model files or export folders (a folder fuses its own LM)"
    )
    b.add_argument("--sets", nargs="+", required=True, help="test manifests (JSONL)")
    b.add_argument("--decoders", nargs="+", default=["greedy"], help="decoding setups (default: greedy)")
    b.add_argument("--out", default="benchmark", help="output folder (default: benchmark/)")
    _add_overwrite_flag(b)
    b.add_argument(
        "--by",
        action="append",
        default=[],
        help="break WER down by a manifest field (speaker, ...) or 'duration'; repeatable",
    )
    b.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    b.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    _add_runtime_flags(b, "utterances")  # the LM is used by the setups that set lm_weight
    b.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's; set it for timings that compare across runs)",
    )
    b.add_argument("--cache-dir", default=None, help="decoded hypotheses and timings (default: OUT/cache)")

    sv = sub.add_parser(
        "serve",
        help="an OpenAI-compatible transcription server (POST /v1/audio/transcriptions) and a web page at /",
        epilog="the chunks of concurrent requests are decoded together (--batch-size chunks, waiting at most "
        "--max-wait-ms for company); one line is logged per request",
    )
    sv.add_argument("--model", required=True)
    _add_decode_flags(sv, "chunks (from all waiting requests)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="port (0: any free one; the log line says which)")
    sv.add_argument("--api-key", default=None, help="require Authorization: Bearer KEY on /v1/* (or set ASR_API_KEY)")
    sv.add_argument(
        "--model-id",
        default=None,
        help="the model's name in /v1/models (default: the file's stem; exp/NAME/model.pt: NAME)",
    )
    sv.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a chunk waits for others (default 10)")
    sv.add_argument("--max-queue", type=int, default=256, help="chunks waiting at most; then 503 (default 256)")
    sv.add_argument("--max-upload-mb", type=float, default=25.0, help="larger request bodies get 413 (default 25)")
    sv.add_argument("--max-audio-seconds", type=float, default=3600.0, help="longer audio gets 400 (default 3600)")
    _add_chunk_flag(sv)

    from asr.data.corpora import CORPORA

    corpora_help = "\n".join(f"  {c.name:17s}{c.description}\n  {'':17s}splits: {c.splits}" for c in CORPORA.values())
    pr = sub.add_parser(
        "prepare",
        help="build train/dev/test manifests for a corpus (optionally download it)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="corpora:\n" + corpora_help,
    )
    pr.add_argument("corpus", choices=list(CORPORA))
    pr.add_argument("--data-dir", help="where the corpus is, or where --download puts it")
    pr.add_argument("--out", required=True, help="output folder for the manifests (and generated wavs)")
    _add_overwrite_flag(pr)
    pr.add_argument(
        "--download",
        action="store_true",
        help="fetch the corpus's archives into --data-dir first (resumable, checksum-verified; a rerun "
        "skips what is done)",
    )
    pr.add_argument("--parts", nargs="+", help="--download only these archives (librispeech: subset names)")
    pr.add_argument("--keep-archive", action="store_true", help="keep downloaded archives after extraction")
    pr.add_argument("--train-subsets", nargs="+", help="librispeech: subsets for train (e.g. train-clean-100)")
    pr.add_argument("--dev-subsets", nargs="+", help="librispeech: subsets for dev (e.g. dev-clean)")
    pr.add_argument("--test-subsets", nargs="+", help="librispeech: subsets for test (e.g. test-clean test-other)")
    pr.add_argument("--dev-speakers", nargs="+", help="an4: training speakers held out as dev")
    pr.add_argument("--n-dev-speakers", type=int, help="an4: how many speakers to hold out as dev (default 6)")
    pr.add_argument("--split", help="kaldi: the split this directory is (default train); folder: put all in it")
    pr.add_argument("--dev-fraction", type=float, help="yesno, folder: share of files for dev")
    pr.add_argument("--test-fraction", type=float, help="yesno, folder: share of files for test")
    pr.add_argument("--n-train", type=int, help="fsdd, synth: utterances to generate")
    pr.add_argument("--n-dev", type=int, help="fsdd, synth: utterances to generate; ljspeech: dev size (250)")
    pr.add_argument("--n-test", type=int, help="fsdd, synth: utterances to generate; ljspeech: test size (250)")
    pr.add_argument("--seed", type=int, help="fsdd, synth, tts: random seed (default 0)")
    pr.add_argument(
        "--texts", help="tts: the manifest whose transcripts the synthetic voices speak; digits: the manifest to filter"
    )
    pr.add_argument("--copies", type=int, help="tts: synthetic renditions of each transcript (default 2)")
    pr.add_argument(
        "--spell-letters",
        action="store_true",
        default=None,
        help="tts: single-letter words are spelled letters (AN4): make eSpeak say their names",
    )
    pr.add_argument(
        "--rest",
        action="store_true",
        default=None,
        help="digits: take the utterances that are not only digit words instead, into train (band-limited the same "
        "way: extra speakers for an FSDD model, disjoint from the digit test set)",
    )
    pr.add_argument("--held-out-speakers", nargs="*", help="fsdd: speakers kept out of train/dev (test only)")
    pr.add_argument(
        "--connected",
        type=float,
        help="fsdd: share of training utterances joined as connected speech (trimmed digits, tight or overlapping "
        "gaps; default 0)",
    )
    return p


def _run(args: argparse.Namespace, extra: list[str]) -> int:
    if args.command == "train":
        return cmd_train(args, extra)
    return {
        "transcribe": cmd_transcribe,
        "evaluate": cmd_evaluate,
        "prepare": cmd_prepare,
        "train-lm": cmd_train_lm,
        "benchmark": cmd_benchmark,
        "serve": cmd_serve,
        "validate": cmd_validate,
        "export": cmd_export,
    }[args.command](args)


def main(argv: list[str] | None = None) -> int:
    # Log to the stderr of the moment, for this call only: called in-process again (tests, notebooks), main must not
    # leave a handler behind on a stream that may be closed by then.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        return _main(argv)
    finally:
        log.removeHandler(handler)


def _main(argv: list[str] | None) -> int:
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from asr.audio import AudioError
    from asr.config import ConfigError
    from asr.data.manifest import ManifestError
    from asr.outputs import OutputError, OutputExistsError, allow_overwrite

    try:
        with allow_overwrite(getattr(args, "overwrite", False)):
            return _run(args, extra)
    except (ConfigError, ManifestError, AudioError, OutputExistsError, OutputError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:  # an optional extra that is not installed (eSpeak NG for synth/tts): say which
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
