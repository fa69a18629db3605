"""The wire codec: exact round trips, forward compatibility, and only typed errors for garbage."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.codec import SCHEMA_VERSION, CodecError, decode, decode_fields, encode, pack_levels
from common.model import OrderbookSnapshot, ms_to_datetime

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
levels = st.lists(st.tuples(finite, finite).map(list), max_size=30)


def make(**overrides) -> OrderbookSnapshot:
    fields = dict(
        symbol="BTC/USD:BTC-261225-60000-C", timestamp=ms_to_datetime(1_790_000_000_123),
        bids=[[0.0345, 10.0], [0.034, 2.5]], asks=[[0.035, 1.0]], exchange="deribit", market_type="option",
        receive_ts_ns=1_790_000_000_124_567_890, exchange_seq=987654321, seq=42, resync=True,
    )
    fields.update(overrides)
    return OrderbookSnapshot(**fields)


def test_round_trip_is_exact():
    snap = make()
    assert decode(encode(snap)) == snap


@given(bids=levels, asks=levels, seq=st.integers(0, 2**62), xseq=st.none() | st.integers(0, 2**62),
       ts=st.integers(0, 4_102_444_800_000), resync=st.booleans())
@settings(max_examples=200, deadline=None)
def test_round_trip_property(bids, asks, seq, xseq, ts, resync):
    snap = make(bids=bids, asks=asks, seq=seq, exchange_seq=xseq, timestamp=ms_to_datetime(ts), resync=resync)
    back = decode(encode(snap))
    assert back.bids == bids and back.asks == asks
    assert (back.seq, back.exchange_seq, back.resync, back.timestamp_ms) == (seq, xseq, resync, ts)


def test_unknown_fields_are_ignored_and_version_is_carried():
    obj = msgpack.unpackb(encode(make()), raw=False)
    assert obj["v"] == SCHEMA_VERSION
    obj["v"] = SCHEMA_VERSION + 1
    obj["future_field"] = {"anything": [1, 2, 3]}
    fields = decode_fields(msgpack.packb(obj, use_bin_type=True))
    assert fields["v"] == SCHEMA_VERSION + 1 and fields["seq"] == 42 and "future_field" not in fields


def test_levels_are_a_little_endian_float64_block():
    obj = msgpack.unpackb(encode(make(bids=[[1.5, 2.0]])), raw=False)
    assert obj["bids"] == pack_levels([[1.5, 2.0]]) == bytes.fromhex("000000000000f83f0000000000000040")


@pytest.mark.parametrize("garbage", [b"", b"\xc1", b"garbage", msgpack.packb([1, 2]), msgpack.packb({"exchange": "x"}),
                                     msgpack.packb({"exchange": 1, "symbol": "s", "ts": 1, "seq": 1, "bids": b"", "asks": b""}),
                                     msgpack.packb({"exchange": "e", "symbol": "s", "ts": "1", "seq": 1, "bids": b"", "asks": b""}),
                                     msgpack.packb({"exchange": "e", "symbol": "s", "ts": 1, "seq": 1, "bids": b"123", "asks": b""})])
def test_garbage_raises_codec_error(garbage):
    with pytest.raises(CodecError):
        decode(garbage)


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_fuzz_only_codec_error(data):
    try:
        decode(data)
    except CodecError:
        pass


@given(st.dictionaries(st.sampled_from(["v", "exchange", "symbol", "type", "ts", "recv_ns", "xseq", "seq", "resync",
                                        "bids", "asks", "x"]),
                       st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.text(max_size=5)
                       | st.binary(max_size=40) | finite | st.lists(st.integers(-2**63, 2**63), max_size=3)))
@settings(max_examples=500, deadline=None)
def test_fuzz_structured_maps_only_codec_error(obj):
    try:
        decode(msgpack.packb(obj, use_bin_type=True))
    except CodecError:
        pass


def test_empty_sides_give_none_not_index_error():
    snap = make(bids=[], asks=[])
    assert (snap.best_bid, snap.best_ask, snap.mid_price, snap.spread) == (None, None, None, None)
    one_sided = make(asks=[])
    assert one_sided.best_bid == 0.0345 and one_sided.mid_price is None and one_sided.spread is None


def test_to_dict_from_dict_round_trip():
    snap = make()
    data = snap.to_dict()
    assert data["mid_price"] == pytest.approx((0.0345 + 0.035) / 2)
    assert math.isclose(data["spread"], 0.035 - 0.0345)
    assert OrderbookSnapshot.from_dict(data) == snap
