"""python -m asr.runtime --model DIR FILE... : transcribe with an export folder, in an install without torch.

Flags as `asr transcribe`'s where the runtime has them: --decoder greedy|beam|ctc|nat-length|nat-max|mask-ctc (the
NAT ones where the folder has the head; or a setup, beam10:ctc_weight=0.5), --beam-size, --ctc-weight, --lm-weight,
--length-penalty, --max-len-ratio, --vtln-warps, --batch-size, --max-chunk-seconds, --threads,
--format txt|json|srt|vtt, --out-dir (one file per input; files asr did not write are not replaced without
--overwrite). Exit 0; 1 if an input failed (each named on stderr); 2 for a bad model folder or flags.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asr.decoding.options import flag
from asr.outputs import OutputError, OutputExistsError, allow_overwrite, check_outputs, write_text
from asr.runtime.audio import AudioError
from asr.transcript import FORMATS, render

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".raw", ".sph", ".opus", ".aiff", ".aif"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asr.runtime", description="transcribe with an asr export folder")
    p.add_argument("--model", required=True, help="export folder (asr export --model M --out DIR)")
    p.add_argument(
        "--decoder",
        default=None,
        help="greedy | beam | ctc | nat-length | nat-max | mask-ctc, or a setup such as beam10:ctc_weight=0.5",
    )
    p.add_argument("--beam-size", type=int, default=None)
    p.add_argument("--ctc-weight", type=float, default=None)
    p.add_argument("--lm-weight", type=float, default=None, help="shallow fusion of the folder's LM (asr export --lm)")
    p.add_argument("--length-penalty", type=float, default=None)
    p.add_argument("--max-len-ratio", type=float, default=None)
    p.add_argument(
        "--vtln-warps", default=None, help="test-time VTLN: comma-separated warp factors, e.g. 0.92,0.96,1,1.04,1.08"
    )
    p.add_argument("--batch-size", type=int, default=None, help="chunks decoded at once (default: the model's)")
    p.add_argument("--max-chunk-seconds", type=float, default=None, help="longest chunk decoded at once (20)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (default: all cores)")
    p.add_argument("--format", choices=FORMATS, default="txt")
    p.add_argument("--out-dir", default=None, help="write one file per input here instead of printing")
    p.add_argument("--overwrite", action="store_true", help="replace existing files asr did not write")
    p.add_argument("audio", nargs="+", help="audio files or folders (searched recursively)")
    return p


def find_files(args: list[str]) -> list[Path]:
    out = []
    for a in args:
        p = Path(a)
        out += sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES) if p.is_dir() else [p]
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from asr.runtime.recognizer import Runtime

    try:
        with allow_overwrite(args.overwrite):
            if args.batch_size is not None and args.batch_size < 1:
                raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
            rt = Runtime(args.model, threads=args.threads)
            given = {
                k: getattr(args, k)
                for k in ("decoder", "beam_size", "ctc_weight", "lm_weight", "length_penalty", "max_len_ratio")
                if getattr(args, k) is not None
            }
            if args.vtln_warps is not None:
                try:
                    given["vtln_warps"] = tuple(float(x) for x in args.vtln_warps.split(",") if x.strip())
                except ValueError:
                    raise ValueError(f"--vtln-warps must be comma-separated numbers, got {args.vtln_warps!r}") from None
            options = rt.options(spell=flag, **given)
            files = find_files(args.audio)
            out_dir = Path(args.out_dir) if args.out_dir else None
            targets = [out_dir / f"{f.stem}.{args.format}" for f in files] if out_dir else []
            check_outputs(targets)
            failed = 0
            for i, f in enumerate(files):
                try:
                    (t,) = rt.transcribe(
                        [f], options, batch_size=args.batch_size, max_chunk_seconds=args.max_chunk_seconds
                    )
                except AudioError as e:  # one bad file does not stop the others
                    print(f"error: {e}", file=sys.stderr)
                    failed += 1
                    continue
                if out_dir is not None:
                    write_text(targets[i], render(t, args.format, str(f)))
                elif args.format == "txt":
                    print(f"{f}\t{t.text}", flush=True)
                else:
                    print(render(t, args.format, str(f)), end="", flush=True)
    except (ValueError, OutputExistsError, OutputError) as e:  # ExportError and OptionsError are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2
    if failed:
        print(f"{failed} input(s) failed (see the errors above)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
