"""Differential test: our request parser against llhttp (through httptools, strict defaults).

Hypothesis builds valid requests (pipelined, with Content-Length or chunked bodies) and mutated
variants of them (byte flips, inserted CR/LF/SP/NUL/':'/',', deleted bytes, duplicated field lines,
extra Content-Length / Transfer-Encoding lines). Both parsers must reject, or accept the same
messages with the same method, target, version, fields, body and keep-alive.

Where llhttp and RFC 9112 legitimately differ the difference is whitelisted in KNOWN_DIFFERENCES,
each with the RFC section that makes our answer the required or the safer one. Every whitelisted
case is one where we reject and llhttp accepts, except extension methods (RFC 9110 §9.1), which
llhttp refuses only because its method list is closed.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, replace

import httptools
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway._fastpath.parser import Incomplete, ParsedRequest, ParseError, parse_request


@dataclass
class Message:
    """What either parser saw of one request, in comparable form."""

    method: bytes
    target: bytes
    version: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    trailers: list[tuple[bytes, bytes]]
    keep_alive: bool


@dataclass
class Outcome:
    messages: list[Message]
    error: str | None = None  # our error code, or llhttp's exception text
    incomplete: bool = False  # we stopped inside an unfinished message
    upgraded: bool = False
    closed: bool = False  # the last message closes the connection; the rest is ignored


# --- our side -----------------------------------------------------------------------------------


def from_ours(req: ParsedRequest) -> Message:
    return Message(req.method, req.target, req.version, req.headers, req.body, req.trailers, req.keep_alive)


def parse_ours(data: bytes) -> Outcome:
    messages: list[Message] = []
    offset = 0
    while offset < len(data):
        try:
            req = parse_request(data[offset:])
        except ParseError as exc:
            return Outcome(messages, error=exc.code)
        except Incomplete:
            return Outcome(messages, incomplete=True)
        messages.append(from_ours(req))
        offset += req.consumed
        if req.upgrade or req.method == b"CONNECT":
            # What follows an upgrade is another protocol; llhttp stops there too.
            return Outcome(messages, upgraded=True)
        if not req.keep_alive:
            # A server closes after answering this one; what follows is never parsed.
            return Outcome(messages, closed=True)
    return Outcome(messages)


# --- llhttp's side ------------------------------------------------------------------------------


def strip_ows(value: bytes) -> bytes:
    # llhttp leaves trailing OWS in the value; RFC 9110 §5.5 says it is not part of it.
    return value.rstrip(b" \t")


class Recorder:
    """httptools protocol object collecting every message the way a server would."""

    def __init__(self) -> None:
        self.parser: httptools.HttpRequestParser | None = None  # set once the parser exists
        self.messages: list[Message] = []
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.trailers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.in_trailers = False
        self.head: tuple[bytes, str, bool] | None = None

    def on_message_begin(self) -> None:
        self.url, self.headers, self.trailers, self.body = b"", [], [], b""
        self.in_trailers = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        (self.trailers if self.in_trailers else self.headers).append((name, strip_ows(value)))

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None
        self.head = (parser.get_method(), parser.get_http_version(), parser.should_keep_alive())
        self.in_trailers = True

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        assert self.head is not None
        method, version, keep_alive = self.head
        self.messages.append(
            Message(method, self.url, version, self.headers, self.body, self.trailers, keep_alive)
        )


def parse_llhttp(data: bytes) -> Outcome:
    recorder = Recorder()
    parser = recorder.parser = httptools.HttpRequestParser(recorder)
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        return Outcome(recorder.messages, upgraded=True)
    except httptools.HttpParserError as exc:
        return Outcome(recorder.messages, error=f"{type(exc).__name__}: {exc}")
    return Outcome(recorder.messages)


# --- whitelisted differences --------------------------------------------------------------------

HEAD_END = re.compile(rb"\r\n\r\n")


def first_error_head(data: bytes, ours: Outcome) -> bytes:
    """The head of the message we rejected (the messages before it agreed)."""
    offset = 0
    for _ in ours.messages:
        offset += parse_request(data[offset:]).consumed
    rest = data[offset:]
    end = HEAD_END.search(rest)
    return rest[: end.end()] if end else rest


def request_line(head: bytes) -> bytes:
    return head.lstrip(b"\r\n").split(b"\r\n", 1)[0]


def we_reject_llhttp_accepts(data: bytes, ours: Outcome, theirs: Outcome) -> str | None:
    """The RFC reason for a case where we refuse a message llhttp takes, or None."""
    head = first_error_head(data, ours)
    code = ours.error
    leading = head[: len(head) - len(head.lstrip(b"\r\n"))]
    if code == "bad_request_line" and leading.replace(b"\r\n", b""):
        return (
            "RFC 9112 §2.2: only whole empty lines (CRLF) may precede a request line; llhttp skips any CR/LF"
        )
    index = len(ours.messages)
    if index < len(theirs.messages) and theirs.messages[index].version == "0.9":
        return "RFC 9112 §3: a request line has an HTTP-version; HTTP/0.9 simple requests are refused"
    if code in ("bad_request_line", "invalid_version") and b"  " in request_line(head):
        return "RFC 9112 §3: single SP separators; a request line with extra spaces is not auto-corrected"
    if code in ("missing_host", "duplicate_host", "invalid_host"):
        return "RFC 9112 §3.2: 400 for a missing, repeated or invalid Host (llhttp does not check Host)"
    if code == "invalid_target":
        return "RFC 9112 §3.2: target forms (no fragment, visible ASCII, '*' only for OPTIONS)"
    if code == "http_version_not_supported":
        return "RFC 9112 §2.3 / RFC 9110 §15.6.6: only HTTP/1.0 and 1.1 are spoken (llhttp takes 0.9, 2.0)"
    if code == "transfer_encoding_in_http10":
        return "RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 request means faulty framing"
    if code == "not_implemented":
        return "RFC 9112 §6.1: a transfer coding we do not implement is answered with 501"
    if code == "invalid_transfer_encoding":
        return "RFC 9112 §6.1 / RFC 9110 §5.6.1: Transfer-Encoding elements must be bare tokens (stricter)"
    return None


def we_accept_llhttp_rejects(theirs: Outcome) -> str | None:
    if theirs.error and theirs.error.startswith("HttpParserInvalidMethodError"):
        return "RFC 9110 §9.1: methods are extensible tokens; llhttp knows only a fixed list"
    return None


def close_requested(message: Message) -> bool:
    return any(
        name.lower() == b"connection" and b"close" in [t.strip(b" \t").lower() for t in value.split(b",")]
        for name, value in message.headers
    )


def explain_difference(data: bytes, ours: Outcome, theirs: Outcome) -> str | None:
    """None when the outcomes agree; otherwise a description (whitelisted ones start with 'RFC')."""
    if ours.closed and len(theirs.messages) >= len(ours.messages):
        # Whatever llhttp makes of the bytes after a closing message (it calls them an error,
        # "Data after Connection: close"), a server never reads them.
        theirs = replace(theirs, messages=theirs.messages[: len(ours.messages)], error=None, upgraded=False)
    common = min(len(ours.messages), len(theirs.messages))
    for i in range(common):
        mine, llhttp = ours.messages[i], theirs.messages[i]
        if mine.keep_alive != llhttp.keep_alive and not mine.keep_alive and close_requested(mine):
            # RFC 9112 §9.3: the close option ends the connection whatever else is listed;
            # llhttp lets keep-alive win for HTTP/1.0.
            llhttp = replace(llhttp, keep_alive=False)
        if mine != llhttp:
            if theirs.upgraded and i == len(theirs.messages) - 1:
                break
            return f"message {i} differs:\n ours   {mine}\n llhttp {llhttp}"
    mine_n, their_n = len(ours.messages), len(theirs.messages)
    if theirs.error and their_n < mine_n:
        # llhttp refused a message we accepted.
        return we_accept_llhttp_rejects(theirs) or f"we accept, llhttp rejects ({theirs.error})"
    if ours.error:
        if their_n < mine_n:
            return "llhttp completed fewer messages"
        if theirs.error and their_n == mine_n:
            return None  # both refused the same message
        # llhttp accepted (or is still reading) the message we refused.
        return we_reject_llhttp_accepts(data, ours, theirs) or f"we reject ({ours.error}), llhttp accepts"
    if theirs.error:
        if ours.incomplete and their_n == mine_n:
            # We are still waiting for the end of a message llhttp already refused; we would
            # refuse or accept it only once it is complete, so nothing has been accepted wrongly.
            return None
        return we_accept_llhttp_rejects(theirs) or f"we accept, llhttp rejects ({theirs.error})"
    if ours.upgraded or theirs.upgraded:
        return None if mine_n == their_n else "upgrade seen differently"
    if mine_n != their_n:
        return f"{mine_n} messages vs llhttp's {their_n}"
    return None


# --- generators ---------------------------------------------------------------------------------

METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD"]
NAME_CHARS = string.ascii_letters + string.digits + "-_"
VALUE_CHARS = string.ascii_letters + string.digits + " -_.,;:=/?()\"'!*+@[]{}~\t"
PATH_CHARS = string.ascii_letters + string.digits + "-._~/%!$&'()*+,;=:@"
HOST_CHARS = string.ascii_lowercase + string.digits + ".-"
FRAMING_NAMES = {"host", "content-length", "transfer-encoding", "connection", "upgrade", "expect"}

field_names = st.text(NAME_CHARS, min_size=1, max_size=12).filter(lambda n: n.lower() not in FRAMING_NAMES)
field_values = st.text(VALUE_CHARS, max_size=24).map(lambda v: v.strip(" \t"))
chunk_payloads = st.binary(min_size=1, max_size=20)


@st.composite
def valid_request(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(METHODS))
    version = draw(st.sampled_from([b"1.0", b"1.1"]))
    path = "/" + draw(st.text(PATH_CHARS, max_size=16))
    if draw(st.booleans()):
        path += "?" + draw(st.text(PATH_CHARS + "?", max_size=16))
    lines = [method + b" " + path.encode() + b" HTTP/" + version]
    fields: list[tuple[str, str]] = []
    if version == b"1.1" or draw(st.booleans()):
        host = draw(st.text(HOST_CHARS, min_size=1, max_size=12))
        if draw(st.booleans()):
            host += f":{draw(st.integers(1, 65535))}"
        fields.append(("Host", host))
    connection = draw(
        st.sampled_from([None, "close", "keep-alive", "Keep-Alive, close", "x-hop", "close, x-hop"])
    )
    if connection:
        fields.append((draw(st.sampled_from(["Connection", "connection"])), connection))
    fields += draw(st.lists(st.tuples(field_names, field_values), max_size=6))
    body = b""
    framing = draw(
        st.sampled_from(["none", "length", "chunked"] if version == b"1.1" else ["none", "length"])
    )
    if framing == "length":
        payload = draw(st.binary(max_size=30))
        fields.append((draw(st.sampled_from(["Content-Length", "content-length"])), str(len(payload))))
        body = payload
    elif framing == "chunked":
        fields.append((draw(st.sampled_from(["Transfer-Encoding", "transfer-encoding"])), "chunked"))
        for payload in draw(st.lists(chunk_payloads, max_size=3)):
            ext = draw(st.sampled_from(["", ";a", ";a=b", ';a="q s"']))
            body += f"{len(payload):x}{ext}\r\n".encode() + payload + b"\r\n"
        body += b"0\r\n"
        for name, value in draw(st.lists(st.tuples(field_names, field_values), max_size=2)):
            body += f"{name}: {value}\r\n".encode()
        body += b"\r\n"
    order = draw(st.permutations(fields))
    lines += [f"{name}: {value}".encode() for name, value in order]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@st.composite
def valid_pipeline(draw: st.DrawFn) -> bytes:
    prefix = draw(st.sampled_from([b"", b"\r\n"]))
    return prefix + b"".join(draw(st.lists(valid_request(), min_size=1, max_size=3)))


INSERTIONS = [b"\r", b"\n", b" ", b"\x00", b":", b",", b"\t", b"\x7f", b"\x80", b"a", b"0", b"\r\n"]
FRAMING_LINES = [
    b"Content-Length: 0",
    b"Content-Length: 3",
    b"Content-Length: 03",
    b"Content-Length: 3, 3",
    b"Content-Length: +3",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: CHUNKED",
    b"Transfer-Encoding: gzip, chunked",
    b"Transfer-Encoding: chunked, gzip",
    b"Transfer-Encoding: identity",
    b"Transfer-Encoding : chunked",
    b"Transfer-Encoding:\tchunked",
    b" Transfer-Encoding: chunked",
    b"Host: other",
]


@st.composite
def mutated_request(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(valid_pipeline()))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "dup_line", "framing"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.sampled_from(INSERTIONS))
        elif kind == "delete" and data:
            del data[pos]
        elif kind in ("dup_line", "framing"):
            head_end = data.find(b"\r\n\r\n")
            line_starts = [m.end() for m in re.finditer(rb"\r\n", bytes(data[: max(head_end, 0) + 2]))]
            if not line_starts:
                continue
            at = draw(st.sampled_from(line_starts))
            if kind == "framing":
                data[at:at] = draw(st.sampled_from(FRAMING_LINES)) + b"\r\n"
            else:
                end = data.find(b"\r\n", at)
                if end > at:
                    data[at:at] = data[at : end + 2]
    return bytes(data)


# --- the tests ----------------------------------------------------------------------------------

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_agree(data: bytes) -> None:
    ours, theirs = parse_ours(data), parse_llhttp(data)
    why = explain_difference(data, ours, theirs)
    assert why is None or why.startswith("RFC"), f"{why}\ninput: {data!r}\nours: {ours}\nllhttp: {theirs}"


@SETTINGS
@given(valid_pipeline())
def test_valid_requests_parse_the_same(data: bytes) -> None:
    ours, theirs = parse_ours(data), parse_llhttp(data)
    assert ours.error is None and not ours.incomplete, (data, ours)
    assert explain_difference(data, ours, theirs) is None, (data, ours, theirs)


@SETTINGS
@given(mutated_request())
def test_mutated_requests_are_judged_the_same(data: bytes) -> None:
    assert_agree(data)


def test_whitelist_only_covers_cases_where_we_are_stricter() -> None:
    # Each whitelisted difference, shown on one input: llhttp accepts, we reject with the RFC reason.
    samples = {
        b"GET / HTTP/1.1\r\n\r\n": "missing_host",
        b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n": "invalid_target",
        b"GET * HTTP/1.1\r\nHost: a\r\n\r\n": "invalid_target",
        b"GET / HTTP/2.0\r\n\r\n": "http_version_not_supported",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n": "transfer_encoding_in_http10",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n": "not_implemented",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n0\r\n\r\n": (
            "invalid_transfer_encoding"
        ),
    }
    for data, code in samples.items():
        ours, theirs = parse_ours(data), parse_llhttp(data)
        assert ours.error == code and theirs.error is None, data
        why = explain_difference(data, ours, theirs)
        assert why is not None and why.startswith("RFC"), data
    # And the one the other way round: an extension method.
    data = b"FROBNICATE / HTTP/1.1\r\nHost: a\r\n\r\n"
    ours, theirs = parse_ours(data), parse_llhttp(data)
    assert ours.error is None and theirs.error is not None
    assert (explain_difference(data, ours, theirs) or "").startswith("RFC 9110 §9.1")


def test_smuggling_classics_are_rejected_by_both() -> None:
    for data in [
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
    ]:
        assert parse_ours(data).error is not None, data
        assert parse_llhttp(data).error is not None, data
