"""Serving: an OpenAI-compatible transcription server with a batching queue, and a web page (`asr serve`).

    app.py        the HTTP layer: routes, OpenAI parameters and error shapes, the page; create_app / serve
    batching.py   BatchingQueue: the chunks of concurrent requests decoded together in one worker thread
    index.html    the page at / (file, drop or microphone -> transcript, copy, txt/srt/vtt download)

Decoding goes through the Recognizer's own steps (cut -> decode_waveforms -> assemble), the same as
`Recognizer.transcribe`, so the server gives what `asr transcribe` gives for the same file and options.
"""

from asr.serve.app import ServeConfig, create_app, running, serve
from asr.serve.batching import BatchingQueue, QueueFull

__all__ = ["BatchingQueue", "QueueFull", "ServeConfig", "create_app", "running", "serve"]
