"""StreamConfig validation, the ccxt config it builds, and the config loader."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.config import EXCHANGE_CONFIG_ENV, ConfigError, StreamConfig, deep_merge, load_mapping


def test_guide_defaults():
    cfg = StreamConfig()
    assert (cfg.exchange_id, cfg.testnet, cfg.orderbook_limit, cfg.reconnect_delay, cfg.max_reconnect_attempts,
            cfg.rate_limit, cfg.store_snapshots, cfg.max_snapshots_per_symbol, cfg.api_key, cfg.api_secret,
            cfg.on_orderbook_update, cfg.on_error) == ("deribit", False, 20, 5, 10, True, True, 1000, None, None, None, None)


def test_unknown_exchange_names_close_matches():
    with pytest.raises(ConfigError, match="did you mean.*deribit"):
        StreamConfig(exchange_id="derbit")


@pytest.mark.parametrize("field", ["orderbook_limit", "max_reconnect_attempts", "max_snapshots_per_symbol"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True, "10"])
def test_bad_limits_rejected(field, value):
    with pytest.raises(ConfigError, match=field):
        StreamConfig(**{field: value})


def test_reconnect_delay_must_be_positive():
    with pytest.raises(ConfigError, match="reconnect_delay"):
        StreamConfig(reconnect_delay=0)


def test_exchange_config_deep_merged_over_env(monkeypatch):
    monkeypatch.setenv(EXCHANGE_CONFIG_ENV, json.dumps(
        {"deribit": {"urls": {"api": {"rest": "http://env", "ws": "ws://env"}}, "timeout": 1000}}))
    cfg = StreamConfig(api_key="k", api_secret="s", rate_limit=False,
                       exchange_config={"urls": {"api": {"ws": "ws://explicit"}}})
    built = cfg.ccxt_config()
    assert built["urls"]["api"] == {"rest": "http://env", "ws": "ws://explicit"}
    assert (built["timeout"], built["apiKey"], built["secret"], built["enableRateLimit"]) == (1000, "k", "s", False)


def test_secrets_not_in_repr():
    text = repr(StreamConfig(api_key="topsecretkey", api_secret="topsecretvalue"))
    assert "topsecret" not in text and "***" in text


def test_load_mapping_json_yaml_file_and_errors(tmp_path):
    assert load_mapping('{"a": {"b": 1}}') == {"a": {"b": 1}}
    path = tmp_path / "c.yaml"
    path.write_text("a:\n  b: 2\n")
    assert load_mapping(str(path)) == {"a": {"b": 2}}
    with pytest.raises(ConfigError, match="neither inline JSON nor an existing file"):
        load_mapping(str(tmp_path / "missing.yaml"))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_mapping(str(tmp_path / "list.yaml"))
    with pytest.raises(ConfigError, match="cannot parse"):
        load_mapping("{not json")


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_fuzz_loader_only_config_error(text):
    try:
        load_mapping(text if text.strip().startswith("{") else "{" + text)
    except ConfigError:
        pass


def test_deep_merge_does_not_mutate():
    base = {"a": {"b": 1, "c": [1]}}
    out = deep_merge(base, {"a": {"b": 2}})
    assert out == {"a": {"b": 2, "c": [1]}} and base == {"a": {"b": 1, "c": [1]}}


def test_secrets_from_env_file_and_exchange_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("MY_KEY", "key-from-env")
    secret_file = tmp_path / "secret"
    secret_file.write_text("secret-from-file\n")
    cfg = StreamConfig(api_key="env:MY_KEY", api_secret=f"file:{secret_file}")
    assert (cfg.api_key, cfg.api_secret) == ("key-from-env", "secret-from-file")
    monkeypatch.setenv("CCXT_COLLECTOR_OKX_API_KEY", "okx-key")
    assert StreamConfig(exchange_id="okx").api_key == "okx-key"
    with pytest.raises(ConfigError, match="MISSING_VAR is not set"):
        StreamConfig(api_key="env:MISSING_VAR")
    with pytest.raises(ConfigError, match="cannot read"):
        StreamConfig(api_secret=f"file:{tmp_path / 'nope'}")
    assert "key-from-env" not in repr(cfg) and "secret-from-file" not in repr(cfg)


def test_perpetuals_have_no_expiry_even_when_ccxt_gives_a_placeholder():
    from common.markets import MarketInfo

    perpetual = {"symbol": "BTC/USD:BTC", "id": "BTC-PERPETUAL", "type": "swap", "base": "BTC", "quote": "USD",
                 "settle": "BTC", "expiry": 32503680000000, "precision": {"price": 0.5}}
    assert MarketInfo.from_ccxt("deribit", perpetual).expiry is None
    future = dict(perpetual, symbol="BTC/USD:BTC-261225", type="future", expiry=1798185600000)
    assert MarketInfo.from_ccxt("deribit", future).expiry_date.isoformat() == "2026-12-25"
