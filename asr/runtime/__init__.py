"""Torch-free runtime: export folder (ONNX graphs + model.json) -> transcripts; needs numpy, onnxruntime, soundfile.

    from asr.runtime import Runtime
    Runtime("exp/an4/onnx").transcribe(["a.wav"])  -> [Transcript]

Modules, in pipeline order: audio (read, resample) -> asr.segment (cut at pauses; shared with the torch path, numpy
only) -> features (fbank/MFCC in numpy) ->
model (ONNX Runtime sessions) -> search (greedy, beam + CTC, CTC, NAT) -> align, tokens (times, text) -> recognizer
(Runtime).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Runtime"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import asr.runtime.search` (and the torch tests of it) need no onnxruntime.
    if name == "Runtime":
        from asr.runtime.recognizer import Runtime

        return Runtime
    raise AttributeError(f"module 'asr.runtime' has no attribute {name!r}")
