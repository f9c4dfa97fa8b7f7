"""Serving throughput and latency: the batching queue vs one-chunk-at-a-time decoding, same model, same requests.

    python scripts/bench_serve.py --model exp/fsdd/model.pt --audio data/fsdd/test.jsonl --clients 1,8,32

For each mode it starts `asr serve` as its own process (the clients run here, so they do not share the server's
interpreter), then for each client count sends the same requests (`--requests` files, OpenAI multipart, the
model's decoder) from that many threads at once, twice (the first pass warms up), and reports throughput
(audio-seconds per wall-second) and p50/p95 latency. "batched" is the server's default queue (--batch-size chunks,
--max-wait-ms); "one at a time" is the same server with --batch-size 1. The last column is the batched / one at a
time throughput ratio at that client count. Every response is checked: all 200, and each file's text the same in
both modes.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asr.audio import audio_info  # noqa: E402
from asr.data.manifest import read_manifest  # noqa: E402


def multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def transcribe(port: int, path: Path, data: bytes) -> tuple[int, str]:
    body, ctype = multipart({"model": "asr", "response_format": "json"}, path.name, data)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/audio/transcriptions", body, {"Content-Type": ctype})
    resp = conn.getresponse()
    out = resp.read()
    conn.close()
    return resp.status, json.loads(out).get("text", "") if resp.status == 200 else out.decode()


def start_server(args, batch_size: int) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "asr.cli", "serve", "--model", args.model, "--port", "0"]
    cmd += ["--batch-size", str(batch_size), "--max-wait-ms", str(args.max_wait_ms), "--max-queue", "4096"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    for line in proc.stderr:
        found = re.search(r"on http://[^:]+:(\d+)", line)
        if found:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # drain the log
            return proc, int(found.group(1))
    raise RuntimeError(f"asr serve did not start: {' '.join(cmd)}")


def health(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/health")
    return json.loads(conn.getresponse().read())


def run(port: int, files: list[tuple[Path, bytes, float]], clients: int) -> dict:
    latencies: list[float] = []
    texts: dict[str, str] = {}
    errors: list[str] = []
    next_index = iter(range(len(files)))
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            path, data, _ = files[i]
            t0 = time.perf_counter()
            status, text = transcribe(port, path, data)
            with lock:
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    errors.append(f"{path}: {status} {text}")
                texts[str(path)] = text

    before = health(port)["queue"]
    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    after = health(port)["queue"]
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, e.g. {errors[0]}")
    latencies.sort()
    audio = sum(d for _, _, d in files)
    return {
        "throughput": audio / wall,
        "p50": latencies[len(latencies) // 2],
        "p95": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        "texts": texts,
        "mean_batch": (after["chunks"] - before["chunks"]) / max(1, after["batches"] - before["batches"]),
        "busy": (after["busy_seconds"] - before["busy_seconds"]) / wall,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--audio", nargs="+", required=True, help="audio files or a .jsonl manifest")
    p.add_argument("--requests", type=int, default=96, help="requests per client count (files reused if fewer)")
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--batch-size", type=int, default=32, help="the batched server's --batch-size")
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=2, help="the server's torch threads")
    args = p.parse_args()

    paths: list[Path] = []
    for a in args.audio:
        paths += [Path(u.audio_filepath) for u in read_manifest(a)] if a.endswith(".jsonl") else [Path(a)]
    files = []
    for i in range(args.requests):
        path = paths[i % len(paths)]
        frames, sr = audio_info(path)
        files.append((path, path.read_bytes(), frames / sr))
    clients = [int(c) for c in args.clients.split(",")]
    audio = sum(d for _, _, d in files)
    print(f"{len(files)} requests, {audio:.1f} s of audio (mean {audio / len(files):.2f} s), {args.threads} threads")

    results: dict[str, dict[int, dict]] = {}
    for mode, batch in (("batched", args.batch_size), ("one at a time", 1)):
        proc, port = start_server(args, batch)
        try:
            # Each client count twice, the second measured: the first meets new batch shapes (oneDNN builds its
            # kernels per shape), which a server that has been up a while has seen.
            results[mode] = {c: [run(port, files, c) for _ in range(2)][-1] for c in clients}
        finally:
            proc.terminate()
            proc.wait()
    for c in clients:
        if results["batched"][c]["texts"] != results["one at a time"][c]["texts"]:
            print(f"warning: {c} clients: batched texts differ from one-at-a-time texts", file=sys.stderr)

    print(
        "\n| clients | mode | audio-s/s | p50 latency (s) | p95 latency (s) | chunks per batch | worker busy "
        "| batched / one at a time |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for c in clients:
        for mode in results:
            r = results[mode][c]
            ratio = results["batched"][c]["throughput"] / results["one at a time"][c]["throughput"]
            extra = f"{ratio:.2f}x" if mode == "batched" else ""
            print(
                f"| {c} | {mode} | {r['throughput']:.1f} | {r['p50']:.3f} | {r['p95']:.3f} | {r['mean_batch']:.1f} "
                f"| {100 * r['busy']:.0f}% | {extra} |"
            )


if __name__ == "__main__":
    main()
