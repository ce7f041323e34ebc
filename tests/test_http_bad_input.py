"""Bad HTTP input gets a precise 4xx, and the engine keeps serving."""

import codecs
import gzip
import http.client
import json
import socket
import urllib.error
import urllib.request

import pytest
from aiohttp import web

from engine.http.parse_errors import json_parse_errors
from engine_process import start_engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    # a queue smaller than a request may ask for (n up to 10)
    engine = start_engine(
        tmp_path_factory.mktemp("bad-input"), "--time-scale", "0.01", "--max-queue", "8", backend="sim"
    )
    yield engine
    assert engine.stop() == 0


@pytest.fixture(scope="module")
def python_parser_engine(tmp_path_factory):
    """An engine whose aiohttp parses HTTP in Python, as it does where its C parser is not built (PyPy, a platform
    without a wheel) or with AIOHTTP_NO_EXTENSIONS set."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AIOHTTP_NO_EXTENSIONS", "1")
        engine = start_engine(tmp_path_factory.mktemp("python-parser"), "--time-scale", "0.01", backend="sim")
    yield engine
    assert engine.stop() == 0


def post(engine, body: bytes, content_type: str = "application/json", **headers: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        engine.http + "/v1/images/generations", data=body, headers={"Content-Type": content_type, **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def good(engine) -> None:
    status, body = post(engine, json.dumps({"prompt": "a lighthouse", "size": "64x64"}).encode())
    assert status == 200, body
    assert len(body["data"]) == 1


@pytest.mark.parametrize(
    ("body", "status", "code", "param", "words"),
    [
        # the parser's reason and where, once: it said "malformed JSON: JSON is malformed: ..."
        (b"{not json", 400, "invalid_request", None, "malformed JSON: object keys must be strings (byte 1)"),
        (b'{"prompt": "a",}', 400, "invalid_request", None, "malformed JSON: trailing comma in object (byte 15)"),
        # it said "Input data was truncated"
        (b"", 400, "invalid_request", None, "malformed JSON: the body is empty"),
        (b" \r\n", 400, "invalid_request", None, "malformed JSON: the body is empty"),  # whitespace alone
        (
            b'{"prompt": "a"',
            400,
            "invalid_request",
            None,
            "malformed JSON: the body ends before the JSON does (byte 14)",
        ),
        # a lone first half of a UTF-16 surrogate pair: msgspec says "truncated" when fewer than 6 bytes follow it,
        # and it said "the body ends before the JSON does" of a whole body
        (
            b'{"prompt":"\\ud83d"}',
            400,
            "invalid_request",
            None,
            "malformed JSON: \\ud83d is the first half of a UTF-16 surrogate pair, with no \\udc00-\\udfff escape after"
            " it (byte 17)",
        ),
        (b'{"prompt":"\\\\uD83D \\uD83D"}', 400, "invalid_request", None, "malformed JSON: \\uD83D is the first half"),
        (b'{"prompt":"\\ud83d and more"}', 400, "invalid_request", None, "\\ud83d is the first half of a UTF-16"),
        (b'{"prompt":"\\ud83d', 400, "invalid_request", None, "malformed JSON: the body ends before the JSON does"),
        # it said "invalid character (byte 0)"
        (
            '{"prompt": "a"}'.encode("utf-16"),
            400,
            "invalid_request",
            None,
            "malformed JSON: the body is UTF-16 or UTF-32 (it begins with a byte order mark): send JSON as UTF-8",
        ),
        # without the mark, as .NET's StringContent sends Encoding.Unicode: it said "object keys must be strings
        # (byte 1)"
        (
            '{"prompt": "a"}'.encode("utf-16-le"),
            400,
            "invalid_request",
            None,
            "malformed JSON: the body is UTF-16 or UTF-32 (NUL bytes between its characters): send JSON as UTF-8",
        ),
        ('\n{"prompt": "a"}'.encode("utf-32-be"), 400, "invalid_request", None, "the body is UTF-16 or UTF-32"),
        ('{"prompt": "a"}'.encode("utf-16-be"), 400, "invalid_request", None, "UTF-16 or UTF-32 (NUL bytes between"),
        ('{"prompt": "a"}'.encode("utf-32-le"), 400, "invalid_request", None, "UTF-16 or UTF-32 (NUL bytes between"),
        # each byte order mark, UTF-32BE's too (not UTF-16BE's after NUL bytes): it said "invalid character (byte 0)"
        (codecs.BOM_UTF16_BE + '{"prompt": "a"}'.encode("utf-16-be"), 400, "invalid_request", None, "order mark"),
        ('{"prompt": "a"}'.encode("utf-32"), 400, "invalid_request", None, "UTF-16 or UTF-32 (it begins with a byte"),
        (codecs.BOM_UTF32_BE + '{"prompt": "a"}'.encode("utf-32-be"), 400, "invalid_request", None, "order mark"),
        # gzip's header holds a NUL byte too: it is no UTF-16
        (gzip.compress(b'{"prompt": "a"}', mtime=0), 400, "invalid_request", None, "invalid character (byte 0)"),
        # Latin-1, as Windows PowerShell 5.1 sends a body: it was "invalid UTF-8 encoded string", naming no byte
        (
            '{"prompt": "café"}'.encode("latin-1"),
            400,
            "invalid_request",
            None,
            "malformed JSON: the body is not UTF-8 at byte 15 (0xe9): send it as UTF-8",
        ),
        (b'{"prompt":"\\ude00"}', 400, "invalid_request", None, "malformed JSON: invalid utf-16 surrogate pair"),
        (b'{"prompt":"\\u12"}', 400, "invalid_request", None, "malformed JSON: invalid character in unicode escape"),
        (b'{"prompt":"\\x"}', 400, "invalid_request", None, "malformed JSON: invalid escape character in string"),
        (b"[1, 2]", 400, "invalid_request", None, "the body must be a JSON object, not a list"),
        # a field refused, then JSON that does not parse: read again for the value refused, it was a 500
        (b'{"prompt": "a", "n": 0,', 400, "invalid_request", None, "malformed JSON: the body ends before"),
        (b'{"prompt": "a", "quality": "ultra"}x', 400, "invalid_request", None, "malformed JSON: trailing characters"),
        # a number beyond a 64-bit float's range, which JSON allows: read again for the value refused, it was
        # "malformed JSON: number out of range - at `$[...]`", no field named
        (b'{"prompt": "a", "n": [1e400]}', 400, "invalid_request", "n", "n must be an integer, got [1e400]"),
        (
            b'{"prompt": "a", "guidance_scale": 1e400}',
            400,
            "invalid_request",
            "guidance_scale",
            "guidance_scale 1e400 is out of range",
        ),
        (b'{"prompt": "a", "seed": -2E+999}', 400, "invalid_request", "seed", "seed -2E+999 is out of range"),
        (b'{"prompt": "a", "bogus": 1e400}', 400, "invalid_request", "bogus", 'unknown field "bogus": argus takes'),
        (b"1e400", 400, "invalid_request", None, "the body must be a JSON object, not a number"),
        (json.dumps({"prompt": 5}).encode(), 400, "invalid_request", "prompt", "prompt must be a string, got 5"),
        (json.dumps({"prompt": ""}).encode(), 400, "invalid_request", "prompt", "of length >= 1, got 0 characters"),
        (
            json.dumps({"prompt": "x" * 4001}).encode(),
            400,
            "invalid_request",
            "prompt",
            "of length <= 4000, got 4001 characters",
        ),
        (json.dumps({}).encode(), 400, "invalid_request", "prompt", "missing required field `prompt`"),
        (json.dumps({"prompt": "a", "n": 0}).encode(), 400, "invalid_request", "n", "n must be an integer >= 1, got 0"),
        (
            json.dumps({"prompt": "a", "n": 11}).encode(),
            400,
            "invalid_request",
            "n",
            "n must be an integer <= 10, got 11",
        ),
        (json.dumps({"prompt": "a", "n": "2"}).encode(), 400, "invalid_request", "n", 'n must be an integer, got "2"'),
        # a whole number sent with a fraction is served (test_integral_numbers_are_integers); another number is not
        (b'{"prompt": "a", "n": 1.5}', 400, "invalid_request", "n", "n must be an integer, got 1.5"),
        (b'{"prompt": "a", "n": 2.0, "seed": 0.5}', 400, "invalid_request", "seed", "seed must be an integer, got 0.5"),
        # quoted as sent, not as the integer it was read as: it said "got 11" of an 11.0
        (b'{"prompt": "a", "n": 11.0}', 400, "invalid_request", "n", "n must be an integer <= 10, got 11.0"),
        # each number with a fraction or an exponent as written: read as a float, it was quoted "got 20.0" of 2e1
        (b'{"prompt": "a", "n": 2e1}', 400, "invalid_request", "n", "n must be an integer <= 10, got 2e1"),
        (b'{"prompt": "a", "n": 1E2}', 400, "invalid_request", "n", "n must be an integer <= 10, got 1E2"),
        (b'{"prompt": "a", "n": 1.50}', 400, "invalid_request", "n", "n must be an integer, got 1.50"),
        # not whole as written, though a float reads them as 1 and 0: they were served as n 1 and seed 0
        (b'{"prompt": "a", "n": 1.0000000000000001}', 400, "invalid_request", "n", "integer, got 1.0000000000000001"),
        (b'{"prompt": "a", "seed": 1e-400}', 400, "invalid_request", "seed", "seed must be an integer, got 1e-400"),
        # an exponent past what a Decimal holds: it raised InvalidOperation, a 500
        (b'{"prompt": "a", "seed": 1e-9999999999999999999}', 400, "invalid_request", "seed", "integer, got 1e-9999"),
        (b'{"prompt": "a", "guidance_scale": 1e3}', 400, "invalid_request", "guidance_scale", "<= 50.0, got 1e3"),
        # the value refused as JSON spells it, as it was sent: it said None, True, False, {'a': [1, None]}, 1e+300
        (b'{"prompt": null}', 400, "invalid_request", "prompt", "prompt must be a string, got null"),
        (b'{"prompt": "a", "n": true}', 400, "invalid_request", "n", "n must be an integer, got true"),
        (
            b'{"prompt": "a", "quality": false}',
            400,
            "invalid_request",
            "quality",
            "quality must be a string, got false",
        ),
        (b'{"prompt": "a", "n": {"a": [1, null]}}', 400, "invalid_request", "n", 'got {"a":[1,null]}'),
        (b'{"prompt": "a", "seed": 1e300}', 400, "invalid_request", "seed", "seed must be an integer, got 1e300"),
        (
            json.dumps({"prompt": "a", "n": list(range(1000))}).encode(),
            400,
            "invalid_request",
            "n",
            "n must be an integer, got [0,1,2,3,4,5,...6,997,998,999]",
        ),
        # a key twice: the last value was taken (and named), where a proxy or another parser may read the first
        (b'{"prompt": "a", "n": 1, "n": 5}', 400, "invalid_request", "n", 'duplicate field "n" in the JSON body'),
        (b'{"prompt": "a", "n": 1, "n": 0}', 400, "invalid_request", "n", 'duplicate field "n" in the JSON body'),
        (b'{"prompt": "a: b", "n": 2, "\\u006e": 2}', 400, "invalid_request", "n", 'duplicate field "n"'),
        (b'{"prompt": "a", "n": {"k": 1, "k": 2}}', 400, "invalid_request", None, 'duplicate field "k"'),
        # the untyped read for the value refused recursed out: a 500
        (
            b'{"prompt": "a", "n": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            400,
            "invalid_request",
            None,
            "malformed JSON: lists or objects nested too deeply",
        ),
        # whitespace alone, which the model and the cache read as the empty prompt, was served
        (json.dumps({"prompt": ""}).encode(), 400, "invalid_request", "prompt", "length >= 1, got 0 characters"),
        (
            json.dumps({"prompt": " \n\t\u3000"}).encode(),
            400,
            "invalid_request",
            "prompt",
            "prompt must be a string with a character other than whitespace or control characters, got 4 characters",
        ),
        # NULs alone, which the cache's embedder read as spaces: served, its embedding the zero vector, cached
        (
            json.dumps({"prompt": "\x00\x00 \x1b\x7f"}).encode(),
            400,
            "invalid_request",
            "prompt",
            "prompt must be a string with a character other than whitespace or control characters, got 5 characters",
        ),
        # the message named n, but param was null
        (json.dumps({"prompt": "a", "n": 9}).encode(), 400, "invalid_request", "n", "queues at once (--max-queue 8)"),
        (
            json.dumps({"prompt": "a", "size": "huge"}).encode(),
            400,
            "invalid_request",
            "size",
            'size "huge" must be "auto" or "WIDTHxHEIGHT"',
        ),
        (json.dumps({"prompt": "a", "size": "65x64"}).encode(), 400, "invalid_size", "size", "multiple of 8"),
        (json.dumps({"prompt": "a", "size": "8x8"}).encode(), 400, "invalid_size", "size", "from 64"),
        (json.dumps({"prompt": "a", "size": "99999x64"}).encode(), 400, "invalid_size", "size", "width 99999"),
        (
            json.dumps({"prompt": "a", "output_format": "gif"}).encode(),
            400,
            "invalid_request",
            "output_format",
            'output_format "gif" must be one of "png", "jpeg", "webp"',
        ),
        (
            json.dumps({"prompt": "a", "output_format": "png\n"}).encode(),
            400,
            "invalid_request",
            "output_format",
            'output_format "png\\n" must be one of "png", "jpeg", "webp"',
        ),
        (json.dumps({"prompt": "a", "size": "64x64\n"}).encode(), 400, "invalid_request", "size", "WIDTHxHEIGHT"),
        (
            json.dumps({"prompt": "a", "response_format": "bmp"}).encode(),
            400,
            "invalid_request",
            "response_format",
            'response_format "bmp" must be one of "b64_json", "url"',
        ),
        # the value shortened in the middle: msgspec's message held all 4,000 characters
        (
            json.dumps({"prompt": "a", "quality": "x" * 4000}).encode(),
            400,
            "invalid_request",
            "quality",
            'quality "xxxxxxxxxxxx...xxxxxxxxxxxxx" must be one of "auto", "standard", "hd",',
        ),
        # it said "Invalid enum value True - at `$.stream`"
        (
            json.dumps({"prompt": "a", "stream": True}).encode(),
            400,
            "invalid_request",
            "stream",
            "stream must be false or omitted: argus does not stream, images come whole",
        ),
        (json.dumps({"prompt": "a", "bogus": 1}).encode(), 400, "invalid_request", "bogus", 'unknown field "bogus"'),
        # named by its key as sent, which msgspec's words cut at the backtick
        (b'{"prompt": "a", "x`y": 1}', 400, "invalid_request", "x`y", 'unknown field "x`y": argus takes'),
        (json.dumps({"prompt": "a", "seed": -1}).encode(), 400, "invalid_request", "seed", ">= 0"),
        (json.dumps({"prompt": "a", "slo_ms": 0}).encode(), 400, "invalid_request", "slo_ms", "> 0"),
        (
            json.dumps({"prompt": "a", "exact": "yes"}).encode(),
            400,
            "invalid_request",
            "exact",
            'exact must be true or false, got "yes"',
        ),
        (
            json.dumps({"prompt": "a", "num_inference_steps": 100000}).encode(),
            400,
            "invalid_request",
            "num_inference_steps",
            "<= 200",
        ),
    ],
)
def test_bad_requests_get_precise_errors(engine, body, status, code, param, words):
    got_status, got = post(engine, body)
    assert got_status == status, got
    error = got["error"]
    assert error["code"] == code
    assert error["param"] == param
    assert words in error["message"]


def test_body_over_the_limit_is_413(engine):
    status, body = post(engine, json.dumps({"prompt": "a" * (2 * 1024 * 1024)}).encode())
    assert status == 413
    assert body["error"]["code"] == "body_too_large"


def test_a_compressed_body_is_415_and_never_inflated(engine):
    """aiohttp would inflate it on the loop, before the size limit: a megabyte of gzip grows to a gigabyte."""
    bomb = gzip.compress(b'{"prompt": "' + b"a" * (64 * 1024 * 1024) + b'"}')
    assert len(bomb) < 100_000
    connection = http.client.HTTPConnection(engine.http.removeprefix("http://"), timeout=30)
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    connection.request("POST", "/v1/images/generations", bomb, headers)
    response = connection.getresponse()
    assert response.status == 415 and json.loads(response.read())["error"]["code"] == "unsupported_encoding"
    # RFC 7694, section 3: what a client that compressed its request reads to tell this 415 from one for the media
    # type (which must not say it), and to send the request again uncompressed
    assert response.headers["Accept-Encoding"] == "identity"
    connection.close()
    good(engine)


@pytest.mark.parametrize("parser", ["engine", "python_parser_engine"])
@pytest.mark.parametrize("coding", ["gzip, chunked", "x-custom;level=1, chunked"])
def test_a_transfer_coding_not_understood_is_501(request, parser, coding):
    """RFC 9112, 6.1: a server that receives a transfer coding it does not understand answers 501. aiohttp undoes
    the chunked alone and passed on the gzip beneath: its bytes were read as JSON, a 400 "malformed JSON"."""
    engine = request.getfixturevalue(parser)
    body = gzip.compress(json.dumps({"prompt": "a lighthouse", "size": "64x64"}).encode())
    connection = http.client.HTTPConnection(engine.http.removeprefix("http://"), timeout=30)
    headers = {"Content-Type": "application/json", "Transfer-Encoding": coding}
    connection.request("POST", "/v1/images/generations", iter([body]), headers, encode_chunked=True)
    response = connection.getresponse()
    error = json.loads(response.read())["error"]
    assert response.status == 501, error
    assert error["code"] == "unsupported_transfer_encoding" and error["type"] == "server_error"
    assert coding.partition(";")[0].partition(",")[0] in error["message"]
    assert response.headers["x-should-retry"] == "false"  # a retry is not understood either
    connection.close()
    good(engine)


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
def test_a_body_not_typed_as_json_is_415_before_any_work(engine, content_type):
    """What a browser sends to any site without a CORS preflight: a web page cannot spend the workers."""
    before = engine.metric("argus_requests_total", outcome="ok", code="")
    connection = http.client.HTTPConnection(engine.http.removeprefix("http://"), timeout=30)
    headers = {"Content-Type": content_type} if content_type else {}
    connection.request("POST", "/v1/images/generations", json.dumps({"prompt": "a", "size": "64x64"}), headers)
    response = connection.getresponse()
    assert response.status == 415 and "Accept-Encoding" not in response.headers
    assert json.loads(response.read())["error"]["code"] == "unsupported_media_type"
    connection.close()
    assert engine.metric("argus_requests_total", outcome="ok", code="") == before


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON"])
def test_json_with_parameters_or_in_capitals_is_served(engine, content_type):
    status, body = post(engine, json.dumps({"prompt": "a", "size": "64x64"}).encode(), content_type)
    assert status == 200, body


def test_json_saved_with_a_utf8_byte_order_mark_is_served(engine):
    """As a Windows editor saves it, and `curl -d @file` sends it: it was a 400, "invalid character (byte 0)"."""
    status, body = post(engine, codecs.BOM_UTF8 + json.dumps({"prompt": "a", "size": "64x64"}).encode())
    assert status == 200, body
    assert len(body["data"]) == 1


def test_integral_numbers_are_integers(engine):
    """JSON has one kind of number, and a JSON Schema's integer is any number without a fraction: a JavaScript
    client's 2.0 was a 400, "n must be an integer, got 2.0"."""
    sent = {"prompt": "a", "size": "64x64", "n": 2.0, "seed": 5.0, "num_inference_steps": 3e1}
    status, body = post(engine, json.dumps(sent).encode())
    assert status == 200, body
    assert [(image["argus"]["seed"], image["argus"]["steps_run"]) for image in body["data"]] == [(5, 30), (6, 30)]


@pytest.mark.parametrize(
    ("written", "seeds"),
    [
        # read as a float, it was 12345678901234568: another seed than the client wrote, and another image
        (b"12345678901234567.0", [12345678901234567, 12345678901234568]),
        # read as a float, 2**63: refused, "seed must be an integer <= 9223372036854775807, got 9223372036854775807.0"
        (b"9223372036854775807.0", [9223372036854775807, 0]),
        # zero, whatever its exponent: one past what a Decimal holds raised InvalidOperation, a 500
        (b"0.0e9999999999999999999", [0, 1]),
    ],
)
def test_a_whole_number_past_a_floats_precision_is_the_number_written(engine, written, seeds):
    status, body = post(engine, b'{"prompt": "a", "size": "64x64", "n": 2, "seed": ' + written + b"}")
    assert status == 200, body
    assert [image["argus"]["seed"] for image in body["data"]] == seeds


# "evil.com@localhost" (a userinfo, which no Host has), "[::1" (unclosed), port 0 and "８０" (full-width digits, which
# yarl read as 80) each made a URL of another host, or one no client can fetch
@pytest.mark.parametrize(
    "host",
    [
        "host:abc",
        "host:99999",
        "@",
        "a/b",
        "a?b",
        "a#b",
        "a b:80",
        "evil.com@localhost",
        "[::1",
        "localhost:0",
        "localhost:８０".encode().decode("latin-1"),  # as a client sends it, in UTF-8
    ],
)
def test_a_url_request_whose_host_makes_no_url_is_400_before_any_work(engine, host):
    before = engine.metric("argus_requests_total", outcome="ok", code="")
    body = json.dumps({"prompt": "a lighthouse", "size": "64x64", "response_format": "url"}).encode()
    status, reply = post(engine, body, Host=host)
    assert status == 400, reply
    assert reply["error"]["param"] == "response_format" and "Host header" in reply["error"]["message"]
    assert engine.metric("argus_requests_total", outcome="ok", code="") == before  # nothing was generated


_HEAD = b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


def send_raw(engine, data: bytes) -> bytes:
    host, port = engine.http.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(data)
        return b"".join(iter(lambda: connection.recv(65536), b""))


_HEADS_REFUSED_BY_THE_PARSER = {
    "length-and-chunked": (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nPRIVATE-WORDS", 400),
    "bad-header-name": (b"PRIVATE WORDS: 1\r\n\r\n", 400),
    "header-line-over-8-kib": (b"X-Note: PRIVATE-WORDS" + b"a" * 9000 + b"\r\n\r\n", 431),
    "129-headers": (b"".join(b"X-Note-%d: PRIVATE-WORDS\r\n" % n for n in range(129)) + b"\r\n", 431),
}


@pytest.mark.parametrize(
    "request_bytes, status", _HEADS_REFUSED_BY_THE_PARSER.values(), ids=_HEADS_REFUSED_BY_THE_PARSER.keys()
)
def test_a_message_the_parser_refuses_is_a_json_error_and_logs_no_error_nor_its_bytes(engine, request_bytes, status):
    """aiohttp answered each itself, before any of the engine's code ran: a plain-text 400 (431 is a head too large)
    quoting its parser's words and the client's bytes, no JSON error, no X-Request-ID. And it logged each at ERROR
    with a traceback quoting those bytes (a prompt, a header's value): any client, or a scanner on the internet, wrote
    errors an operator is paged for, and users' words into the log."""
    logged_before = engine.log_path.stat().st_size
    head, _, body = send_raw(engine, _HEAD + request_bytes).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 %d " % status) and b"X-Request-ID: " in head, head
    error = json.loads(body)["error"]
    assert error["code"] == ("headers_too_large" if status == 431 else "malformed_request"), error
    assert "PRIVATE" not in error["message"], error
    good(engine)  # after the reply, whose log lines came before it
    assert_logged_no_error_nor_words(engine, logged_before)


@pytest.mark.parametrize(
    "request_bytes, words",
    [
        (b"GARBAGE\r\n\r\n", "the request is not HTTP/1.1 the engine can parse: Invalid method encountered"),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00", "TLS was sent to the engine's plain HTTP port"),
    ],
)
def test_a_request_line_the_parser_refuses_is_a_json_400_saying_why(engine, request_bytes, words):
    head, _, body = send_raw(engine, request_bytes).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 400 "), head
    error = json.loads(body)["error"]
    assert error["code"] == "malformed_request" and error["message"].startswith(words), error


async def test_an_aiohttp_whose_request_handler_takes_other_arguments_serves_its_own_plain_errors(caplog):
    """The engine makes aiohttp's RequestHandler itself (engine/http/parse_errors.py): one it cannot make must not
    fail every connection."""
    server = web.Server(lambda request: web.Response())
    assert json_parse_errors(server, {"argument_of_another_aiohttp": 1}) is server
    assert "answered in aiohttp's plain text" in caplog.text


def assert_logged_no_error_nor_words(engine, logged_before: int) -> None:
    logged = engine.log_path.read_bytes()[logged_before:].decode(errors="replace")
    assert "Traceback" not in logged and "PRIVATE-WORDS" not in logged and "ERROR" not in logged, logged


def send_body_once_reading(engine, body: bytes) -> bytes:
    """Sends a chunked request's body once the engine has begun to serve the request (its 100 Continue), and reads the
    reply to the end: the engine closes the connection (tests/test_http_bad_chunks.py sends it with its head). Times
    out in 5 s, well before the 408 a stalled body gets (30 s)."""
    host, port = engine.http.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(_HEAD + b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
        continued = b""
        while not continued.endswith(b"\r\n\r\n"):
            continued += connection.recv(1)
        assert continued == b"HTTP/1.1 100 Continue\r\n\r\n"
        connection.sendall(body)
        return b"".join(iter(lambda: connection.recv(65536), b""))


_CHUNKS_THAT_DO_NOT_PARSE = {
    "bad-size-line": b'5\r\n{"pro\r\nPRIVATE-WORDS\r\nmpt": "a"}\r\n0\r\n\r\n',
    "no-crlf-after-chunk": b'5\r\n{"prompt": "PRIVATE-WORDS"}\r\n0\r\n\r\n',
    "bad-trailer": b'5\r\n{"pro\r\n0\r\nPRIVATE-WORDS\r\n\r\n',
}


@pytest.mark.parametrize("parser", ["engine", "python_parser_engine"])
@pytest.mark.parametrize("body", _CHUNKS_THAT_DO_NOT_PARSE.values(), ids=_CHUNKS_THAT_DO_NOT_PARSE.keys())
def test_a_chunk_that_does_not_parse_mid_body_is_a_json_400_that_closes_the_connection(request, parser, body):
    """aiohttp's pure-Python parser fails the body being read: the engine answered it a 500 internal_error, and
    logged it at ERROR twice, with tracebacks quoting the bytes. Its C parser, the usual one, left the body unfinished
    without a word: the read waited for the 408, 30 s on (the 5 s the reply is waited for here)."""
    engine = request.getfixturevalue(parser)
    logged_before = engine.log_path.stat().st_size
    rejected = engine.metric("argus_requests_total", outcome="rejected", code="malformed_request")
    head, _, reply = send_body_once_reading(engine, body).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in head, head
    error = json.loads(reply)["error"]
    assert error["code"] == "malformed_request" and "Transfer-Encoding: chunked" in error["message"], error
    assert engine.metric("argus_requests_total", outcome="rejected", code="malformed_request") == rejected + 1
    good(engine)
    assert_logged_no_error_nor_words(engine, logged_before)


def test_unknown_route_is_a_json_404(engine):
    status, body = engine.get("/v1/nothing")
    assert status == 404
    assert json.loads(body)["error"]["code"] == "not_found"


def test_a_wrong_method_is_a_json_405_that_names_the_allowed_one(engine):
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(engine.http + "/v1/images/generations", timeout=30)
    assert raised.value.code == 405
    assert raised.value.headers["Allow"] == "POST"
    error = json.loads(raised.value.read())["error"]
    assert error["code"] == "method_not_allowed"
    assert error["message"] == "GET /v1/images/generations: this path takes POST"


def test_connect_is_a_json_405_naming_its_target(engine):
    """CONNECT names a host:port to tunnel to, which aiohttp routes as the path "": it was a 404 saying
    "CONNECT  is not served here", naming nothing (a client whose HTTPS_PROXY names the engine sends it)."""
    host, port = engine.http.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("CONNECT", "images.example:443")
        response = connection.getresponse()
        error = json.loads(response.read())["error"]
    finally:
        connection.close()
    assert response.status == 405 and response.headers["Allow"] == "", response.headers  # no method is taken there
    assert error["code"] == "method_not_allowed", error
    assert error["message"].startswith("CONNECT images.example:443: argus is no proxy"), error


def test_engine_keeps_serving_after_bad_input(engine):
    refused_sizes = engine.metric("argus_requests_total", outcome="rejected", code="invalid_size")
    bodies = (
        b"\xff\xfe garbage",
        b'{"prompt": null}',
        b'{"prompt": "a", "n": 1e309}',
        b'{"prompt": "a", "size": "65x64"}',
    )
    for body in bodies:
        assert post(engine, body)[0] == 400
    good(engine)
    assert engine.ready()["ready"] is True
    assert engine.metric("argus_requests_total", outcome="rejected", code="invalid_size") == refused_sizes + 1
