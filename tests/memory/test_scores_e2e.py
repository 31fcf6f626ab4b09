"""Scores a person can reason about, end to end: the memory API and ``memproxyctl memory
search`` show the same 0-1 share of the best possible match, and a question that shares only
request words with what is stored gets no block."""
import json
import urllib.request

import openai

from memproxyd.ctl import cli
from tests.conftest import write_config


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


def test_api_and_ctl_show_the_same_score_and_request_words_inject_nothing(
        tmp_path, openai_fake, start_daemon, capsys):
    daemon = start_daemon(write_config(tmp_path, openai_fake.url, memory='backend = "sqlite"'))
    for content in ("Please deploy the api cluster to staging tonight.",
                    "The deploy window is Tuesday mornings.",
                    "We rotate the deploy key monthly."):
        post(daemon.url + "/v1/memories", {"user_id": "alpha", "content": content})
    found = post(daemon.url + "/v1/memories/search",
                 {"user_id": "alpha", "query": "deploy cluster", "limit": 3})["results"]
    assert found[0]["content"].startswith("Please deploy the api cluster")
    assert found[0]["score"] > 0.9 and all(0 < r["score"] < found[0]["score"] for r in found[1:])
    capsys.readouterr()
    assert cli.main(["--config", str(daemon.config), "memory", "search", "alpha",
                     "deploy cluster"]) == 0
    shown = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert shown[:len(found)] == [f"{r['score']:.3f}" for r in found]
    # "Please" is the only word this shares with the store: no block
    raw = openai.OpenAI(base_url=daemon.url + "/v1", api_key="x", max_retries=0,
                        default_headers={"x-memory-user-id": "alpha"}
                        ).chat.completions.with_raw_response.create(
        model="gpt-ok", messages=[{"role": "user", "content":
                                   "Please read the notes and tell me the style rule."}])
    assert raw.headers["x-memproxy-memory"] == "none"
