"""Fixtures shared by the integration tests."""

from __future__ import annotations

import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@pytest.fixture(scope="module")
def keep_signal_handlers():
    """verifiers' environments install SIGINT / SIGTERM handlers when built; the test process gets its own back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


class _EchoQuery(BaseHTTPRequestHandler):
    """OpenAI chat completions that answer a "query: <words>" prompt with its words."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        text = user if isinstance(user, str) else "".join(part["text"] for part in user)
        message = {"role": "assistant", "content": text.removeprefix("query: ")}
        reply = json.dumps({
            "id": "echo", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def echo_query_server():
    """The base URL (``http://127.0.0.1:<port>/v1``) of a loopback stand-in for an OpenAI server whose answer to a
    SyntheticRetrieval prompt is its query (the env's best answer, reward 1); stopped after the test."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoQuery)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
