from __future__ import annotations

import json

import pytest

from memproxyd.errors import ANTHROPIC, OPENAI, RESPONSES, error_body, protocol_of, sse_error_event


@pytest.mark.parametrize("status,openai_type,anthropic_type", [
    (400, "invalid_request_error", "invalid_request_error"),
    (401, "authentication_error", "authentication_error"),
    (404, "invalid_request_error", "not_found_error"),
    (413, "invalid_request_error", "request_too_large"),
    (429, "rate_limit_error", "rate_limit_error"),
    (502, "api_error", "api_error"),
    (504, "timeout_error", "api_error"),
    (529, "api_error", "overloaded_error"),
])
def test_each_status_maps_to_both_protocols_error_shapes(status, openai_type, anthropic_type):
    assert error_body(OPENAI, status, "m", "c") == {
        "error": {"message": "m", "type": openai_type, "param": None, "code": "c"}}
    assert error_body(ANTHROPIC, status, "m") == {
        "type": "error", "error": {"type": anthropic_type, "message": "m"}}


def test_protocol_is_chosen_by_route():
    assert protocol_of("/v1/messages") == ANTHROPIC
    assert protocol_of("/v1/messages/count_tokens") == ANTHROPIC
    assert protocol_of("/v1/chat/completions") == OPENAI
    assert protocol_of("/v1/responses/resp_1/cancel") == RESPONSES
    assert error_body(RESPONSES, 404, "m", "c") == error_body(OPENAI, 404, "m", "c")


def test_stream_error_events_are_valid_sse_for_each_protocol():
    openai_event = sse_error_event(OPENAI, 502, "boom").decode()
    assert openai_event.startswith("data: ") and openai_event.endswith("\n\n")
    assert json.loads(openai_event[6:])["error"]["message"] == "boom"
    anthropic_event = sse_error_event(ANTHROPIC, 502, "boom").decode()
    assert anthropic_event.startswith("event: error\ndata: ")
    assert json.loads(anthropic_event.split("data: ", 1)[1])["error"]["type"] == "api_error"


def test_a_responses_stream_ends_with_openais_error_event_numbered_after_the_last():
    before = b'event: response.output_text.delta\ndata: {"type": "x", "sequence_number": 41}\n\n'
    event = sse_error_event(RESPONSES, 502, "boom", before).decode()
    assert event.startswith("event: error\ndata: ") and event.endswith("\n\n")
    assert json.loads(event.split("data: ", 1)[1]) == {
        "type": "error", "code": "api_error", "message": "boom", "param": None,
        "sequence_number": 42}
    assert json.loads(sse_error_event(RESPONSES, 504, "slow").decode().split("data: ")[1])[
        "sequence_number"] == 0
