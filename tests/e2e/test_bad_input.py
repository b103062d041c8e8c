"""Hostile and malformed bytes on the Kafka port, sent with plain sockets.

Whatever arrives, the broker answers with the protocol's error or closes the
connection, within a bounded time; it never dies, never hangs, never changes
what it stored, and other connections keep working. The hostile inputs include
the exact ones that make kafka-protocol 0.18.0 abort on allocation (DESIGN.md):
a Metadata body claiming 2^31 topics and a 61-byte record batch claiming 2^31
records. Control cases send well-formed requests built by the same encoders, so
an error answer to a hostile case is not just a bug in this file's encoding.
"""

from __future__ import annotations

import random
import socket
import struct
import time

import pytest
from kafka import KafkaProducer

from broker import Deadline, read_topic

IO_TIMEOUT = 10.0  # seconds the broker gets to answer or close

# ------------------------------------------------------------------ CRC32C

_CRC32C_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC32C_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), reflected, as Kafka record batches use."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def test_crc32c_known_vector():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


# ---------------------------------------------------------------- encoders


def i8(v):
    return struct.pack(">b", v)


def i16(v):
    return struct.pack(">h", v)


def i32(v):
    return struct.pack(">i", v)


def i64(v):
    return struct.pack(">q", v)


def string(s):
    if s is None:
        return i16(-1)
    b = s.encode()
    return i16(len(b)) + b


def uvarint(v):
    out = bytearray()
    while True:
        byte = v & 0x7F
        v >>= 7
        if v:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def varint(v):  # zigzag
    return uvarint((v << 1) ^ (v >> 63))


def compact_string(s):
    b = s.encode()
    return uvarint(len(b) + 1) + b


def frame(body: bytes) -> bytes:
    return i32(len(body)) + body


def header_v1(api_key, api_version, corr, client_id="bad-input-test"):
    return i16(api_key) + i16(api_version) + i32(corr) + string(client_id)


def header_v2(api_key, api_version, corr, client_id="bad-input-test"):
    return header_v1(api_key, api_version, corr, client_id) + uvarint(0)  # no tagged fields


def record_batch(records, *, count=None, partition_leader_epoch=-1, timestamp=None):
    """A v2 record batch of (key, value, headers) records, uncompressed, CRC32C'd."""
    ts = int(time.time() * 1000) if timestamp is None else timestamp
    body = bytearray()
    for i, (key, value, headers) in enumerate(records):
        rec = bytearray(i8(0) + varint(0) + varint(i))
        rec += varint(-1) if key is None else varint(len(key)) + key
        rec += varint(-1) if value is None else varint(len(value)) + value
        rec += varint(len(headers))
        for hk, hv in headers:
            hk = hk.encode()
            rec += varint(len(hk)) + hk + (varint(-1) if hv is None else varint(len(hv)) + hv)
        body += varint(len(rec)) + rec
    n = len(records) if count is None else count
    after_crc = (
        i16(0)  # attributes: no compression, create time, not transactional
        + i32(max(len(records) - 1, 0))  # lastOffsetDelta
        + i64(ts)  # firstTimestamp
        + i64(ts)  # maxTimestamp
        + i64(-1)  # producerId
        + i16(-1)  # producerEpoch
        + i32(-1)  # baseSequence
        + i32(n)  # record count
        + bytes(body)
    )
    after_length = i32(partition_leader_epoch) + i8(2) + struct.pack(">I", crc32c(after_crc)) + after_crc
    return i64(0) + i32(len(after_length)) + after_length


def produce_v3(corr, topic, partition, records_bytes, acks=-1):
    body = (
        string(None)  # transactional_id
        + i16(acks)
        + i32(10000)  # timeout_ms
        + i32(1)
        + string(topic)
        + i32(1)
        + i32(partition)
        + i32(len(records_bytes))
        + records_bytes
    )
    return frame(header_v1(0, 3, corr) + body)


# ---------------------------------------------------------------- decoders


class Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError(f"short response: need {n} bytes at {self.pos} of {len(self.data)}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def i8(self):
        return struct.unpack(">b", self.take(1))[0]

    def i16(self):
        return struct.unpack(">h", self.take(2))[0]

    def i32(self):
        return struct.unpack(">i", self.take(4))[0]

    def i64(self):
        return struct.unpack(">q", self.take(8))[0]

    def string(self):
        n = self.i16()
        return None if n < 0 else self.take(n).decode()

    def array(self, item):
        n = self.i32()
        assert -1 <= n <= 100000, f"absurd array length {n}"
        return [item() for _ in range(max(n, 0))]

    def done(self):
        return self.pos == len(self.data)


def parse_produce_v3(body):
    r = Reader(body)
    corr = r.i32()
    topics = r.array(
        lambda: (r.string(), r.array(lambda: {"partition": r.i32(), "error_code": r.i16(),
                                               "base_offset": r.i64(), "log_append_time": r.i64()}))
    )
    r.i32()  # throttle_time_ms
    assert r.done(), "trailing bytes in Produce v3 response"
    return corr, topics


def parse_api_versions_v0(body):
    r = Reader(body)
    corr = r.i32()
    error = r.i16()
    apis = r.array(lambda: (r.i16(), r.i16(), r.i16()))
    return corr, error, {k: (lo, hi) for k, lo, hi in apis}, r


def parse_metadata_v1(body):
    r = Reader(body)
    corr = r.i32()
    brokers = r.array(lambda: (r.i32(), r.string(), r.i32(), r.string()))
    controller = r.i32()
    topics = r.array(
        lambda: {
            "error_code": r.i16(),
            "name": r.string(),
            "internal": r.i8(),
            "partitions": r.array(
                lambda: (r.i16(), r.i32(), r.i32(), r.array(r.i32), r.array(r.i32))
            ),
        }
    )
    assert r.done(), "trailing bytes in Metadata v1 response"
    return corr, brokers, controller, topics


# ------------------------------------------------------------------ socket


class Outcome:
    def __init__(self, frame=None, closed=False, timed_out=False, received=b""):
        self.frame, self.closed, self.timed_out, self.received = frame, closed, timed_out, received

    def __repr__(self):
        return (f"<Outcome frame={self.frame!r:.80} closed={self.closed} "
                f"timed_out={self.timed_out} received={len(self.received)}B>")


def exchange(port, payload, *, shut_wr=False, want="frame", timeout=IO_TIMEOUT):
    """Send raw bytes; then wait for one response frame (`want="frame"`) or for
    the broker to close the connection (`want="close"`), at most `timeout`s."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    data = bytearray()
    try:
        try:
            sock.sendall(payload)
            if shut_wr:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # EPIPE, ECONNRESET, ENOTCONN: the broker already closed
            return Outcome(closed=True)
        deadline = Deadline(timeout)
        while True:
            if want == "frame" and len(data) >= 4:
                size = struct.unpack(">i", data[:4])[0]
                assert 0 <= size <= 64 * 1024 * 1024, f"bad response size {size}"
                if len(data) >= 4 + size:
                    return Outcome(frame=bytes(data[4 : 4 + size]), received=bytes(data))
            if deadline.passed():
                return Outcome(timed_out=True, received=bytes(data))
            sock.settimeout(max(0.05, deadline.remaining()))
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                return Outcome(closed=True, received=bytes(data))
            if not chunk:
                return Outcome(closed=True, received=bytes(data))
            data += chunk
    finally:
        sock.close()


# ------------------------------------------------------------------ fixture

CANARY = "canary"
CANARY_VALUES = [f"canary-{i}".encode() for i in range(10)]


@pytest.fixture
def guarded(broker):
    """A broker with a canary topic and a client connection open across the test;
    after the test: the broker lives, stored data is unchanged, clients still work."""
    live = KafkaProducer(bootstrap_servers=[broker.bootstrap], acks="all")
    try:
        for v in CANARY_VALUES:
            live.send(CANARY, key=b"k", value=v, partition=0).get(timeout=10)
        records, ends = read_topic(broker.bootstrap, CANARY)
        assert [r.value for r in records] == CANARY_VALUES

        yield broker

        assert broker.running(), f"broker died: exit code {broker.proc.poll()}"
        # The connection opened before the bad input still works.
        md = live.send("after-bad-input", value=b"still here", partition=0).get(timeout=10)
        assert md.offset == 0
    finally:
        live.close(timeout=10)
    # Stored data is exactly what it was.
    records, ends = read_topic(broker.bootstrap, CANARY)
    assert ends[0] == len(CANARY_VALUES) and sum(ends.values()) == len(CANARY_VALUES)
    assert [(r.offset, r.key, r.value) for r in records] == [
        (i, b"k", v) for i, v in enumerate(CANARY_VALUES)
    ]
    # New clients still produce and consume.
    producer = KafkaProducer(bootstrap_servers=[broker.bootstrap], acks="all")
    assert producer.send("after-bad-input", value=b"new client", partition=0).get(timeout=10).offset == 1
    producer.close(timeout=10)
    records, _ = read_topic(broker.bootstrap, "after-bad-input")
    assert [r.value for r in records] == [b"still here", b"new client"]
    rss = broker.rss_bytes()
    assert rss is None or rss < 1024**3, f"broker resident memory grew to {rss} bytes"


def assert_answer_or_close(outcome, corr=None):
    assert not outcome.timed_out, f"broker neither answered nor closed within {IO_TIMEOUT}s: {outcome}"
    if outcome.frame is not None and corr is not None:
        assert struct.unpack(">i", outcome.frame[:4])[0] == corr, "response has the wrong correlation id"


# ------------------------------------------------------------ control cases


def test_control_api_versions_v0_advertises_produce_from_v0(guarded):
    out = exchange(guarded.port, frame(header_v1(18, 0, 4242)))
    assert out.frame is not None, out
    corr, error, apis, r = parse_api_versions_v0(out.frame)
    assert r.done(), "ApiVersions v0 response has trailing bytes"
    assert (corr, error) == (4242, 0)
    assert apis[0][0] == 0, "Produce must be advertised from v0 (KAFKA-18659)"
    assert apis[0][1] >= 3
    for key in (0, 1, 3, 18):  # Produce, Fetch, Metadata, ApiVersions
        assert key in apis


def test_control_metadata_v1_for_existing_topic(guarded):
    out = exchange(guarded.port, frame(header_v1(3, 1, 77) + i32(1) + string(CANARY)))
    assert out.frame is not None, out
    corr, brokers, controller, topics = parse_metadata_v1(out.frame)
    assert corr == 77
    assert [(b[1], b[2]) for b in brokers] == [("127.0.0.1", guarded.port)]
    assert len(topics) == 1
    assert (topics[0]["name"], topics[0]["error_code"]) == (CANARY, 0)
    assert [p[1] for p in topics[0]["partitions"]] == [0]


def test_control_produce_v3_with_valid_batch_is_stored(guarded):
    batch = record_batch([(b"key", b"raw value", [("h", b"1"), ("h", b"2")])])
    out = exchange(guarded.port, produce_v3(31337, "raw-produce", 0, batch))
    assert out.frame is not None, out
    corr, topics = parse_produce_v3(out.frame)
    assert corr == 31337
    assert [(name, [(p["partition"], p["error_code"], p["base_offset"]) for p in parts])
            for name, parts in topics] == [("raw-produce", [(0, 0, 0)])]
    records, ends = read_topic(guarded.bootstrap, "raw-produce")
    assert ends == {0: 1}
    assert (records[0].key, records[0].value) == (b"key", b"raw value")
    assert [tuple(h) for h in records[0].headers] == [("h", b"1"), ("h", b"2")]


# ------------------------------------------------------------ hostile cases


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_bytes(guarded, seed):
    rng = random.Random(seed)
    payload = rng.randbytes(4096)
    out = exchange(guarded.port, payload, shut_wr=True, want="close")
    assert out.closed, f"connection not closed after random bytes + EOF: {out}"


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_random_body_with_plausible_size_prefix(guarded, seed):
    rng = random.Random(seed)
    body = rng.randbytes(rng.randint(1, 300))
    out = exchange(guarded.port, frame(body), want="frame")
    assert_answer_or_close(out)


@pytest.mark.parametrize(
    "api_key,api_version",
    [(0, 3), (1, 4), (2, 1), (3, 1), (8, 2), (9, 1), (10, 1), (11, 2), (12, 1), (14, 1), (18, 3), (19, 2)],
)
def test_valid_header_random_body(guarded, api_key, api_version):
    rng = random.Random(api_key * 100 + api_version)
    for attempt in range(3):
        corr = 700 + attempt
        body = rng.randbytes(rng.choice([1, 7, 64, 512]))
        header = header_v2(api_key, api_version, corr) if (api_key, api_version) == (18, 3) \
            else header_v1(api_key, api_version, corr)
        out = exchange(guarded.port, frame(header + body), shut_wr=True, want="close")
        assert out.closed, f"not closed after a garbage {api_key}v{api_version} request + EOF: {out}"
        if len(out.received) >= 8:
            assert struct.unpack(">i", out.received[4:8])[0] == corr, "wrong correlation id"


def test_truncated_request_then_eof(guarded):
    request = frame(header_v1(3, 1, 9) + i32(1) + string(CANARY))
    out = exchange(guarded.port, request[:-7], shut_wr=True, want="close")
    assert out.closed, out
    assert out.received == b"", "a truncated request must not be answered"


def test_truncated_request_then_abrupt_close(guarded):
    request = frame(header_v1(0, 3, 10) + b"\x00" * 40)
    sock = socket.create_connection(("127.0.0.1", guarded.port), timeout=IO_TIMEOUT)
    sock.sendall(request[:25])
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    sock.close()
    # The broker keeps serving (checked by the fixture) and answers a new connection.
    out = exchange(guarded.port, frame(header_v1(18, 0, 11)))
    assert out.frame is not None and parse_api_versions_v0(out.frame)[:2] == (11, 0)


def test_two_gigabyte_size_prefix_is_refused(guarded):
    out = exchange(guarded.port, i32(0x7FFFFFFF) + b"\x00\x03\x00\x01abcd", want="close")
    assert out.closed, f"a 2 GiB frame size must close the connection: {out}"


def test_negative_size_prefix_is_refused(guarded):
    out = exchange(guarded.port, i32(-5) + b"\x00" * 16, want="close")
    assert out.closed, out


def test_unknown_api_key(guarded):
    out = exchange(guarded.port, frame(header_v1(999, 0, 5150)))
    assert_answer_or_close(out, corr=5150)


def test_metadata_v1_claiming_two_billion_topics(guarded):
    out = exchange(guarded.port, frame(header_v1(3, 1, 8080) + i32(0x7FFFFFFF)))
    assert_answer_or_close(out, corr=8080)


def test_produce_v3_batch_claiming_two_billion_records(guarded):
    ts = int(time.time() * 1000)
    batch = record_batch([], count=0x7FFFFFFF, partition_leader_epoch=0, timestamp=ts)
    assert len(batch) == 61
    assert struct.unpack(">i", batch[8:12])[0] == 49  # batchLength
    out = exchange(guarded.port, produce_v3(6161, "hostile", 0, batch))
    assert_answer_or_close(out, corr=6161)
    if out.frame is not None:
        corr, topics = parse_produce_v3(out.frame)
        codes = [p["error_code"] for _, parts in topics for p in parts]
        assert codes and all(c != 0 for c in codes), f"hostile batch accepted: {topics}"
    # Nothing was appended to the target topic.
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=[guarded.bootstrap])
    try:
        parts = c.partitions_for_topic("hostile")
        if parts:
            ends = c.end_offsets([TopicPartition("hostile", p) for p in parts])
            assert set(ends.values()) == {0}, f"hostile batch stored: {ends}"
    finally:
        c.close()


def test_produce_v3_batch_with_bad_crc(guarded):
    batch = bytearray(record_batch([(b"k", b"v", [])]))
    batch[-1] ^= 0xFF  # corrupt the last value byte: the CRC no longer matches
    out = exchange(guarded.port, produce_v3(99, "bad-crc", 0, bytes(batch)))
    assert_answer_or_close(out, corr=99)
    if out.frame is not None:
        _, topics = parse_produce_v3(out.frame)
        codes = [p["error_code"] for _, parts in topics for p in parts]
        assert codes and all(c != 0 for c in codes), f"corrupt batch accepted: {topics}"


def test_api_versions_v7_gets_v0_unsupported_version_answer(guarded):
    body = compact_string("bad-input-test") + compact_string("0.0.1") + uvarint(0)
    out = exchange(guarded.port, frame(header_v2(18, 7, 1234) + body))
    assert out.frame is not None, f"no ApiVersions answer: {out}"
    corr, error, apis, r = parse_api_versions_v0(out.frame)
    assert corr == 1234
    assert error == 35, f"expected UNSUPPORTED_VERSION (35), got {error}"
    assert 18 in apis, "the answer must tell the client which ApiVersions versions exist"
    assert apis[18][0] == 0


def test_fetch_naming_one_partition_thousands_of_times_with_no_byte_limit(guarded):
    """A 1 MiB-class Fetch v4 naming the canary partition 20,000 times with max_bytes=0 and
    partition_max_bytes=2^31-1 must not make the broker read (or allocate) per entry: the
    partition is answered once and the answer is small."""
    n = 20_000
    part = i32(0) + i64(0) + i32(0x7FFFFFFF)  # partition, fetch_offset, partition_max_bytes
    body = (
        i32(-1) + i32(0) + i32(0) + i32(0) + i8(0)  # replica, max_wait, min_bytes, max_bytes, isolation
        + i32(1) + string(CANARY) + i32(n) + part * n
    )
    out = exchange(guarded.port, frame(header_v1(1, 4, 5150) + body))
    assert out.frame is not None, out
    r = Reader(out.frame)
    assert r.i32() == 5150  # correlation id
    r.i32()  # throttle
    assert r.i32() == 1  # one topic
    assert r.string() == CANARY
    assert r.i32() == 1, "the partition named 20,000 times is answered once"
    assert len(out.frame) < 64 * 1024
