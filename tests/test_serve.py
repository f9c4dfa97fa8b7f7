"""`asr serve`: the real `openai` client against a server on a free port, errors, the batching queue, the CLI.

The page's browser test is in tests/test_serve_page.py."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from asr.audio import write_audio  # noqa: E402
from asr.cli import main  # noqa: E402
from asr.data.manifest import read_manifest  # noqa: E402
from asr.recognizer import load_model  # noqa: E402
from asr.serve import BatchingQueue, QueueFull, ServeConfig, create_app, running  # noqa: E402
from asr.transcript import to_srt, to_vtt  # noqa: E402

CHUNK_S = 1.0  # the server and `asr transcribe` cut the long file at pauses into chunks of at most this


@pytest.fixture(scope="module")
def rec(tone_model):
    return load_model(tone_model)


@pytest.fixture(scope="module")
def files(tone_corpus, tmp_path_factory) -> dict[str, Path]:
    """Test utterances, one long recording made of several (cut at pauses), and bad uploads."""
    folder = tmp_path_factory.mktemp("serve_files")
    utts = read_manifest(tone_corpus["test"])
    out = {f"utt{i}": Path(u.audio_filepath) for i, u in enumerate(utts[:8])}
    import soundfile as sf

    pieces = [sf.read(u.audio_filepath, dtype="float32")[0] for u in utts[8:14]]
    gap = np.zeros(8000, dtype=np.float32)
    long = np.concatenate([x for p in pieces for x in (p, gap)])
    write_audio(folder / "long.wav", long, 16000)
    out["long"] = folder / "long.wav"
    (folder / "broken.wav").write_bytes(b"RIFF....WAVEfmt this is not audio")
    out["broken"] = folder / "broken.wav"
    (folder / "empty.wav").write_bytes(b"")
    out["empty"] = folder / "empty.wav"
    write_audio(folder / "too_long.wav", np.zeros(8000 * 40, dtype=np.float32), 8000)  # 40 s, 640 kB
    out["too_long"] = folder / "too_long.wav"
    (folder / "big.wav").write_bytes(b"\0" * (3 * 1024 * 1024))  # over the 2 MB limit
    out["big"] = folder / "big.wav"
    return out


CONFIG = dict(max_batch=16, max_wait_ms=100.0, max_upload_mb=2.0, max_audio_seconds=30.0, max_chunk_seconds=CHUNK_S)


@pytest.fixture(scope="module")
def server(rec):
    """(base URL, the TranscriptionServer) of a server on a free port, with the model's own decoding options."""
    app = create_app(rec, rec.options(), ServeConfig(model_id="tone", **CONFIG))
    with running(app) as url:
        yield url, app.state.server


def client(url: str, key: str = "not-needed") -> "openai.OpenAI":
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)


def transcribe(c, path: Path, **kw):
    with open(path, "rb") as f:
        return c.audio.transcriptions.create(model="tone", file=f, **kw)


def cli_transcripts(tone_model, paths: list[Path], capsys, *flags: str) -> dict[str, str]:
    """What `asr transcribe` prints for these files: {path: text}."""
    args = ["transcribe", "--model", str(tone_model), "--max-chunk-seconds", str(CHUNK_S), *flags]
    assert main(args + [str(p) for p in paths]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    return dict(line.split("\t", 1) if "\t" in line else (line, "") for line in lines)


def test_openai_client_json_text_srt_vtt_equal_asr_transcribe(server, rec, files, tone_model, capsys):
    url, _ = server
    c = client(url)
    paths = [files["utt0"], files["utt1"], files["long"]]
    expected = cli_transcripts(tone_model, paths, capsys)
    transcripts = rec.transcribe([str(p) for p in paths], max_chunk_seconds=CHUNK_S)
    assert len(transcripts[-1].segments) >= 3  # the long file really was cut at pauses
    for path, t in zip(paths, transcripts):
        assert t.text == expected[str(path)]
        assert transcribe(c, path).text == t.text  # json
        assert transcribe(c, path, response_format="text").strip() == t.text
        assert transcribe(c, path, response_format="srt") == to_srt(t)
        assert transcribe(c, path, response_format="vtt") == to_vtt(t)
    assert any(t.text for t in transcripts)  # the tiny model does say something


def test_verbose_json_has_segments_and_word_times(server, rec, files, tone_model, capsys):
    url, _ = server
    c = client(url)
    path = files["long"]
    expected = rec.transcribe([str(path)], max_chunk_seconds=CHUNK_S, decoder="ctc")[0]
    assert expected.text == cli_transcripts(tone_model, [path], capsys, "--decoder", "ctc")[str(path)]
    r = transcribe(
        c,
        path,
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
        extra_body={"decoder": "ctc"},
    )
    assert r.text == expected.text and r.text
    assert r.duration == pytest.approx(expected.duration, abs=1e-3)
    assert [s.text for s in r.segments] == [s.text for s in expected.segments]
    for s, e in zip(r.segments, expected.segments):
        assert (s.start, s.end) == (pytest.approx(e.start, abs=1e-3), pytest.approx(e.end, abs=1e-3))
        assert s.avg_logprob <= 0 and s.tokens == e.tokens
    words = r.words
    assert " ".join(w.word for w in words) == r.text  # every word has times: CTC gives token times
    starts = [w.start for w in words]
    assert starts == sorted(starts) and all(0 <= w.start < w.end <= r.duration + 1e-3 for w in words)
    for w in words:  # each word lies inside a segment
        assert any(s.start - 1e-3 <= w.start and w.end <= s.end + 1e-3 for s in r.segments)
    # Beam search (the server's default) has no times of its own: CTC forced alignment gives them.
    only_words = transcribe(c, path, response_format="verbose_json", timestamp_granularities=["word"])
    assert only_words.segments is None  # what OpenAI does with word alone
    beam = rec.transcribe([str(path)], max_chunk_seconds=CHUNK_S)[0]
    assert " ".join(w.word for w in only_words.words) == beam.text == only_words.text
    for w, e in zip(only_words.words, [w for s in beam.segments for w in s.words]):
        assert (w.start, w.end) == (pytest.approx(e.start, abs=1e-3), pytest.approx(e.end, abs=1e-3))
        assert 0 <= w.start < w.end <= only_words.duration + 1e-3


def api_error(excinfo) -> dict:
    body = excinfo.value.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_bad_requests_get_openai_errors_and_the_next_request_succeeds(server, files):
    url, srv = server
    c = client(url)
    good = transcribe(c, files["utt2"]).text
    cases = [
        (files["broken"], {}, openai.BadRequestError, 400, "file", "broken.wav"),
        (files["empty"], {}, openai.BadRequestError, 400, "file", "empty.wav"),
        (files["too_long"], {}, openai.BadRequestError, 400, "file", "longer than this server's limit of 30 s"),
        (files["big"], {}, openai.APIStatusError, 413, "file", "2 MB"),
        (files["utt2"], {"response_format": "xml"}, openai.BadRequestError, 400, "response_format", "xml"),
        (files["utt2"], {"temperature": 3.0}, openai.BadRequestError, 400, "temperature", "0 to 1"),
        (files["utt2"], {"extra_body": {"beam": "5"}}, openai.BadRequestError, 400, "beam", "unrecognized"),
        (files["utt2"], {"extra_body": {"decoder": "beam0"}}, openai.BadRequestError, 400, "decoder", "beam"),
        (
            files["utt2"],
            {"response_format": "json", "timestamp_granularities": ["word"]},
            openai.BadRequestError,
            400,
            "timestamp_granularities",
            "verbose_json",
        ),
    ]
    for path, kw, kind, status, param, words in cases:
        with pytest.raises(kind) as excinfo:
            transcribe(c, path, **kw)
        assert excinfo.value.status_code == status, (path, kw)
        err = api_error(excinfo)
        assert err["param"] == param and words in err["message"], err
        assert err["type"] == "invalid_request_error"
        assert transcribe(c, files["utt2"]).text == good  # the server is still there, and still right
    # Not multipart at all, and a malformed multipart body: 400 in the same shape.
    for body, ctype in (
        (b'{"file": "x"}', "application/json"),
        (b"--xx\r\ngarbage", "multipart/form-data; boundary=xx"),
    ):
        conn = http.client.HTTPConnection(url.split("//")[1], timeout=30)
        conn.request("POST", "/v1/audio/transcriptions", body, {"Content-Type": ctype})
        resp = conn.getresponse()
        assert resp.status == 400
        assert set(json.loads(resp.read())["error"]) == {"message", "type", "param", "code"}
    assert transcribe(c, files["utt2"]).text == good
    assert srv.queue.stats.failed_batches == 0


def test_models_and_health(server):
    url, _ = server
    c = client(url)
    assert [m.id for m in c.models.list().data] == ["tone"]
    assert c.models.retrieve("tone").id == "tone"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("whisper-1")
    conn = http.client.HTTPConnection(url.split("//")[1], timeout=30)
    conn.request("GET", "/health")
    health = json.loads(conn.getresponse().read())
    assert health["status"] == "ok" and health["model"] == "tone" and not health["api_key_required"]
    assert "batches" in health["queue"]


def raw_post(url: str, path: Path, headers: dict | None = None) -> tuple[int, dict]:
    """POST a file as multipart without the openai client (which always sends an Authorization header)."""
    boundary = "testboundary42"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n\r\n'.encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    conn = http.client.HTTPConnection(url.split("//")[1], timeout=60)
    conn.request(
        "POST",
        "/v1/audio/transcriptions",
        body,
        {"Content-Type": f"multipart/form-data; boundary={boundary}", **(headers or {})},
    )
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def test_api_key_is_required_when_set(rec, files):
    app = create_app(rec, rec.options(), ServeConfig(model_id="tone", api_key="sekret", **CONFIG))
    with running(app) as url:
        with pytest.raises(openai.AuthenticationError) as excinfo:
            transcribe(client(url, "wrong"), files["utt0"])
        assert excinfo.value.status_code == 401 and api_error(excinfo)["code"] == "invalid_api_key"
        status, body = raw_post(url, files["utt0"])  # no key at all
        assert status == 401 and "no API key" in body["error"]["message"]
        with pytest.raises(openai.AuthenticationError):
            client(url, "wrong").models.list()
        expected = rec.transcribe([str(files["utt0"])])[0].text
        assert transcribe(client(url, "sekret"), files["utt0"]).text == expected
        assert raw_post(url, files["utt0"], {"Authorization": "Bearer sekret"}) == (200, {"text": expected})
        conn = http.client.HTTPConnection(url.split("//")[1], timeout=30)
        conn.request("GET", "/")  # the page and /health need no key: the page asks for it
        assert conn.getresponse().status == 200


def test_queue_full_gives_503_and_the_next_request_succeeds(rec, files):
    config = {**CONFIG, "max_queue": 2}  # the long file cuts into more chunks than the queue holds
    app = create_app(rec, rec.options(), ServeConfig(model_id="tone", **config))
    with running(app) as url:
        c = client(url)
        with pytest.raises(openai.InternalServerError) as excinfo:
            transcribe(c, files["long"])
        assert excinfo.value.status_code == 503 and excinfo.value.response.headers["retry-after"] == "1"
        err = api_error(excinfo)
        assert err["code"] == "queue_full" and err["type"] == "server_error"
        assert transcribe(c, files["utt0"]).text == rec.transcribe([str(files["utt0"])])[0].text
        assert app.state.server.queue.stats.rejected == 1


def test_32_concurrent_requests_are_batched_and_give_the_one_at_a_time_texts(server, files):
    url, srv = server
    c = client(url)
    paths = [files[f"utt{i % 8}"] for i in range(31)] + [files["long"]]
    alone = {str(p): transcribe(c, p).text for p in set(paths)}  # one at a time
    paths += [files["broken"], files["empty"], files["big"]]  # bad requests among them disturb nobody
    before = srv.queue.stats.to_dict()
    results: dict[int, str] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(paths))

    def one(i: int, path: Path) -> None:
        try:
            cl = client(url)
            barrier.wait()
            results[i] = transcribe(cl, path).text
        except openai.APIStatusError as e:
            results[i] = e.status_code
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(paths)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert [results[i] for i in range(32)] == [alone[str(p)] for p in paths[:32]]
    assert [results[i] for i in range(32, 35)] == [400, 400, 413]
    after = srv.queue.stats.to_dict()
    chunks, batches = after["chunks"] - before["chunks"], after["batches"] - before["batches"]
    assert after["requests"] - before["requests"] == 32
    assert chunks >= 32 and batches < chunks / 2  # the queue really batched: fewer than half as many decodes
    assert after["largest_batch"] > 1


def test_batching_queue_refuses_when_full_groups_by_options_and_survives_a_failing_batch(rec):
    import torch

    release = threading.Event()
    calls: list[tuple[int, object]] = []

    def decode_batch(chunks, options):
        release.wait(30)
        calls.append((len(chunks), options))
        if any(c.numel() == 7 for c in chunks):
            raise RuntimeError("boom")
        return [f"{options.decoder}:{c.numel()}" for c in chunks]

    q = BatchingQueue(decode_batch, max_batch=8, max_wait_ms=1, max_queue=4)
    q.start()
    try:
        greedy, ctc = rec.options(decoder="greedy"), rec.options(decoder="ctc")
        blocker = q.submit([torch.zeros(1)], greedy)  # the worker holds this one until released
        time.sleep(0.1)
        a = q.submit([torch.zeros(2), torch.zeros(3)], greedy)
        b = q.submit([torch.zeros(4)], ctc)
        with pytest.raises(QueueFull):
            q.submit([torch.zeros(5), torch.zeros(6)], greedy)  # 3 waiting + 2 > 4
        release.set()
        assert blocker[0].result(10) == "greedy:1"
        assert [f.result(10) for f in a] == ["greedy:2", "greedy:3"]  # one batch: same options
        assert b[0].result(10) == "ctc:4"  # its own batch: other options
        bad = q.submit([torch.zeros(7)], ctc)
        with pytest.raises(RuntimeError, match="boom"):
            bad[0].result(10)
        after = q.submit([torch.zeros(8)], greedy)  # the worker is still alive after a failed batch
        assert after[0].result(10) == "greedy:8"
    finally:
        q.stop()
    assert [n for n, _ in calls] == [1, 2, 1, 1, 1]  # greedy, greedy x2, ctc, the failing ctc, greedy
    assert q.stats.rejected == 1 and q.stats.failed_batches == 1 and q.stats.largest_batch == 2
    with pytest.raises(ValueError, match="max_batch"):
        BatchingQueue(decode_batch, max_batch=0)


def test_asr_serve_command_logs_one_line_per_request(tone_model, files):
    cmd = [sys.executable, "-m", "asr.cli", "serve", "--model", str(tone_model), "--port", "0", "--api-key", "k1"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in proc.stderr:
            found = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
                break
        assert port, "asr serve printed no address"
        c = client(f"http://127.0.0.1:{port}", "k1")
        assert [m.id for m in c.models.list().data] == [tone_model.parent.name]  # exp/NAME/model.pt is NAME
        assert isinstance(transcribe(c, files["utt0"]).text, str)
        with pytest.raises(openai.BadRequestError):
            transcribe(c, files["broken"])
        proc.terminate()  # SIGTERM: a clean shutdown, exit status 0
        log = proc.stderr.read()
        assert proc.wait(30) == 0, log
    finally:
        proc.kill()
        proc.wait()
    assert "shutting down" in log
    lines = [line for line in log.splitlines() if line.startswith("req-")]
    assert re.match(r"req-000001 200 audio \d+\.\d\d s decode \d+ ms", lines[0]), log
    assert re.match(r"req-000002 400 audio 0\.00 s", lines[1]), log


def test_asr_serve_refuses_bad_flags(tone_model, capsys):
    assert main(["serve", "--model", str(tone_model), "--max-queue", "0"]) == 2
    assert "--max-queue" in capsys.readouterr().err
    assert main(["serve", "--model", str(tone_model), "--decoder", "ctc", "--beam-size", "4"]) == 2
    assert "--beam-size" in capsys.readouterr().err


def test_flac_ogg_and_mp3_uploads_give_the_wav_text(server, rec, files, tmp_path):
    import jiwer
    import soundfile as sf

    url, _ = server
    c = client(url)
    x, sr = sf.read(files["long"], dtype="float32")
    expected = transcribe(c, files["long"]).text
    for fmt, subtype in (("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")):
        if fmt not in sf.available_formats():
            continue
        path = tmp_path / f"long.{fmt.lower()}"
        sf.write(path, np.stack([x, x], 1), sr, format=fmt, subtype=subtype)  # stereo, another container
        text = transcribe(c, path).text
        if subtype == "PCM_16":
            assert text == expected
        else:  # lossy codecs on a tiny tone model: nearly the same words (a tone or two lost or gained)
            assert jiwer.wer(expected, text) <= 0.2, (fmt, text, expected)
