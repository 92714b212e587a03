"""The worker's judgement of when a buffered request is complete (what decides that a thread is given)."""

from __future__ import annotations

import pytest

from vmhealth.gunicorn_worker import _without_expect_continue, request_end

HEAD = b"POST /api/health/report HTTP/1.1\r\nHost: x\r\n"


def test_a_request_is_incomplete_until_its_head_ends() -> None:
    assert request_end(HEAD, 1000, 100) is None
    assert request_end(b"GET / HTTP/1.1\r\n\r\n", 1000, 100) == 18


def test_a_body_of_known_length_is_awaited_in_full() -> None:
    request = HEAD + b"Content-Length: 5\r\n\r\n"
    assert request_end(request + b"abc", 1000, 100) is None
    assert request_end(request + b"abcde", 1000, 100) == len(request) + 5
    assert request_end(request + b"abcdeGET", 1000, 100) == len(request) + 5  # a pipelined request behind it


def test_a_body_beyond_the_limit_is_left_to_the_app_which_refuses_it_unread() -> None:
    request = HEAD + b"Content-Length: 101\r\n\r\n"
    assert request_end(request, 1000, 100) == len(request)


def test_a_bad_content_length_is_left_to_gunicorn() -> None:
    request = HEAD + b"Content-Length: -1\r\n\r\n"
    assert request_end(request, 1000, 100) == len(request)


def test_a_head_too_large_is_refused_complete_or_not() -> None:
    assert request_end(HEAD + b"X: " + b"a" * 2000, 1000, 100) == "head-too-large"
    assert request_end(HEAD + b"X: " + b"a" * 2000 + b"\r\n\r\n", 1000, 100) == "head-too-large"


@pytest.mark.parametrize(("body", "end"), [
    (b"5\r\nhello\r\n", None),
    (b"5\r\nhello\r\n0\r\n", None),
    (b"5\r\nhello\r\n0\r\n\r\n", 15),
    (b"5;ext=1\r\nhello\r\n0\r\nTrailer: v\r\n\r\n", 33),
    (b"zz\r\n", 4),  # malformed: gunicorn answers 400
])
def test_chunked_bodies_end_at_the_last_chunk_and_its_trailers(body: bytes, end: int | None) -> None:
    request = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    result = request_end(request + body, 1000, 100)
    assert result == (None if end is None else len(request) + end)


def test_a_chunked_body_beyond_the_limit_is_refused() -> None:
    request = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    assert request_end(request + b"200\r\n" + b"a" * 50, 1000, 100) == "request-too-large"


def test_expect_continue_is_removed_once_answered() -> None:
    request = HEAD + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\nab"
    stripped = _without_expect_continue(request, request.find(b"\r\n\r\n"))
    assert stripped == HEAD + b"Content-Length: 2\r\n\r\nab"
