"""Deployment benchmark: torch fp32 vs ONNX fp32 vs ONNX int8 on one model and one test set, one run on this machine.

    python scripts/bench_export.py --model exp/fsdd/model.pt --manifest data/fsdd/test.jsonl --out exp/fsdd/export

Exports the model (fp32 and int8 folders under --out), then, for each system, starts a fresh Python process that
loads it and transcribes the manifest's files one at a time (batch 1, as a deployment serves requests) with beam
search (--beam-size, the model's CTC weight), at 1 and 2 threads. Measured per system: size on disk (model.pt; the
folder's graphs), peak RSS of the process (VmHWM: imports, model and decoding), start-up to first transcript
(process start -> the first file's text on stdout, imports included), real-time factor (decode wall time / audio
seconds, after the first file), WER (asr.metrics, the model's normaliser). The ONNX processes run asr.runtime with
torch, torchaudio, lightning and librosa made unimportable (a sys.meta_path blocker), as in a slim install.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BLOCK = """
import sys
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchaudio", "lightning", "librosa", "sentencepiece"):
            raise ImportError(name + " is blocked (slim install)")
sys.meta_path.insert(0, _Blocker())
"""

CHILD = """
import json, sys, time
system, model, threads, beam = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
files = json.loads(sys.stdin.read())
if system == "torch":
    import torch
    torch.set_num_threads(threads)
    from asr.recognizer import load_model
    rec = load_model(model)
else:
    from asr.runtime import Runtime
    rec = Runtime(model, threads=threads)
options = rec.options(decoder="beam", beam_size=beam)
decode_s = 0.0
for i, f in enumerate(files):
    t = time.perf_counter()
    (tr,) = rec.transcribe([f], options, batch_size=1)
    if i:  # the first file pays one-off costs (allocations, ORT's first-run optimisations): start-up measures it
        decode_s += time.perf_counter() - t
    print(json.dumps({"text": tr.text, "duration": tr.duration}), flush=True)
# VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child of the exporting (torch) process would report its peak
rss_mb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
print(json.dumps({"decode_s": decode_s, "rss_mb": rss_mb}), flush=True)
"""


def run_child(system: str, model: Path, files: list[str], threads: int, beam: int) -> dict:
    code = (BLOCK if system != "torch" else "") + CHILD
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, system, str(model), str(threads), str(beam)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    proc.stdin.write(json.dumps(files))
    proc.stdin.close()
    lines, first = [], None
    for line in proc.stdout:
        if first is None:
            first = time.perf_counter() - start
        lines.append(json.loads(line))
    if proc.wait() != 0:
        raise RuntimeError(f"{system} {model}: the benchmark process failed")
    *hyps, stats = lines
    audio = sum(h["duration"] for h in hyps[1:])
    return {"texts": [h["text"] for h in hyps], "startup_s": first, "rtf": stats["decode_s"] / audio, **stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--out", required=True, help="folder for the fp32/ and int8/ exports")
    ap.add_argument("--beam-size", type=int, default=5)
    ap.add_argument("--limit", type=int, default=0, help="first N utterances only (0: all)")
    args = ap.parse_args()

    from asr.data.manifest import read_manifest
    from asr.export import export
    from asr.metrics import error_rates
    from asr.outputs import allow_overwrite
    from asr.recognizer import load_model

    utts = read_manifest(args.manifest)
    if args.limit:
        utts = utts[: args.limit]
    files = [u.audio_filepath for u in utts]
    refs = [u.text for u in utts]
    normalizer = load_model(args.model).tokenizer.normalizer
    out = Path(args.out)
    with allow_overwrite():  # the benchmark's own folders
        folders = {"fp32": export(args.model, out / "fp32"), "int8": export(args.model, out / "int8", int8=True)}
    systems = [
        ("torch fp32", "torch", Path(args.model), Path(args.model).stat().st_size),
        *[(f"ONNX {k}", "onnx", d, sum(g.stat().st_size for g in d.glob("*.onnx"))) for k, d in folders.items()],
    ]
    print(
        f"{Path(args.manifest)}: {len(files)} utterances, {sum(u.duration for u in utts) / 60:.1f} min; "
        f"beam {args.beam_size} + CTC, batch 1; {args.model}\n"
    )
    print("| system | size on disk | peak RSS | start-up to first transcript | RTF, 1 thread | RTF, 2 threads | WER |")
    print("|---|---|---|---|---|---|---|")
    for name, kind, path, size in systems:
        one = run_child(kind, path, files, 1, args.beam_size)
        two = run_child(kind, path, files, 2, args.beam_size)
        wer = error_rates(refs, one["texts"], normalizer=normalizer).wer
        differ = sum(a != b for a, b in zip(one["texts"], two["texts"]))
        if differ:  # summation order differs with the thread count: a near-tie can flip a beam
            print(f"note: {name}: {differ} of {len(files)} transcripts differ between 1 and 2 threads", flush=True)
        print(
            f"| {name} | {size / 1e6:.1f} MB | {max(one['rss_mb'], two['rss_mb']):.0f} MB | {one['startup_s']:.2f} s "
            f"| {one['rtf']:.4f} | {two['rtf']:.4f} | {wer:.2f}% |",
            flush=True,
        )


if __name__ == "__main__":
    main()
