"""A real uvicorn server on 127.0.0.1 (a free port, a thread, shut down at the end): the official
openai client, a client that disconnects mid-stream, and the page in headless Chromium."""

import os
import shutil
import time

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from redraft.model import load  # noqa: E402
from redraft.serve import create_app  # noqa: E402
from redraft.serve.limits import Limits  # noqa: E402
from tests.serve.live import running  # noqa: E402

CHROMIUM = os.environ.get("REDRAFT_CHROMIUM") or shutil.which("chromium") or next(
    (p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)


@pytest.fixture(scope="module")
def server(serve_runs):
    app = create_app([load(serve_runs["mdlm"]), load(serve_runs["ar"])],
                     max_steps=10**6, grace_s=1.0, limits=Limits(max_work=10**9))
    with running(app, log_level="warning") as (port, thread):
        yield f"http://127.0.0.1:{port}", app.state.engine
    assert not thread.is_alive()


def test_openai_client(server):
    openai = pytest.importorskip("openai")
    url, _ = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)
    assert [m.id for m in client.models.list().data] == ["mdlm", "ar"]
    extra = {"steps": 8}
    done = client.completions.create(model="mdlm", prompt="the ", max_tokens=12, seed=4, n=2,
                                     extra_body=extra)
    assert len(done.choices) == 2 and done.usage.completion_tokens == 24
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="mdlm", prompt="the ", max_tokens=12, seed=4, stream=True, extra_body=extra)
        if c.choices)
    assert streamed == done.choices[0].text
    chat = client.chat.completions.create(
        model="ar", messages=[{"role": "user", "content": "the cat"}], max_tokens=6, seed=1)
    reply = chat.choices[0].message.content
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens == 6
    chunks = client.chat.completions.create(
        model="ar", messages=[{"role": "user", "content": "the cat"}], max_tokens=6, seed=1,
        stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply
    with pytest.raises(openai.BadRequestError, match="steps"):
        client.completions.create(model="mdlm", prompt="x", extra_body={"steps": 0})


def test_disconnect_cancels_work(server):
    url, engine = server
    body = {"prompt": "the ", "max_tokens": 40, "steps": 10**6, "stream": True,
            "diffusing": True, "seed": 1}
    before = engine.metrics.cancelled
    with httpx.Client(timeout=20) as client:
        other = client.build_request("POST", url + "/v1/completions", json={**body, "n": 2})
        keep = client.send(other, stream=True)  # stays connected throughout
        with client.stream("POST", url + "/v1/completions", json=body) as r:
            lines = r.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))
            end = time.monotonic() + 10
            while engine.stats()["active_rows"] != 3:
                assert time.monotonic() < end
                time.sleep(0.01)
        # The socket is closed: the server notices, cancels, and the batch shrinks to 2 rows.
        end = time.monotonic() + 10
        while engine.stats()["active_rows"] != 2:
            assert time.monotonic() < end, engine.stats()
            time.sleep(0.01)
        assert engine.metrics.cancelled == before + 1
        keep.close()
    end = time.monotonic() + 10
    while engine.stats()["active_rows"]:
        assert time.monotonic() < end, engine.stats()
        time.sleep(0.01)


# Record every text the draft shows (each set replaces the node: addedNodes holds it).
RECORD = """() => { window.seen = [];
    new MutationObserver((ms) => ms.forEach((m) => m.addedNodes.forEach(
        (n) => window.seen.push(n.textContent)))).observe(
        document.querySelector('#draft .text'), {childList: true}); }"""


def in_chromium(url: str, models: int, act) -> tuple[list[str], str, str]:
    """Open the page, wait for its `models` models, run act(page), click Generate and wait for
    the end: (every text the draft showed, the status line, the final text)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.wait_for_function(f"document.querySelector('#model').options.length == {models}")
            act(page)
            page.evaluate(RECORD)
            page.click("#go")
            page.wait_for_function("document.querySelector('#status').textContent"
                                   ".startsWith('done')", timeout=60_000)
            return (page.evaluate("window.seen"), page.text_content("#status"),
                    page.text_content("#draft .text"))
        finally:
            browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian package 'chromium')")
def test_page_in_chromium(server):
    url, _ = server

    def act(page):
        page.fill("#prompt", "the ")
        page.fill("#steps", "300")
        page.fill("#max_tokens", "40")
        page.select_option("#sampler", "ancestral")
        assert page.is_hidden("#mode_label")  # neither model has modes to pick

    seen, status, final = in_chromium(url, 2, act)
    drafts = [s for s in seen if "░" in s]
    assert len(set(drafts)) >= 3, seen[:5]  # the draft changed in place, step after step
    assert drafts[0].count("░") > drafts[-1].count("░")
    assert "░" not in final and len(final) > 0 and "tokens/s" in status and "300 steps" in status


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian package 'chromium')")
def test_page_shows_a_hybrid_writing_the_ar_text(hybrid_run):
    """A hybrid on the page: its modes to pick (steps and the step rule only for block), the
    accepted runs landing in place, and greedy speculative text equal to the AR mode's."""
    hybrid = load(hybrid_run)
    expected = hybrid.generate("the c", max_new_tokens=24, temperature=0, mode="ar").completions[0]
    app = create_app([hybrid], max_steps=10**6, grace_s=1.0, limits=Limits(max_work=10**9))

    def act(page):
        assert page.is_visible("#mode_label") and page.is_disabled("#steps")
        page.select_option("#mode", "block")
        assert page.is_enabled("#steps") and page.is_enabled("#sampler")
        page.select_option("#mode", "speculative")
        assert page.is_disabled("#steps") and page.is_disabled("#sampler")
        page.fill("#prompt", "the c")
        page.fill("#max_tokens", "24")
        page.fill("#temperature", "0")

    with running(app, log_level="warning") as (port, _):
        seen, status, final = in_chromium(f"http://127.0.0.1:{port}", 1, act)
    # Accepted runs land in place: every draft shown is the final text's beginning, then masks.
    # (How many drafts arrive depends on timing: a stream skips to the newest, and this
    # greedy run may end before the page reads a draft at all.)
    assert all(final.startswith(s.split("░")[0]) for s in seen if "░" in s), seen
    assert final == expected and "tokens/forward" in status and "steps" not in status
