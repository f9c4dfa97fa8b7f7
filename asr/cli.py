"""Command line: `asr prepare | train | transcribe | evaluate | train-lm`.

asr prepare fsdd --data-dir ../shared/data/fsdd --out data/fsdd
asr prepare CORPUS --data-dir DIR --out OUT [--download] [corpus options]     (asr prepare --help: the corpora)
asr train --config recipes/fsdd/conf.yaml [--resume] [section.key=value ...]
asr transcribe --model exp/fsdd/model.pt [--format txt|json|srt|vtt] [--out-dir D] a.wav folder/ m.jsonl
asr evaluate --model exp/fsdd/model.pt --manifest data/fsdd/test.jsonl [--beam-size N] [--out hyps.jsonl]
asr train-lm --model exp/synth/model.pt --manifest data/synth/train.jsonl --out exp/synth/lm.pt [--minutes 2]
asr evaluate ... --lm exp/synth/lm.pt --lm-weight 0.3       (also transcribe: shallow fusion in beam search)
asr benchmark --models A.pt B.pt --sets test.jsonl --decoders greedy,beam10,ctc [--by speaker] [--out DIR]
"""

from __future__ import annotations

import argparse
import logging
import re
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


# Extensions `asr transcribe` picks up in folders: the audio containers libsndfile reads, and headerless .raw PCM.
AUDIO_SUFFIXES = {
    ".wav",
    ".flac",
    ".ogg",
    ".oga",
    ".opus",
    ".mp3",
    ".sph",
    ".nist",
    ".aiff",
    ".aif",
    ".aifc",
    ".au",
    ".snd",
    ".caf",
    ".w64",
    ".rf64",
    ".raw",
}
TRANSCRIBE_GROUP_SECONDS = 600.0  # audio loaded at a time: bounds memory on big folders, and output comes as it goes
PROGRESS_MIN_FILES = 10  # fewer files get no progress bar


def _manifest_audio(path: Path) -> list[str]:
    """The audio paths of a JSONL manifest. Only `audio_filepath` is needed: there is no text yet to transcribe."""
    import json

    from asr.data.manifest import ManifestError

    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    base, paths = path.resolve().parent, []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
        audio = item.get("audio_filepath") if isinstance(item, dict) else None
        if not isinstance(audio, str) or not audio:
            raise ManifestError(f"{path}:{lineno}: needs an audio_filepath string")
        paths.append(str(base / audio))  # relative paths resolve against the manifest's folder
    return paths


def _transcribe_inputs(paths: list[str]) -> tuple[list[tuple[str, Path]], int]:
    """Files, folders (searched recursively) and .jsonl manifests -> (audio path, output name without suffix) for
    each file, and how many arguments were unusable (reported on stderr)."""
    items: list[tuple[str, Path]] = []
    bad = 0
    for arg in paths:
        p = Path(arg)
        try:
            if p.is_dir():
                found = sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file())
                if not found:
                    raise ValueError(f"{p}: no audio files in this folder")
                items += [(str(f), f.relative_to(p).with_suffix("")) for f in found]  # outputs mirror the tree
            elif p.suffix.lower() == ".jsonl":
                items += [(a, Path(Path(a).stem)) for a in _manifest_audio(p)]
            else:  # a file, or a missing path: reported when it fails to load
                items.append((arg, Path(p.stem)))
        except ValueError as e:  # ManifestError is one: one bad argument does not stop the others
            print(f"error: {e}", file=sys.stderr)
            bad += 1
    return items, bad


def _output_files(names: list[Path], out_dir: Path, fmt: str) -> list[Path]:
    """One output file per input; a name taken twice (a.wav and a.flac) gets _1, _2, ..."""
    used: set[Path] = set()
    files = []
    for name in names:
        target, k = out_dir / f"{name}.{fmt}", 0
        while target in used:
            k += 1
            target = out_dir / f"{name}_{k}.{fmt}"
        used.add(target)
        files.append(target)
    return files


def _attach_lm(rec, args: argparse.Namespace) -> float:
    """--lm PATH [--lm-weight W]: fuse the LM into beam search; returns the weight in use (0: no LM)."""
    if args.lm is None:
        if args.lm_weight is not None:
            raise ValueError("--lm-weight needs --lm (an LM file made by asr train-lm)")
        return 0.0
    from asr.lm import load_lm

    try:
        rec.attach_lm(load_lm(args.lm, device=args.device), args.lm_weight)
    except ValueError as e:
        raise ValueError(f"--lm {args.lm} with --model {args.model}: {e}") from None
    if rec.fusion.weight == 0:
        log.warning("warning: --lm without --lm-weight and the model's decode.lm_weight is 0: the LM is not used")
    return rec.fusion.weight


def cmd_transcribe(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from asr.audio import AudioError, load_audio
    from asr.recognizer import load_model
    from asr.segment import MIN_CHUNK_SECONDS
    from asr.transcript import render

    if args.max_chunk_seconds is not None and not args.max_chunk_seconds >= MIN_CHUNK_SECONDS:
        raise ValueError(f"--max-chunk-seconds must be at least {MIN_CHUNK_SECONDS}, got {args.max_chunk_seconds}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available here (use --device cpu)")
    rec = load_model(args.model, device=args.device)
    _attach_lm(rec, args)
    _set_decoder(rec, args)
    _set_vtln(rec, args)
    sr = rec.cfg.features.sample_rate
    items, failed = _transcribe_inputs(args.audio)
    out_dir = Path(args.out_dir) if args.out_dir else None
    targets = _output_files([name for _, name in items], out_dir, args.format) if out_dir else []
    headers = args.format in ("srt", "vtt") and out_dir is None and len(items) > 1  # which document is which
    group_files = 4 * (args.batch_size or rec.cfg.decode.batch_size)
    quiet = True if len(items) < PROGRESS_MIN_FILES else None  # None: tqdm shows the bar only on a terminal
    bar = tqdm(total=len(items), unit="file", file=sys.stderr, disable=quiet)
    pending: list[tuple[int, torch.Tensor]] = []  # (index in items, waveform)

    def flush() -> None:
        transcripts = rec.transcribe_waveforms(
            [w for _, w in pending], args.beam_size, args.batch_size, args.ctc_weight, args.max_chunk_seconds
        )
        for (i, _), t in zip(pending, transcripts):
            path = items[i][0]
            if out_dir is not None:
                targets[i].parent.mkdir(parents=True, exist_ok=True)
                targets[i].write_text(render(t, args.format, path), encoding="utf-8")
            elif args.format == "txt":
                print(f"{path}\t{t.text}", flush=True)
            else:
                print((f"==> {path} <==\n" if headers else "") + render(t, args.format, path), end="", flush=True)
        bar.update(len(pending))
        pending.clear()

    for i, (path, _) in enumerate(items):
        try:
            pending.append((i, load_audio(path, sr)))
        except AudioError as e:  # one bad file does not stop the others; the exit code says it happened
            tqdm.write(f"error: {e}", file=sys.stderr)
            failed += 1
            bar.update(1)
            continue
        if sum(w.numel() for _, w in pending) >= TRANSCRIBE_GROUP_SECONDS * sr or len(pending) >= group_files:
            flush()
    if pending:
        flush()
    bar.close()
    if out_dir is not None:
        log.info("wrote %d %s files to %s", len(items) - failed, args.format, out_dir)
    if failed:
        print(f"{failed} input(s) failed (see the errors above)", file=sys.stderr)
    return 1 if failed else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from asr.evaluation import evaluate
    from asr.recognizer import load_model

    rec = load_model(args.model, device=args.device)
    lm_weight = _attach_lm(rec, args)
    vtln = _set_vtln(rec, args)
    if _set_decoder(rec, args):
        result = evaluate(rec, args.manifest, batch_size=args.batch_size)
        name = f"{Path(args.manifest).stem}_" + re.sub(r"[^\w.-]+", "_", args.decoder)
        return _report_evaluation(args, result, name, args.decoder)
    beam = rec.cfg.decode.beam_size if args.beam_size is None else args.beam_size
    ctc_weight = rec.decode_ctc_weight if args.ctc_weight is None else args.ctc_weight
    result = evaluate(rec, args.manifest, beam_size=beam, batch_size=args.batch_size, ctc_weight=ctc_weight)
    searched = beam > 1 or lm_weight > 0  # with an LM, beam 1 is a beam search too (greedy has no fusion)
    name = f"{Path(args.manifest).stem}_beam{beam}" + (f"_ctc{ctc_weight:g}" if searched and ctc_weight > 0 else "")
    name += f"_lm{lm_weight:g}" if lm_weight > 0 else ""
    decoder = f"beam {beam}" if searched else "greedy attention"
    if searched:
        decoder += f", CTC weight {ctc_weight:g}" if ctc_weight > 0 else ", attention only"
    if lm_weight > 0:
        decoder += f", LM {args.lm} weight {lm_weight:g}"
    if vtln:
        name += "_vtln" + "-".join(f"{a:g}" for a in vtln)
        decoder += f", test-time VTLN over warps {', '.join(f'{a:g}' for a in vtln)}"
    return _report_evaluation(args, result, name, decoder)


def _set_vtln(rec, args: argparse.Namespace) -> list[float]:
    """--vtln-warps 0.92,0.96,1,1.04,1.08: test-time VTLN in attention search (decode.vtln_warps)."""
    from asr.recognizer import check_warps

    if getattr(args, "vtln_warps", None) is None:
        return list(rec.cfg.decode.vtln_warps)
    if getattr(args, "decoder", None):
        raise ValueError("--vtln-warps applies to attention search (greedy or beam), not to --decoder setups")
    try:
        warps = [float(x) for x in args.vtln_warps.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--vtln-warps must be comma-separated numbers, got {args.vtln_warps!r}") from None
    check_warps(warps)
    rec.cfg.decode.vtln_warps = warps
    return warps


def _set_decoder(rec, args: argparse.Namespace) -> bool:
    """--decoder NAME: a named setup (ctc, nat-length, nat-max, mask-ctc, ...) replaces attention search."""
    if not getattr(args, "decoder", None):
        return False
    from asr.decoding.setups import parse_decoder

    parse_decoder(args.decoder).check(rec)  # unknown names and models that can't run it fail before any work
    rec.cfg.decode.decoder = args.decoder
    return True


def _report_evaluation(args: argparse.Namespace, result, name: str, decoder: str) -> int:
    from asr.evaluation import write_hypotheses

    r = result.rates
    out = Path(args.out) if args.out else Path(args.model).parent / "decode" / f"{name}.jsonl"
    write_hypotheses(out, result)
    print(f"{args.manifest}: {r.sentences} utterances, {decoder}")
    print(f"text normalisation (references and hypotheses): {result.normalizer.name}: {result.normalizer.description}")
    print(
        f"WER {r.wer:.2f}%  CER {r.cer:.2f}%  (substitutions {r.substitutions}, deletions {r.deletions}, "
        f"insertions {r.insertions}, reference words {r.ref_words})"
    )
    print(
        f"real-time factor {result.rtf:.4f} ({result.decode_seconds:.1f} s for {result.audio_seconds:.0f} s of audio)"
    )
    _print_error_breakdown(result.rows)
    if result.skipped:
        print(f"{len(result.skipped)} unreadable files skipped (listed above)")
    print(f"hypotheses: {out}")
    return 0


def _print_error_breakdown(rows: list[dict], top: int = 10) -> None:
    """The most frequent word errors and, when the manifest names several speakers, each speaker's WER."""
    from asr.metrics import word_errors

    common = word_errors([r["ref"] for r in rows], [r["hyp"] for r in rows], normalize=False).most_common(top)
    if common:  # rows hold normalised text
        print("most frequent errors: " + ", ".join(f"{e} ({n})" for e, n in common))
    by: dict[str, list[int]] = {}  # speaker -> [word errors, reference words]
    for r in rows:
        counts = by.setdefault(str(r.get("speaker", "(none)")), [0, 0])
        counts[0] += r["word_errors"]
        counts[1] += r["ref_words"]
    if len(by) > 1:
        print(
            "WER by speaker: "
            + ", ".join(f"{s} {100.0 * e / max(n, 1):.2f}% of {n}" for s, (e, n) in sorted(by.items()))
        )


def cmd_train_lm(args: argparse.Namespace) -> int:
    import dataclasses

    from asr.lm import LMConfig, LMTrainConfig, read_sentences, save_lm, train_lm
    from asr.recognizer import load_model

    if not args.text and not args.manifest:
        raise ValueError("asr train-lm needs training text: --text FILE.txt and/or --manifest FILE.jsonl")
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
    from asr.benchmark import BenchmarkSpec, run_benchmark
    from asr.benchmark_report import render_markdown, write_report
    from asr.decoding.setups import parse_decoders

    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: CUDA is not available here (use --device cpu)")
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
    "dev_speakers",
    "n_dev_speakers",
    "split",
    "dev_fraction",
    "test_fraction",
    "texts",
    "copies",
    "spell_letters",
)


def cmd_prepare(args: argparse.Namespace) -> int:
    from asr.data.corpora import download_corpus, get_corpus, prepare_corpus
    from asr.data.download import DownloadError, UnsafeArchiveError

    corpus = get_corpus(args.corpus)
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

    tr = sub.add_parser(
        "transcribe",
        help="transcribe audio files, folders or manifests (txt: path<TAB>text lines)",
        epilog="long recordings are cut at pauses into chunks of at most --max-chunk-seconds",
    )
    tr.add_argument("--model", required=True)
    tr.add_argument("--beam-size", type=int, default=None, help="1 = greedy (default: the model's decode config)")
    tr.add_argument("--ctc-weight", type=float, default=None, help="joint CTC/attention weight for beam search")
    tr.add_argument(
        "--decoder",
        default=None,
        help="a named decoding setup instead of attention search: "
        "ctc, nat-length, nat-max, mask-ctc[:iterations=N] (see asr benchmark --help)",
    )
    tr.add_argument("--batch-size", type=int, default=None, help="chunks decoded at once (default: the model's)")
    tr.add_argument("--max-chunk-seconds", type=float, default=None, help="longest chunk decoded at once (default 20)")
    tr.add_argument(
        "--format",
        choices=["txt", "json", "srt", "vtt"],
        default="txt",
        help="txt: path<TAB>text; json: one object a line with timed, scored segments; srt/vtt: subtitles",
    )
    tr.add_argument("--out-dir", default=None, help="write one file per input here instead of printing")
    tr.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    tr.add_argument("--lm", default=None, help="token LM file (asr train-lm) for shallow fusion in beam search")
    tr.add_argument("--lm-weight", type=float, default=None, help="LM weight (default: the model's decode.lm_weight)")
    tr.add_argument(
        "--vtln-warps",
        default=None,
        help="test-time VTLN: decode at each of these comma-separated "
        "frequency-warp factors and keep each utterance's best-scoring text, e.g. 0.92,0.96,1,1.04,1.08 "
        "(5x the search; for models trained with data.vtlp; default: the model's decode.vtln_warps)",
    )
    tr.add_argument("audio", nargs="+", help="audio files, folders (searched recursively) or .jsonl manifests")

    e = sub.add_parser("evaluate", help="decode a manifest, print WER/CER, write per-utterance hypotheses")
    e.add_argument("--model", required=True)
    e.add_argument("--manifest", required=True)
    e.add_argument("--beam-size", type=int, default=None, help="1 = greedy (default: the model's decode config)")
    e.add_argument("--ctc-weight", type=float, default=None, help="joint CTC/attention weight for beam search")
    e.add_argument(
        "--decoder",
        default=None,
        help="a named decoding setup instead of attention search: ctc, nat-length, nat-max, mask-ctc[:iterations=N]",
    )
    e.add_argument("--batch-size", type=int, default=None)
    e.add_argument("--out", default=None, help="hypotheses JSONL (default: next to the model, in decode/)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--lm", default=None, help="token LM file (asr train-lm) for shallow fusion in beam search")
    e.add_argument("--lm-weight", type=float, default=None, help="LM weight (default: the model's decode.lm_weight)")
    e.add_argument(
        "--vtln-warps",
        default=None,
        help="test-time VTLN: decode at each of these comma-separated "
        "frequency-warp factors and keep each utterance's best-scoring text, e.g. 0.92,0.96,1,1.04,1.08 "
        "(5x the search; for models trained with data.vtlp; default: the model's decode.vtln_warps)",
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

    from asr.decoding.setups import DECODERS

    decoders_help = "\n".join(
        f"  {k.name + ('N' if k.size_param else ''):12s}{k.help}\n  {'':12s}parameters: "
        f"{', '.join(p for p in k.params if p != k.size_param) or 'none'}"
        for k in DECODERS.values()
    )
    b = sub.add_parser(
        "benchmark",
        help="WER with confidence intervals, speed, memory, significance and error "
        "analysis for every model x test set x decoder",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="decoders (name[:key=value,...], comma-separated, e.g. "
        "greedy,beam10:ctc_weight=0.5,length_penalty=0.8,ctc):\n" + decoders_help,
    )
    b.add_argument("--models", nargs="+", required=True, help="model files")
    b.add_argument("--sets", nargs="+", required=True, help="test manifests (JSONL)")
    b.add_argument("--decoders", nargs="+", default=["greedy"], help="decoding setups (default: greedy)")
    b.add_argument("--out", default="benchmark", help="output folder (default: benchmark/)")
    b.add_argument(
        "--by",
        action="append",
        default=[],
        help="break WER down by a manifest field (speaker, ...) or 'duration'; repeatable",
    )
    b.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    b.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    b.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    b.add_argument("--batch-size", type=int, default=None, help="utterances decoded at once (default: the model's)")
    b.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's; set it for timings that compare across runs)",
    )
    b.add_argument("--cache-dir", default=None, help="decoded hypotheses and timings (default: OUT/cache)")
    b.add_argument("--lm", default=None, help="token LM (asr train-lm) for setups that set lm_weight")

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
    pr.add_argument("--texts", help="tts: the manifest whose transcripts the synthetic voices speak")
    pr.add_argument("--copies", type=int, help="tts: synthetic renditions of each transcript (default 2)")
    pr.add_argument(
        "--spell-letters",
        action="store_true",
        default=None,
        help="tts: single-letter words are spelled letters (AN4): make eSpeak say their names",
    )
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
        return {
            "transcribe": cmd_transcribe,
            "evaluate": cmd_evaluate,
            "prepare": cmd_prepare,
            "train-lm": cmd_train_lm,
            "benchmark": cmd_benchmark,
        }[args.command](args)
    except (ConfigError, ManifestError, AudioError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:  # an optional extra that is not installed (eSpeak NG for synth/tts): say which
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
