"""The local model endpoint: a real server process on a free 127.0.0.1 port, real HTTP, real clients."""

from __future__ import annotations

import http.client
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest

from release.local_env.responder import Messages, Params, respond

REPO = Path(__file__).resolve().parents[2]
KEY = "canary-model-key-7f3a9c"  # a canary: it must never show up in output
START_TIMEOUT_S = 20.0


# --------------------------------------------------------------------------- server processes


class Server:
    def __init__(self, extra_args: list[str], env_key: str | None = KEY) -> None:
        env = {k: v for k, v in os.environ.items() if k != "LOCAL_MODEL_API_KEY"}
        if env_key is not None:
            env["LOCAL_MODEL_API_KEY"] = env_key
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "release.local_env.model_server", "--port", "0", *extra_args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.url = ""
        self.ready_line = ""

    def wait_ready(self) -> Server:
        assert self.proc.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if selector.select(timeout=0.2):
                self.ready_line = self.proc.stdout.readline().strip()
                break
            if self.proc.poll() is not None:
                break
        selector.close()
        if not self.ready_line.startswith("model endpoint listening on http://127.0.0.1:"):
            self.stop()
            raise AssertionError(f"server did not start: {self.ready_line!r} {self.stderr()}")
        self.url = self.ready_line.rsplit(" ", 1)[1]
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    @property
    def port(self) -> int:
        return int(urlsplit(self.url).port or 0)


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    srv = Server([]).wait_ready()
    yield srv
    srv.stop()
    assert srv.proc.returncode == 0
    assert KEY not in (srv.proc.stdout.read() if srv.proc.stdout else "") + srv.stderr()


@pytest.fixture()
def quiet(server: Server) -> Iterator[Server]:
    """The shared server with no faults before and after the test."""
    assert http_call(server, "POST", "/admin/faults", {})[0] == 200
    yield server
    assert http_call(server, "POST", "/admin/faults", {})[0] == 200


def http_call(
    server: Server,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, dict[str, str], bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    all_headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    all_headers.update(headers or {})
    conn.request(method, path, body=payload, headers=all_headers)
    response = conn.getresponse()
    data = response.read()
    result = response.status, {k.lower(): v for k, v in response.getheaders()}, data
    if own:
        conn.close()
    return result


def client(server: Server, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, **kwargs)


def azure_client(server: Server, **kwargs: Any) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=server.url, api_key=KEY, api_version="2024-10-21", max_retries=0, **kwargs
    )


HELLO = [{"role": "user", "content": "Please describe the blue whale. It is the largest animal alive."}]


# --------------------------------------------------------------------------- conformance


def test_ready_line_health_and_models(server: Server) -> None:
    status, headers, body = http_call(server, "GET", "/health", headers={"Authorization": ""})
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body)["status"] == "ok"
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["local-model"]


@pytest.mark.parametrize("stream", [False, True])
def test_openai_client(quiet: Server, stream: bool) -> None:
    c = client(quiet)
    plain = c.chat.completions.create(model="gpt-4o-mini", messages=HELLO)  # type: ignore[arg-type]
    assert plain.object == "chat.completion" and plain.id.startswith("chatcmpl-")
    assert plain.model == "gpt-4o-mini"
    assert plain.choices[0].message.role == "assistant"
    assert plain.choices[0].finish_reason == "stop"
    text = plain.choices[0].message.content
    assert text and "blue whale" in text
    usage = plain.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    if stream:
        chunks = list(
            c.chat.completions.create(
                model="gpt-4o-mini",
                messages=HELLO,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert all(ch.object == "chat.completion.chunk" for ch in chunks)
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == text
        assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.total_tokens == usage.total_tokens


@pytest.mark.parametrize("stream", [False, True])
def test_azure_openai_client(quiet: Server, stream: bool) -> None:
    c = azure_client(quiet)
    messages = [
        {"role": "system", "content": "Answer from the context."},
        {
            "role": "user",
            "content": "Context: The Nile flows north into the Mediterranean Sea. Mount Everest is in Nepal.\n"
            "Question: Where does the Nile flow?",
        },
    ]
    if not stream:
        result = c.chat.completions.create(model="gpt-35-deployment", messages=messages)  # type: ignore[arg-type]
        assert result.model == "gpt-35-deployment"
        assert result.choices[0].message.content == "The Nile flows north into the Mediterranean Sea."
        assert result.usage is not None and result.usage.total_tokens > 0
    else:
        chunks = list(
            c.chat.completions.create(
                model="gpt-35-deployment",
                messages=messages,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert text == "The Nile flows north into the Mediterranean Sea."
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_api_key_is_checked(quiet: Server) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{quiet.url}/v1", api_key="wrong", max_retries=0).chat.completions.create(
            model="m",
            messages=HELLO,  # type: ignore[arg-type]
        )
    with pytest.raises(openai.AuthenticationError):
        openai.AzureOpenAI(
            azure_endpoint=quiet.url, api_key="wrong", api_version="2024-10-21", max_retries=0
        ).chat.completions.create(model="d", messages=HELLO)  # type: ignore[arg-type]
    body = {"messages": HELLO}
    status, _, data = http_call(quiet, "POST", "/v1/chat/completions", body, headers={"Authorization": ""})
    assert status == 401 and json.loads(data)["error"]["code"] == "invalid_api_key"
    assert KEY not in data.decode()
    # the Azure route takes the key in api-key (the OpenAI route only as a bearer token)
    azure = "/openai/deployments/d1/chat/completions?api-version=2024-10-21"
    assert http_call(quiet, "POST", azure, body, headers={"Authorization": "", "api-key": KEY})[0] == 200
    openai_route = http_call(
        quiet, "POST", "/v1/chat/completions", body, {"Authorization": "", "api-key": KEY}
    )
    assert openai_route[0] == 401
    assert http_call(quiet, "POST", "/admin/faults", {}, headers={"Authorization": "Bearer nope"})[0] == 401


def test_bad_requests(quiet: Server) -> None:
    assert http_call(quiet, "GET", "/v2/nothing")[0] == 404
    assert http_call(quiet, "GET", "/v1/chat/completions")[0] == 405
    status, _, data = http_call(quiet, "POST", "/v1/chat/completions", raw=b"{not json")
    assert status == 400 and "JSON" in json.loads(data)["error"]["message"]
    status, _, data = http_call(quiet, "POST", "/v1/chat/completions", {"messages": []})
    assert status == 400 and json.loads(data)["error"]["param"] == "messages"
    status, _, data = http_call(quiet, "POST", "/v1/chat/completions", {"messages": HELLO, "temperature": 9})
    assert status == 400 and json.loads(data)["error"]["param"] == "temperature"
    no_version = http_call(quiet, "POST", "/openai/deployments/d1/chat/completions", {"messages": HELLO})
    assert no_version[0] == 400 and b"api-version" in no_version[2]
    # what promptflow-tools sends: nulls for unset optional parameters
    nulls = {
        "messages": HELLO,
        "model": "m",
        "presence_penalty": None,
        "frequency_penalty": None,
        "max_tokens": None,
        "stop": None,
        "seed": None,
        "response_format": None,
        "stream_options": None,
        "logit_bias": {},
        "user": "",
        "temperature": 1.0,
        "top_p": 1.0,
        "n": 1,
        "stream": False,
    }
    assert http_call(quiet, "POST", "/v1/chat/completions", nulls)[0] == 200


def test_keep_alive_and_max_tokens(quiet: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", quiet.port, timeout=10)
    long_prompt = [
        {"role": "user", "content": "one two three four five six seven eight nine ten eleven twelve."}
    ]
    results = [
        http_call(
            quiet, "POST", "/v1/chat/completions", {"messages": long_prompt, "max_tokens": 4}, conn=conn
        )
        for _ in range(3)
    ]
    conn.close()
    for status, _, data in results:
        answer = json.loads(data)
        assert status == 200
        assert answer["choices"][0]["finish_reason"] == "length"
        assert answer["usage"]["completion_tokens"] == 4
        assert answer["choices"][0]["message"]["content"] == "You said: one"


# --------------------------------------------------------------------------- faults


def test_rate_limit_fault_has_retry_after(quiet: Server) -> None:
    status, headers, data = http_call(
        quiet, "POST", "/v1/chat/completions", {"messages": HELLO}, {"x-fault-429": "7"}
    )
    assert status == 429 and headers["retry-after"] == "7"
    assert json.loads(data)["error"]["code"] == "rate_limit_exceeded"
    assert http_call(quiet, "POST", "/admin/faults", {"rate_limit_rate": 1.0, "retry_after_s": 3})[0] == 200
    with pytest.raises(openai.RateLimitError) as caught:
        client(quiet).chat.completions.create(model="m", messages=HELLO)  # type: ignore[arg-type]
    assert caught.value.response.headers["retry-after"] == "3"


def test_error_rate_is_as_configured_and_reproducible(quiet: Server) -> None:
    def statuses() -> list[int]:
        assert http_call(quiet, "POST", "/admin/faults", {"error_rate": 0.3})[0] == 200
        conn = http.client.HTTPConnection("127.0.0.1", quiet.port, timeout=10)
        out = [
            http_call(quiet, "POST", "/v1/chat/completions", {"messages": HELLO}, conn=conn)[0]
            for _ in range(100)
        ]
        conn.close()
        return out

    first = statuses()
    assert set(first) == {200, 500}
    assert 28 <= first.count(500) <= 32
    assert statuses() == first  # same sequence after a reset: tests built on it are deterministic
    # a per-request header overrides the server's rate
    assert (
        http_call(quiet, "POST", "/v1/chat/completions", {"messages": HELLO}, {"x-fault-error-rate": "1"})[0]
        == 500
    )
    assert (
        http_call(quiet, "POST", "/v1/chat/completions", {"messages": HELLO}, {"x-fault-error-rate": "x"})[0]
        == 400
    )
    with pytest.raises(openai.InternalServerError):
        client(quiet, default_headers={"x-fault-error-rate": "1"}).chat.completions.create(
            model="m",
            messages=HELLO,  # type: ignore[arg-type]
        )


def _injected(server: Server, kind: str) -> int:
    status, _, data = http_call(server, "GET", "/admin/stats")
    assert status == 200
    return int(json.loads(data)["injected"][kind])


def test_latency_fault_delays_that_request_only(quiet: Server) -> None:
    """The injected latency really elapses (a lower bound, which load cannot break), and it
    delays only its own request: one sent while it waits is answered first (an order of events,
    not a duration)."""
    began = time.monotonic()
    status = http_call(
        quiet, "POST", "/v1/chat/completions", {"messages": HELLO}, {"x-fault-latency-ms": "400"}
    )[0]
    assert status == 200 and time.monotonic() - began >= 0.4

    injected = _injected(quiet, "latency")
    finished: list[str] = []

    def delayed() -> None:
        answer = http_call(
            quiet, "POST", "/v1/chat/completions", {"messages": HELLO}, {"x-fault-latency-ms": "4000"}
        )
        finished.append(f"delayed {answer[0]}")

    thread = threading.Thread(target=delayed)
    thread.start()
    deadline = time.monotonic() + 30
    while _injected(quiet, "latency") == injected and time.monotonic() < deadline:
        time.sleep(0.02)  # until the server holds the delayed request
    assert _injected(quiet, "latency") == injected + 1
    status = http_call(quiet, "POST", "/v1/chat/completions", {"messages": HELLO})[0]
    finished.append(f"plain {status}")
    thread.join(timeout=60)
    assert finished == ["plain 200", "delayed 200"]

    # the server-wide setting applies to the official client's requests too
    assert http_call(quiet, "POST", "/admin/faults", {"latency_ms": 300})[0] == 200
    began = time.monotonic()
    client(quiet).chat.completions.create(model="m", messages=HELLO)  # type: ignore[arg-type]
    assert time.monotonic() - began >= 0.3


def test_hang_fault_ends_in_client_timeout(quiet: Server) -> None:
    c = client(quiet, timeout=1.0, default_headers={"x-fault-hang": "true"})
    with pytest.raises(openai.APITimeoutError):
        c.chat.completions.create(model="m", messages=HELLO)  # type: ignore[arg-type]
    # the server keeps serving others meanwhile, and reports what it injected
    status, _, data = http_call(quiet, "GET", "/admin/stats")
    assert status == 200 and json.loads(data)["injected"]["hang"] >= 1


def test_faults_from_start_options_and_file(tmp_path: Path) -> None:
    faults = tmp_path / "faults.yaml"
    faults.write_text("rate_limit_rate: 1.0\nretry_after_s: 9\n")
    servers = [
        Server(["--error-rate", "1"]),
        Server(["--faults", str(faults)]),
        Server(["--faults", str(faults), "--rate-limit-rate", "0", "--latency-ms", "200"]),
    ]
    try:
        error, limited, slow = (s.wait_ready() for s in servers)
        assert http_call(error, "POST", "/v1/chat/completions", {"messages": HELLO})[0] == 500
        status, headers, _ = http_call(limited, "POST", "/v1/chat/completions", {"messages": HELLO})
        assert status == 429 and headers["retry-after"] == "9"
        began = time.monotonic()
        assert http_call(slow, "POST", "/v1/chat/completions", {"messages": HELLO})[0] == 200
        assert time.monotonic() - began >= 0.2  # --latency-ms applied (a lower bound only)
    finally:
        for s in servers:
            s.stop()


def test_refuses_bad_start(tmp_path: Path) -> None:
    no_key = Server([], env_key=None)
    no_key.proc.wait(timeout=20)
    assert no_key.proc.returncode != 0 and "LOCAL_MODEL_API_KEY" in no_key.stderr()
    bad = tmp_path / "faults.json"
    bad.write_text(json.dumps({"error_rate": 1.5}))
    bad_file = Server(["--faults", str(bad)])
    bad_file.proc.wait(timeout=20)
    message = bad_file.stderr()
    assert bad_file.proc.returncode != 0 and str(bad) in message and "error_rate" in message
    typo = tmp_path / "typo.yaml"
    typo.write_text("eror_rate: 0.5\n")
    typo_file = Server(["--faults", str(typo)])
    typo_file.proc.wait(timeout=20)
    assert typo_file.proc.returncode != 0 and "eror_rate: unknown fault setting" in typo_file.stderr()


def test_port_in_use_is_a_clear_error(server: Server) -> None:
    taken = subprocess.run(
        [sys.executable, "-m", "release.local_env.model_server", "--port", str(server.port)],
        cwd=REPO,
        env={**os.environ, "LOCAL_MODEL_API_KEY": KEY},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert taken.returncode != 0
    assert f"127.0.0.1:{server.port} is already in use" in taken.stderr


# --------------------------------------------------------------------------- answers come from the prompt

EXAMPLES = [
    (
        "https://play.google.com/store/apps/details?id=com.spotify.music",
        "Spotify is a free music and podcast streaming app. Download the app on your phone and tablet.",
        '{"category": "App", "evidence": "Both"}',
    ),
    (
        "https://www.imdb.com/title/tt0111161/",
        "The Shawshank Redemption (1994) drama film directed by Frank Darabont, starring Tim Robbins. "
        "Cast, reviews and trailer.",
        '{"category": "Movie", "evidence": "Both"}',
    ),
    (
        "https://arxiv.org/abs/2303.08774",
        "We report the development of a large-scale multimodal model. Abstract, authors, paper and citations.",
        '{"category": "Academic", "evidence": "Text content"}',
    ),
    (
        "https://www.youtube.com/@NatGeo",
        "National Geographic channel: subscribe for videos about wildlife and exploration. 20M subscribers.",
        '{"category": "Channel", "evidence": "Both"}',
    ),
    (
        "https://www.linkedin.com/in/someone",
        "Profile of a chairman and CEO: experience, education, connections and activity.",
        '{"category": "Profile", "evidence": "Both"}',
    ),
]
HELD_OUT = (
    "https://www.imdb.com/title/tt0068646/",
    "The Godfather (1972) crime drama film directed by Francis Ford Coppola, starring Marlon Brando. "
    "Cast, reviews and trailer.",
)


def classification_prompt(examples: list[tuple[str, str, str]], url: str, text: str) -> Messages:
    shots = "".join(f"URL: {u}\nText content: {t}\nOUTPUT:\n{o}\n\n" for u, t, o in examples)
    system = (
        "Your task is to classify a given url into one of the following categories:\n"
        "Movie, App, Academic, Channel, Profile, PDF or None based on the text content information."
    )
    user = (
        'The selection range of the value of "category" must be within "Movie", "App", "Academic", '
        '"Channel", "Profile", "PDF" and "None".\n'
        f"Here are a few examples:\n{shots}"
        "For a given URL and text content, classify the url to complete the category and indicate evidence:\n"
        f"URL: {url}\nText content: {text}.\nOUTPUT:\n"
    )
    return (("system", system), ("user", user))


def category(answer: str) -> str:
    return str(json.loads(answer)["category"])


def test_classifier_reads_the_examples_in_the_prompt(quiet: Server) -> None:
    messages = classification_prompt(EXAMPLES, *HELD_OUT)
    result = client(quiet).chat.completions.create(
        model="m",
        messages=[{"role": r, "content": c} for r, c in messages],  # type: ignore[misc]
        temperature=0,
    )
    assert json.loads(result.choices[0].message.content or "") == {"category": "Movie", "evidence": "Both"}
    # without the movie example the same input cannot be a movie: the answer comes from the prompt
    fewer = classification_prompt([e for e in EXAMPLES if "Movie" not in e[2]], *HELD_OUT)
    assert category(respond(fewer, Params()).choices[0].text) != "Movie"
    app = classification_prompt(
        EXAMPLES,
        "https://apps.apple.com/us/app/duolingo/id570060128",
        "Duolingo: learn languages, download the app",
    )
    assert category(respond(app, Params()).choices[0].text) == "App"


def test_temperature_is_deterministic_but_matters() -> None:
    messages = classification_prompt(EXAMPLES, *HELD_OUT)
    cold = [respond(messages, Params(temperature=0.0, seed=s)).choices[0].text for s in range(20)]
    hot = [respond(messages, Params(temperature=2.0, seed=s)).choices[0].text for s in range(20)]
    assert len(set(cold)) == 1
    assert len(set(hot)) == 2 and category(cold[0]) == "Movie"
    assert hot == [respond(messages, Params(temperature=2.0, seed=s)).choices[0].text for s in range(20)]


def test_turn_style_examples() -> None:
    messages: Messages = (
        ("system", "Classify the sentiment."),
        ("user", "I love this phone, the battery is great"),
        ("assistant", "positive"),
        ("user", "Terrible screen, it broke after a day"),
        ("assistant", "negative"),
        ("user", "The battery is great and I love the camera"),
    )
    assert respond(messages, Params()).choices[0].text == "positive"


SOURCE = (
    "The James Webb Space Telescope is the largest optical telescope in space. "
    "Its high resolution and sensitivity allow it to view objects too old and distant for Hubble. "
    "The telescope was launched in December 2021 on an Ariane 5 rocket. "
    "Cooks in Lyon prefer butter to olive oil. "
    "Webb observes in infrared, so the telescope sees through dust that hides young stars."
)


def test_summary_is_extractive_and_bounded() -> None:
    instruction = "Please summarize the following text in one paragraph. 30 words.\nDo not add any new words."
    answer = respond((("system", instruction), ("user", SOURCE)), Params())
    text = answer.choices[0].text
    assert answer.task == "summarize"
    assert 0 < len(text.split()) <= 30
    assert text in SOURCE or all(s.strip() in SOURCE for s in text.split(". ") if s.strip())
    assert "telescope" in text.lower() and "butter" not in text
    two = respond((("user", f"Summarize this in two sentences:\n{SOURCE}"),), Params()).choices[0].text
    assert two.count(". ") + 1 == 2
    cut = respond((("system", instruction), ("user", SOURCE)), Params(max_tokens=5)).choices[0]
    assert cut.finish_reason == "length" and cut.completion_tokens == 5


def test_grounded_answer_picks_the_matching_sentence() -> None:
    question = "When was the telescope launched?"
    answer = respond((("system", f"Context:\n{SOURCE}"), ("user", f"Question: {question}")), Params())
    assert answer.task == "qa"
    assert answer.choices[0].text == "The telescope was launched in December 2021 on an Ariane 5 rocket."
    unknown = respond((("user", f"Context: {SOURCE}\nQuestion: Who won the football cup?"),), Params())
    assert unknown.choices[0].text == "I cannot find the answer in the given context."


def test_promptflow_llm_tool(quiet: Server) -> None:
    tools = pytest.importorskip("promptflow.tools.openai")
    from promptflow.connections import OpenAIConnection

    connection = OpenAIConnection(api_key=KEY, base_url=f"{quiet.url}/v1")
    prompt = "# system:\nAnswer from the context.\n\n# user:\nContext: {{context}}\nQuestion: {{question}}\n"
    answer = tools.chat(
        connection=connection,
        prompt=prompt,
        model="gpt-35-turbo",
        temperature=0.2,
        max_tokens=64,
        context=SOURCE,
        question="When was the telescope launched?",
    )
    assert answer == "The telescope was launched in December 2021 on an Ariane 5 rocket."


def test_rating_prompt_scores_support_in_the_context() -> None:
    judge = "Rate how well the context supports the answer on a scale of 1 to 5. Reply with one digit."
    context = "Context: The telescope was launched in December 2021 on an Ariane 5 rocket.\n"
    supported = respond(
        (("system", judge), ("user", f"{context}Answer: It was launched in December 2021.")), Params()
    )
    unsupported = respond(
        (("system", judge), ("user", f"{context}Answer: Bananas grow fast in Brazil.")), Params()
    )
    assert supported.task == "rate" and supported.choices[0].text == "5"
    assert unsupported.choices[0].text == "1"


def test_http_framing_pipelined_split_and_http10(quiet: Server) -> None:
    body = json.dumps({"messages": HELLO}).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", quiet.port), timeout=10) as sock:
        two = request + request
        sock.sendall(two[:37])  # split inside the headers, then two pipelined requests at once
        time.sleep(0.05)
        sock.sendall(two[37:])
        received = b""
        while received.count(b"HTTP/1.1 200 OK") < 2 or not received.endswith(b"}}"):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed early: {received!r}"
            received += chunk
    assert received.count(b'"object":"chat.completion"') == 2
    with socket.create_connection(("127.0.0.1", quiet.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):  # HTTP/1.0 without keep-alive: the server closes
            received += chunk
    assert received.startswith((b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK")) and received.endswith(b"}")


def test_chunked_request_body_and_size_limit(quiet: Server) -> None:
    body = json.dumps({"messages": HELLO}).encode()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:]))
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    follow = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", quiet.port), timeout=10) as sock:
        sock.sendall(head + chunked + b"0\r\n\r\n" + follow)  # then a next request, same connection
        received = b""
        while received.count(b" 200 OK") < 2 or not received.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed early: {received!r}"
            received += chunk
    assert b'"object":"chat.completion"' in received and b'"status":"ok"' in received
    too_big = {"messages": [{"role": "user", "content": "x" * (17 * 1024 * 1024)}]}
    status, _, data = http_call(quiet, "POST", "/v1/chat/completions", too_big)
    assert status == 413 and json.loads(data)["error"]["type"] == "invalid_request_error"


def test_summary_instruction_in_system_outranks_question_lines() -> None:
    page = f"FAQ\nQuestion: When was it launched?\n{SOURCE}"
    answer = respond((("system", "Summarize the following text in 2 sentences."), ("user", page)), Params())
    assert answer.task == "summarize"
