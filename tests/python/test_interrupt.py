"""Stopping a generation from another thread (Ctrl-C, Pipeline.cancel, Stream.cancel), and the
GIL released while the engine works. Each long generation here would run for seconds (1000
tokens a prompt) if the interruption did not stop it."""

import _thread
import threading
import time

import pytest

LONG = dict(max_new_tokens=1000, temperature=0.0, ignore_eos=True)
PROMPTS = ["x", "Debian", "def f(", "import"]


def later(seconds, fn):
    t = threading.Timer(seconds, fn)
    t.start()
    return t


def test_ctrl_c_stops_a_generation_and_the_pipeline_stays_usable(pipe):
    before = pipe("Debian is", max_new_tokens=16, temperature=0.0)[0].generated_ids
    start = time.monotonic()
    timer = later(0.3, _thread.interrupt_main)  # what Ctrl-C does to the main thread
    with pytest.raises(KeyboardInterrupt):
        pipe(PROMPTS, **LONG)
    elapsed = time.monotonic() - start
    timer.join()
    assert elapsed < 2.0, f"the interrupted call took {elapsed:.2f} s"
    # Usable, and the interrupted requests are gone: a new call gives what it gave before.
    assert pipe("Debian is", max_new_tokens=16, temperature=0.0)[0].generated_ids == before


def test_ctrl_c_stops_a_stream(pipe):
    stream = pipe.stream("x", **LONG)
    got = []
    with pytest.raises(KeyboardInterrupt):
        for piece in stream:
            got.append(piece)
            if len(got) == 5:
                later(0.05, _thread.interrupt_main)
    stream.close()
    assert stream.response.finish_reason == "cancelled"
    assert 5 <= stream.response.generated_length < 1000
    assert pipe("x", max_new_tokens=3, **{k: v for k, v in LONG.items() if k != "max_new_tokens"})[0].generated_length == 3


def test_pipeline_cancel_from_another_thread_returns_what_was_generated(pipe):
    start = time.monotonic()
    timer = later(0.5, pipe.cancel)
    responses = pipe(PROMPTS, **LONG)
    timer.join()
    assert time.monotonic() - start < 2.5
    for prompt, r in zip(PROMPTS, responses):
        assert r.finish_reason == "cancelled"
        assert 0 < r.generated_length < 1000
        assert r.generated_length == len(r.generated_ids)
        # What it generated until then is the start of the uninterrupted answer.
        alone = pipe(prompt, **dict(LONG, max_new_tokens=r.generated_length))[0]
        assert alone.generated_ids == r.generated_ids, prompt


def test_stream_cancel_from_another_thread_ends_the_iteration(pipe):
    stream = pipe.stream("x", **LONG)
    timer = later(0.3, stream.cancel)
    text = "".join(stream)  # ends by itself once cancelled
    timer.join()
    r = stream.response
    assert r.finish_reason == "cancelled" and 0 < r.generated_length < 1000
    assert text == r.generated_text


def test_leaving_a_stream_early_cancels_it(pipe):
    stream = pipe.stream("x", **LONG)
    next(stream)
    stream.close()
    assert stream.response.finish_reason == "cancelled"
    assert list(stream) == []


def test_the_gil_is_released_while_generating(pipe):
    results = []
    worker = threading.Thread(target=lambda: results.append(pipe("x", **dict(LONG, max_new_tokens=800))))
    longest_gap, last = 0.0, time.monotonic()
    start = last
    worker.start()
    while worker.is_alive():
        now = time.monotonic()
        longest_gap, last = max(longest_gap, now - last), now
    worker.join()
    assert results and results[0][0].generated_length == 800
    assert last - start > 0.5, "the generation was too short to tell"
    # Holding the GIL would have stopped this thread for the whole generation.
    assert longest_gap < 0.25, f"the main thread stood still for {longest_gap:.3f} s"


def test_threads_may_share_a_pipeline(pipe):
    alone = [pipe(p, max_new_tokens=24, temperature=0.0)[0].generated_ids for p in PROMPTS]
    out = [None] * len(PROMPTS)

    def run(i):
        out[i] = pipe(PROMPTS[i], max_new_tokens=24, temperature=0.0)[0].generated_ids

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == alone
