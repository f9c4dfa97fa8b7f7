"""FSDD ablation: the recipe against itself without guided attention, without CTC, and with MFCC instead of fbank,
each trained for the same wall-clock budget. Reports test WER (beam 5; joint CTC/attention when the model has a
CTC head, and attention only), and the epochs it took the dev WER (greedy) to reach 5%.

    python recipes/fsdd/ablation.py --minutes 8 [--only baseline,no_ga] [extra overrides ...]

Writes exp/fsdd_ablation/results.md. Prepare data/fsdd first (recipes/fsdd/run.sh or `asr prepare fsdd`).
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from asr.benchmark.run import evaluate  # noqa: E402
from asr.config import load_config  # noqa: E402
from asr.recognizer import load_model  # noqa: E402
from asr.training import train  # noqa: E402

VARIANTS = {
    "baseline": [],
    "no_guided_attention": ["loss.guided_attn_weight=0"],
    "no_ctc": ["loss.ctc_weight=0"],
    "mfcc": ["features.kind=mfcc"],
}


def epochs_to(metrics: Path, target: float) -> str:
    rows = [r for r in csv.DictReader(open(metrics)) if r.get("val_wer")]
    for r in rows:
        if float(r["val_wer"]) <= target:
            return str(int(r["epoch"]) + 1)
    return f"> {len(rows)}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--only", default="", help="comma-separated variants (default: all)")
    p.add_argument("--out", default="exp/fsdd_ablation")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    logging.getLogger("asr").setLevel(logging.INFO)
    logging.getLogger("asr").addHandler(logging.StreamHandler())
    names = [n for n in args.only.split(",") if n] or list(VARIANTS)
    out = Path(args.out)
    lines = [
        f"Each variant trained {args.minutes:g} min on the 2-core CPU (`recipes/fsdd/conf.yaml` + the change).",
        "",
        "| variant | test WER, beam 5 + CTC | test WER, beam 5 attention only | epochs to dev WER <= 5% | epochs run |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in names:
        run = out / name
        cfg = load_config(
            ROOT / "recipes/fsdd/conf.yaml",
            VARIANTS[name]
            + [
                f"train.out_dir={run}",
                f"train.max_minutes={args.minutes}",
                "train.progress_bar=false",
                *args.overrides,
            ],
        )
        model = train(cfg)
        rec = load_model(model)
        joint = evaluate(rec, cfg.data.test_manifest, decoder="beam5").rates.wer if rec.has_ctc else None
        att = evaluate(rec, cfg.data.test_manifest, decoder="beam5", ctc_weight=0.0).rates.wer
        metrics = sorted((run / "logs").glob("version_*"))[-1] / "metrics.csv"
        n_epochs = len([r for r in csv.DictReader(open(metrics)) if r.get("val_wer")])
        joint_s = f"{joint:.2f}%" if joint is not None else "n/a (no CTC head)"
        lines.append(f"| {name} | {joint_s} | {att:.2f}% | {epochs_to(metrics, 5.0)} | {n_epochs} |")
        (out / "results.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
