"""The clients ``bench_cache.py`` replays: multi-turn sessions built the way each client builds
its next request, sent to a base URL (the fake directly, or a memproxyd project port).

* Claude Code: the recorded first turn (``claude-code.jsonl`` line 1, ``cache_control`` on
  two system blocks and on the last block of the last message), then each next request is
  the previous request's messages, the assistant reply the client received and a new user
  message; the message breakpoint moves to the new last block and leaves the earlier ones,
  as Claude Code does (line 2 of the recording shows it).
* Claude Code 2.1.332 with its default model: the same from
  ``claude-code-2.1.332-default-model.jsonl`` line 0 (reminder parts before the human's
  words, then a system-role message with the breakpoint).
* Codex: the recorded first turn (``codex.jsonl`` line 0: Responses API, ``store: false``,
  the whole input every call, ``prompt_cache_key``), extended the same way with the reply as
  an assistant ``message`` item.
* An SDK chat loop: the official ``openai`` SDK on ``/v1/chat/completions`` with a long
  system prompt and a growing message list.

Every session asks ``QUESTIONS`` in order (facts ``FACTS`` stored first, so recall finds
them and blocks really get injected).
"""
from __future__ import annotations

import copy
import json
import urllib.request
from pathlib import Path

import openai

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "agents"
MARK = {"type": "ephemeral"}
FACTS = [
    "The deploy target codename is BLUEFIN.",
    "The staging database listens on port 6543.",
    "Python files are indented with four spaces; Makefiles use tabs.",
    "Changes to the billing service are reviewed by Priya.",
    "Production runs in the eu-west-3 region.",
    "Release branches are named release/YYYY.MM.",
    "CI runs on the ci-runner:22.04-slim image.",
]
QUESTIONS = [
    "What is our deploy target codename?",
    "Which port does the staging database listen on?",
    "How do we indent Python files?",
    "Who reviews changes to the billing service?",
    "Which region hosts production?",
    "How are release branches named?",
    "Which image does CI run on?",
    "Remind me: what is the staging database port?",
    "And the deploy target codename again?",
    "Summarise the conventions you know about our project.",
]
SDK_SYSTEM = ("You are the project's assistant. Answer from what you know about the project; "
              "say so when you do not know. Keep answers short and exact. ") * 40


def recorded(name: str, line: int) -> dict:
    with (FIXTURES / f"{name}.jsonl").open() as lines:
        return json.loads(lines.readlines()[line])["json"]


def post(url: str, body: dict, headers: dict) -> tuple[bytes, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={
        "content-type": "application/json", **headers})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read(), {k.lower(): v for k, v in response.headers.items()}


def sse_data(raw: bytes) -> list[dict]:
    return [json.loads(line[5:]) for line in raw.decode().splitlines()
            if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]")]


def anthropic_text(raw: bytes, stream: bool) -> str:
    if not stream:
        return "".join(b.get("text", "") for b in json.loads(raw)["content"])
    return "".join(e["delta"].get("text", "") for e in sse_data(raw)
                   if e.get("type") == "content_block_delta")


def responses_text(raw: bytes, stream: bool) -> str:
    response = json.loads(raw) if not stream else next(
        e["response"] for e in sse_data(raw) if e.get("type") == "response.completed")
    return "".join(part.get("text", "") for item in response["output"]
                   if item.get("type") == "message" for part in item["content"])


def unmarked(message: dict) -> dict:
    content = message["content"]
    if isinstance(content, list):
        content = [{k: v for k, v in part.items() if k != "cache_control"} for part in content]
    return {**message, "content": content}


def claude_code(base: str, turns: int, fixture: str = "claude-code", line: int = 1) -> list[str]:
    """One Claude Code session of ``turns`` human turns; the memory statuses memproxyd gave.
    From another recording's first turn, the model is still claude-sonnet-4-5 (routed and
    priced alike): the request's shape is what differs."""
    body = {**recorded(fixture, line), "model": "claude-sonnet-4-5"}
    headers = {"anthropic-version": "2023-06-01", "x-api-key": "sk-client"}
    statuses = []
    for turn in range(turns):
        raw, got = post(base + "/v1/messages", body, headers)
        statuses.append(got.get("x-memproxy-memory", "direct"))
        reply = anthropic_text(raw, bool(body.get("stream")))
        body = copy.deepcopy(body)
        body["messages"] = [unmarked(m) for m in body["messages"]] + [
            {"role": "assistant", "content": [{"type": "text", "text": reply}]},
            {"role": "user", "content": [{"type": "text", "text": QUESTIONS[turn % len(QUESTIONS)],
                                          "cache_control": MARK}]}]
    return statuses


def codex(base: str, turns: int) -> list[str]:
    body = recorded("codex", 0)
    headers = {"authorization": "Bearer sk-client"}
    statuses = []
    for turn in range(turns):
        raw, got = post(base + "/v1/responses", body, headers)
        statuses.append(got.get("x-memproxy-memory", "direct"))
        reply = responses_text(raw, bool(body.get("stream")))
        body = {**body, "input": body["input"] + [
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": reply}]},
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": QUESTIONS[turn % len(QUESTIONS)]}]}]}
    return statuses


def sdk_chat(base: str, turns: int) -> list[str]:
    client = openai.OpenAI(base_url=base + "/v1", api_key="sk-client", max_retries=0)
    messages = [{"role": "system", "content": SDK_SYSTEM}]
    statuses = []
    for turn in range(turns):
        messages.append({"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]})
        raw = client.chat.completions.with_raw_response.create(model="gpt-4.1",
                                                               messages=messages)
        statuses.append(raw.headers.get("x-memproxy-memory", "direct"))
        messages.append({"role": "assistant", "content": raw.parse().choices[0].message.content})
    return statuses


def claude_code_2_1_332_default_model(base: str, turns: int) -> list[str]:
    """Claude Code 2.1.332 with its default model: the environment a system-role message
    after the first human message, carrying the first call's message breakpoint."""
    return claude_code(base, turns, "claude-code-2.1.332-default-model", 0)


SESSIONS = {"claude-code": (claude_code, "claude-sonnet-4-5"),
            "claude-code-2.1.332-default-model": (claude_code_2_1_332_default_model,
                                                  "claude-sonnet-4-5"),
            "codex": (codex, "gpt-5-codex"),
            "sdk-chat": (sdk_chat, "gpt-4.1")}
