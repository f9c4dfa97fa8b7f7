"""The corpus registry that `asr prepare` uses: name -> preparer, description, default split rule, download spec.

    CORPORA["an4"].description
    download_corpus("librispeech", "data/raw", parts=["dev-clean"]) -> Path   (the folder the preparer reads)
    prepare_corpus("an4", "../shared/data/an4", "data/an4", dev_speakers=["fash"]) -> PrepareResult

Preparers are imported only when used (they pull in torch). Checksums are the published ones where known with
certainty (see `Archive.checksum`); `None` means the archive is extracted with a warning that it was not verified.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from asr.data.download import Archive, fetch

if TYPE_CHECKING:  # the preparers (and asr.data.common) import torch: only when a corpus is prepared
    from asr.data.common import PrepareResult

OPENSLR = "https://www.openslr.org/resources"

# SHA-256 of the openslr.org/12 archives, as pinned in torchaudio's LIBRISPEECH dataset
# (pytorch/audio, torchaudio/datasets/librispeech.py, _CHECKSUMS).
LIBRISPEECH_SHA256 = {
    "dev-clean": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "dev-other": "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    "test-clean": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "test-other": "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
    "train-clean-100": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "train-clean-360": "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf",
    "train-other-500": "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2",
}
LIBRISPEECH = {k: Archive(f"{OPENSLR}/12/{k}.tar.gz", f"sha256:{v}") for k, v in LIBRISPEECH_SHA256.items()}


@dataclass(frozen=True)
class Corpus:
    name: str
    description: str
    splits: str  # the default split rule, in words (shown by `asr prepare --help`)
    prepare: str  # "module:function", imported when used
    options: dict[str, str] = field(default_factory=dict)  # `asr prepare` option (dest) -> preparer keyword
    archives: dict[str, Archive] = field(default_factory=dict)  # downloadable part -> archive
    default_parts: tuple[str, ...] = ()  # what --download fetches when no part is named
    manual_download: str = ""  # why and where, when the corpus cannot be downloaded here
    needs_data_dir: bool = True

    def preparer(self) -> Callable[..., PrepareResult]:
        module, _, func = self.prepare.partition(":")
        return getattr(importlib.import_module(module), func)


def _prepare_fsdd(
    data_dir: str | Path,
    out_dir: str | Path,
    n_train: int | None = None,
    n_dev: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    held_out_speakers: Sequence[str] | None = None,
    connected: float | None = None,
) -> PrepareResult:
    from asr.data.common import stats_of
    from asr.data.fsdd import FSDDConfig, prepare_fsdd

    root = Path(data_dir)
    if not (root / "recordings").is_dir() and (root / "free-spoken-digit-dataset-master" / "recordings").is_dir():
        root = root / "free-spoken-digit-dataset-master"  # where --download extracts it
    cfg = FSDDConfig(seed=seed, held_out_speakers=list(held_out_speakers or []))
    for name, value in (("n_train", n_train), ("n_dev", n_dev), ("n_test", n_test), ("connected", connected)):
        if value is not None:
            setattr(cfg, name, value)
    return stats_of(prepare_fsdd(root, out_dir, cfg))


def _prepare_synth(
    data_dir: str | Path | None,
    out_dir: str | Path,
    n_train: int | None = None,
    n_dev: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
) -> PrepareResult:
    from asr.data.common import stats_of
    from asr.data.synth import prepare_synth

    kw = {k: v for k, v in (("n_train", n_train), ("n_dev", n_dev), ("n_test", n_test)) if v is not None}
    return stats_of(prepare_synth(out_dir, seed=seed, **kw))


def _prepare_tts(
    data_dir: str | Path | None,
    out_dir: str | Path,
    texts: str | None = None,
    copies: int = 2,
    seed: int = 0,
    spell_letters: bool = False,
) -> PrepareResult:
    from asr.data.common import stats_of
    from asr.data.synth import prepare_tts

    if not texts:
        raise ValueError("asr prepare tts needs --texts MANIFEST (the training manifest whose transcripts to speak)")
    return stats_of(prepare_tts(texts, out_dir, copies=copies, seed=seed, spell_letters=spell_letters))


def _prepare_digits(
    data_dir: str | Path | None, out_dir: str | Path, texts: str | None = None, rest: bool = False
) -> PrepareResult:
    from asr.data.common import stats_of
    from asr.data.fsdd import digit_subset

    if not texts:
        raise ValueError("asr prepare digits needs --texts MANIFEST (the manifest whose digit-only utterances to take)")
    return stats_of({"train" if rest else "test": digit_subset(texts, out_dir, rest=rest)})


def _prepare_mini_librispeech(data_dir: str | Path, out_dir: str | Path) -> PrepareResult:
    from asr.data.librispeech import find_subsets, prepare_librispeech

    found = find_subsets(data_dir)
    # Mini LibriSpeech has no test subset: LibriSpeech's test-clean is used when it is there (--download fetches it).
    return prepare_librispeech(
        data_dir,
        out_dir,
        train=["train-clean-5"],
        dev=["dev-clean-2"],
        test=["test-clean"] if "test-clean" in found else [],
    )


CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in [
        Corpus(
            "librispeech",
            "LibriSpeech read English audiobooks, 16 kHz (openslr.org/12; 100 h subset: 6.3 GB)",
            "train-* -> train, dev-* -> dev, test-* -> test (or --train-subsets/--dev-subsets/--test-subsets)",
            "asr.data.librispeech:prepare_librispeech",
            options={"train_subsets": "train", "dev_subsets": "dev", "test_subsets": "test"},
            archives=LIBRISPEECH,
            default_parts=("train-clean-100", "dev-clean", "dev-other", "test-clean", "test-other"),
        ),
        Corpus(
            "mini_librispeech",
            "Mini LibriSpeech, 5 h train / 2 h dev subsets of LibriSpeech (openslr.org/31), plus test-clean",
            "train-clean-5 -> train, dev-clean-2 -> dev, test-clean (LibriSpeech, if present) -> test",
            "asr.data.corpora:_prepare_mini_librispeech",
            archives={
                # openslr.org/31 publishes no checksum we could pin with certainty: verified = False, with a warning.
                "train-clean-5": Archive(f"{OPENSLR}/31/train-clean-5.tar.gz", None),
                "dev-clean-2": Archive(f"{OPENSLR}/31/dev-clean-2.tar.gz", None),
                "test-clean": LIBRISPEECH["test-clean"],
            },
            default_parts=("train-clean-5", "dev-clean-2", "test-clean"),
        ),
        Corpus(
            "ljspeech",
            "LJSpeech 1.1, one female speaker reading non-fiction, 24 h, 22 kHz (keithito.com; 2.6 GB)",
            "id order: last 500 held out, 250 dev then 250 test (ESPnet's split; --n-dev/--n-test)",
            "asr.data.ljspeech:prepare_ljspeech",
            options={"n_dev": "n_dev", "n_test": "n_test"},
            # SHA-256 as pinned in torchaudio's LJSPEECH dataset (pytorch/audio, torchaudio/datasets/ljspeech.py).
            archives={
                "LJSpeech-1.1": Archive(
                    "https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2",
                    "sha256:be1a30453f28eb8dd26af4101ae40cbf2c50413b1bb21936cbcdc6fae3de8aa5",
                )
            },
            default_parts=("LJSpeech-1.1",),
        ),
        Corpus(
            "commonvoice",
            "Mozilla Common Voice, one language folder (train/dev/test.tsv + clips/*.mp3)",
            "the release's own train.tsv / dev.tsv / test.tsv",
            "asr.data.commonvoice:prepare_commonvoice",
            manual_download=(
                "Common Voice cannot be downloaded automatically: the archives are behind a form where you accept the "
                "terms and give an e-mail address. Download a language from https://commonvoice.mozilla.org/datasets, "
                "extract it, and pass the language folder (the one holding train.tsv and clips/) as --data-dir."
            ),
        ),
        Corpus(
            "an4",
            "CMU AN4 census database: spelled letters, digits, control words, 74 + 10 speakers, 0.8 h, 16 kHz",
            "training part minus 6 held-out speakers (3 f, 3 m; --dev-speakers) -> train / dev; "
            "an4test_clstk (if present) -> test",
            "asr.data.an4:prepare_an4",
            options={"dev_speakers": "dev_speakers", "n_dev_speakers": "n_dev_speakers"},
            # The location ESPnet's an4 recipe downloads from; CMU publishes no checksum for it.
            archives={"an4_sphere": Archive("http://www.speech.cs.cmu.edu/databases/an4/an4_sphere.tar.gz", None)},
            default_parts=("an4_sphere",),
        ),
        Corpus(
            "yesno",
            "yesno: one speaker saying eight Hebrew yes/no words per file, 60 files, 8 kHz (openslr.org/1; 4.5 MB)",
            "by a hash of the file name: 70% train, 10% dev, 20% test (--dev-fraction/--test-fraction)",
            "asr.data.yesno:prepare_yesno",
            options={"dev_fraction": "dev", "test_fraction": "test"},
            # SHA-256 as pinned in torchaudio's YESNO dataset (pytorch/audio, torchaudio/datasets/yesno.py).
            archives={
                "waves_yesno": Archive(
                    f"{OPENSLR}/1/waves_yesno.tar.gz",
                    "sha256:c3f49e0cca421f96b75b41640749167b52118f232498667ca7a5f9416aef8e73",
                )
            },
            default_parts=("waves_yesno",),
        ),
        Corpus(
            "fsdd",
            "Free Spoken Digit Dataset, joined into connected-digit utterances (github.com/Jakobovski)",
            "recording indices 0-4 -> test, 45-49 -> dev, rest -> train (or --held-out-speakers)",
            "asr.data.corpora:_prepare_fsdd",
            options={k: k for k in ("n_train", "n_dev", "n_test", "seed", "held_out_speakers", "connected")},
            # A GitHub branch archive is generated on request and not byte-stable: no checksum can be pinned.
            archives={
                "master": Archive(
                    "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/heads/master.zip",
                    None,
                    filename="free-spoken-digit-dataset-master.zip",
                )
            },
            default_parts=("master",),
        ),
        Corpus(
            "synth",
            "the embedded synthetic corpus (eSpeak NG voices), generated here: nothing to download",
            "test and dev voices never heard in training",
            "asr.data.corpora:_prepare_synth",
            options={k: k for k in ("n_train", "n_dev", "n_test", "seed")},
            needs_data_dir=False,
        ),
        Corpus(
            "tts",
            "TTS augmentation: eSpeak NG voices speak the transcripts of a training manifest (--texts), --copies times",
            "train = the synthetic copies; mixed = the manifest's utterances + the copies (train on this)",
            "asr.data.corpora:_prepare_tts",
            options={k: k for k in ("texts", "copies", "seed", "spell_letters")},
            needs_data_dir=False,
        ),
        Corpus(
            "digits",
            "the utterances of a manifest (--texts) spoken only in FSDD's digit words, band-limited to 4 kHz like FSDD",
            "all into test: a cross-corpus test set for an FSDD model (e.g. --texts data/an4/train.jsonl); --rest: "
            "the other utterances, band-limited the same way, into train (more speakers for an FSDD model)",
            "asr.data.corpora:_prepare_digits",
            options={"texts": "texts", "rest": "rest"},
            needs_data_dir=False,
        ),
        Corpus(
            "kaldi",
            "a Kaldi data directory (wav.scp with file paths, text, optional segments and utt2spk)",
            "one directory -> one manifest, named by --split (default train)",
            "asr.data.kaldi_dir:prepare_kaldi_dir",
            options={"split": "split"},
        ),
        Corpus(
            "folder",
            "a folder of audio files with same-named .txt transcripts, searched recursively",
            "by a hash of the relative path: 80% train, 10% dev, 10% test; or everything into --split",
            "asr.data.folder:prepare_folder",
            options={"split": "split", "dev_fraction": "dev", "test_fraction": "test"},
        ),
    ]
}


def get_corpus(name: str) -> Corpus:
    try:
        return CORPORA[name]
    except KeyError:
        raise ValueError(f"unknown corpus {name!r} (known: {', '.join(CORPORA)})") from None


def download_corpus(
    name: str,
    data_dir: str | Path,
    parts: Sequence[str] | None = None,
    *,
    keep_archive: bool = False,
    progress: bool = True,
) -> Path:
    """Fetch the corpus's archives (or the named parts) into `data_dir`; the preparer then reads `data_dir`."""
    corpus = get_corpus(name)
    if corpus.manual_download:
        raise ValueError(corpus.manual_download)
    if not corpus.archives:
        raise ValueError(f"{name}: nothing to download ({corpus.description})")
    parts = list(parts or corpus.default_parts)
    unknown = [p for p in parts if p not in corpus.archives]
    if unknown:
        raise ValueError(f"{name}: no download for {', '.join(unknown)} (available: {', '.join(corpus.archives)})")
    for p in parts:
        fetch(corpus.archives[p], data_dir, keep_archive=keep_archive, progress=progress)
    return Path(data_dir)


def prepare_corpus(name: str, data_dir: str | Path | None, out_dir: str | Path, **options) -> PrepareResult:
    """Run the corpus's preparer with keyword `options` (the preparer's own argument names)."""
    corpus = get_corpus(name)
    bad = sorted(set(options) - set(corpus.options.values()))
    if bad:
        takes = ", ".join(corpus.options.values()) or "none"
        raise ValueError(f"{name}: option(s) {', '.join(bad)} do not apply (it takes: {takes})")
    if corpus.needs_data_dir and not data_dir:
        raise ValueError(f"asr prepare {name} needs --data-dir ({corpus.description})")
    return corpus.preparer()(data_dir, out_dir, **options)
