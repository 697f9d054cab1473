"""ChunkedDecoder: the chunked transfer coding (RFC 9112 §7.1) fed in every possible split.

decode_chunked drives one decoder over a sequence of pieces the way a connection does, checking on
the way that every payload span lies inside the piece given to that step call (zero copy).
"""

from __future__ import annotations

import itertools

import pytest

from gateway._fastpath.parser import ChunkedDecoder, Incomplete, ParseError, decode_chunked

NEXT_MESSAGE = b"GET /next HTTP/1.1\r\n"

# (wire bytes of a complete chunked body, decoded payload)
BODIES = [
    (b"0\r\n\r\n", b""),
    (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
    (b'A;ext=val;q="a\\"b"\r\n0123456789\r\n0\r\n\r\n', b"0123456789"),
    (b"3;x=y\r\n\r\n\n\r\n1\r\n\x00\r\n0;end\r\nTrailer-A: 1\r\nTrailer-B:\tv v \r\n\r\n", b"\r\n\n\x00"),
    (b"001\r\nx\r\n0000\r\nT: a\r\n\r\n", b"x"),
]


def split_at(data: bytes, cuts: tuple[int, ...]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize(("wire", "payload"), BODIES)
def test_whole_body_in_one_piece(wire: bytes, payload: bytes) -> None:
    body, consumed, leftover = decode_chunked([wire + NEXT_MESSAGE])
    assert (body, consumed, leftover) == (payload, len(wire), NEXT_MESSAGE)


@pytest.mark.parametrize(("wire", "payload"), BODIES)
def test_every_single_split_point(wire: bytes, payload: bytes) -> None:
    data = wire + NEXT_MESSAGE
    for cut in range(len(wire) + 1):
        body, consumed, leftover = decode_chunked(split_at(data, (cut,)))
        assert body == payload, cut
        assert consumed == len(wire), cut
        # The piece holding the end of the body returns what follows it.
        assert data[consumed:].startswith(leftover), cut


@pytest.mark.parametrize(("wire", "payload"), BODIES)
def test_every_pair_of_split_points(wire: bytes, payload: bytes) -> None:
    for first, second in itertools.combinations_with_replacement(range(len(wire) + 1), 2):
        body, consumed, _ = decode_chunked(split_at(wire, (first, second)))
        assert (body, consumed) == (payload, len(wire)), (first, second)


@pytest.mark.parametrize(("wire", "payload"), BODIES)
def test_one_byte_at_a_time(wire: bytes, payload: bytes) -> None:
    body, consumed, _ = decode_chunked([wire[i : i + 1] for i in range(len(wire))])
    assert (body, consumed) == (payload, len(wire))


@pytest.mark.parametrize(("wire", "payload"), BODIES)
def test_every_strict_prefix_is_incomplete(wire: bytes, payload: bytes) -> None:
    for end in range(len(wire)):
        with pytest.raises(Incomplete):
            decode_chunked([wire[:end]])


def test_empty_pieces_are_harmless() -> None:
    body, consumed, _ = decode_chunked([b"", b"3\r\nab", b"", b"c\r\n0\r\n", b"", b"\r\n"])
    assert (body, consumed) == (b"abc", 13)


BAD_BODIES = [
    (b"0x5\r\nhello\r\n0\r\n\r\n", 400, "invalid_chunk_size"),
    (b"-5\r\nhello\r\n0\r\n\r\n", 400, "invalid_chunk_size"),
    (b" 5\r\nhello\r\n0\r\n\r\n", 400, "invalid_chunk_size"),
    (b"5 \r\nhello\r\n0\r\n\r\n", 400, "invalid_chunk_size"),
    (b"\r\n", 400, "invalid_chunk_size"),
    (b"5\nhello\r\n0\r\n\r\n", 400, "bare_lf"),
    (b"5\rhello\r\n0\r\n\r\n", 400, "bare_cr"),
    (b"5\r\nhelloX\r\n0\r\n\r\n", 400, "missing_chunk_crlf"),
    (b"5\r\nhello\rX0\r\n\r\n", 400, "missing_chunk_crlf"),
    (b"5;\r\nhello\r\n0\r\n\r\n", 400, "invalid_chunk_extension"),
    (b'5;a="b\r\nhello\r\n0\r\n\r\n', 400, "invalid_chunk_extension"),
    (b"5;a=b;c=\x7f\r\nhello\r\n0\r\n\r\n", 400, "invalid_chunk_extension"),
    (b'5;a="x" \r\nhello\r\n0\r\n\r\n', 400, "invalid_chunk_extension"),
    (b"5 ;a\r\nhello\r\n0\r\n\r\n", 400, "invalid_chunk_size"),
    (b"5; a\r\nhello\r\n0\r\n\r\n", 400, "invalid_chunk_extension"),
    (b"5;a =b\r\nhello\r\n0\r\n\r\n", 400, "invalid_chunk_extension"),
    (b"5;a= b\r\nhello\r\n0\r\n\r\n", 400, "invalid_chunk_extension"),
    (b"11111111111111111\r\n", 400, "chunk_size_too_large"),
    (b"ffffffffffffffff\r\n", 400, "chunk_size_too_large"),
    (b"0\r\nBad Name: x\r\n\r\n", 400, "invalid_header_name"),
    (b"0\r\n: x\r\n\r\n", 400, "invalid_header_name"),
    (b"0\r\nX: a\r\n folded\r\n\r\n", 400, "obs_fold"),
    (b"0\r\nX: a\x00\r\n\r\n", 400, "invalid_header_value"),
    (b"0\r\nX: a\r\r\n", 400, "bare_cr"),
    (b"0\r\n\rX", 400, "bare_cr"),
    (b"0\r\n\n", 400, "bare_lf"),
]


@pytest.mark.parametrize(("wire", "status", "code"), BAD_BODIES)
def test_errors_are_the_same_at_every_split(wire: bytes, status: int, code: str) -> None:
    for cut in range(len(wire) + 1):
        with pytest.raises(ParseError) as excinfo:
            decode_chunked(split_at(wire, (cut,)))
        assert (excinfo.value.status, excinfo.value.code) == (status, code), cut


def test_max_chunk_size_is_inclusive() -> None:
    body, _, _ = decode_chunked([b"10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n"], max_chunk_size=16)
    assert body == b"x" * 16
    with pytest.raises(ParseError) as excinfo:
        decode_chunked([b"11\r\n"], max_chunk_size=16)
    assert excinfo.value.code == "chunk_size_too_large"


def test_sixteen_hex_digits_are_allowed() -> None:
    with pytest.raises(Incomplete):
        decode_chunked([b"000000000000000f\r\nabc"])


def test_trailer_section_is_bounded() -> None:
    trailer = b"X-Pad: " + b"a" * 50 + b"\r\n"
    body = b"0\r\n" + trailer + b"\r\n"
    section = len(trailer) + 2
    assert decode_chunked([body], max_trailer=section)[0] == b""
    for cut in range(len(body) + 1):
        with pytest.raises(ParseError) as excinfo:
            decode_chunked(split_at(body, (cut,)), max_trailer=section - 1)
        assert (excinfo.value.status, excinfo.value.code) == (431, "trailer_fields_too_large")


def test_endless_trailer_is_refused_before_it_ends() -> None:
    with pytest.raises(ParseError) as excinfo:
        decode_chunked([b"0\r\nX: " + b"a" * 100], max_trailer=64)
    assert excinfo.value.status == 431


def test_chunk_extensions_are_bounded() -> None:
    with pytest.raises(ParseError) as excinfo:
        decode_chunked([b"1;" + b"a" * 5000])
    assert excinfo.value.code == "chunk_extensions_too_long"


def test_constructor_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        ChunkedDecoder(max_trailer=0)
    with pytest.raises(ValueError):
        ChunkedDecoder(max_chunk_size=0)
    ChunkedDecoder(max_trailer=2, max_chunk_size=1)
