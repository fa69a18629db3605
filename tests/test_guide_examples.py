"""The user's guide examples, run as written against the exchange emulator.

Each example below is the guide's code verbatim; only its ``src.data...`` imports are adapted (see
``ADAPTED_IMPORTS``) and ``asyncio.sleep`` of a second or more is shortened (``FastSleep``), so a
"monitor for 60 seconds" example takes about a second. ``$CCXT_COLLECTOR_EXCHANGE_CONFIG`` points
``StreamConfig(exchange_id='deribit')`` (and okx) at the emulator, as a user would point it at a testnet.
"""

from __future__ import annotations

import ast
import asyncio
import json

import pytest

from common.config import EXCHANGE_CONFIG_ENV
from emulator import EmulatorServer

ADAPTED_IMPORTS = {
    "from src.data.ccxt_collector import CCXTProCollector, StreamConfig":
        "from producer import CCXTProCollector\nfrom common import StreamConfig",
    "from src.data.ccxt_collector import MultiExchangeCollector": "from producer import MultiExchangeCollector",
    "from src.data.storage import StreamingDataRecorder": "from common.storage import StreamingDataRecorder",
}

# -- the guide's examples (verbatim) ------------------------------------------------------------------------

QUICK_START_FUTURES = '''
import asyncio
from src.data.ccxt_collector import CCXTProCollector, StreamConfig

async def stream_futures():
    # Configure the collector
    config = StreamConfig(
        exchange_id='deribit',
        orderbook_limit=10
    )
    
    # Create collector
    collector = CCXTProCollector(config)
    
    # Start and subscribe
    await collector.start()
    await collector.subscribe_futures(['BTC/USD:BTC', 'ETH/USD:ETH'])
    
    # Get latest orderbooks
    await asyncio.sleep(5)
    btc_ob = collector.get_latest_orderbook('BTC/USD:BTC')
    print(f"BTC Mid Price: ${btc_ob.mid_price:.2f}")
    
    await collector.stop()

asyncio.run(stream_futures())
'''

QUICK_START_OPTIONS = '''
async def stream_options():
    config = StreamConfig(exchange_id='deribit')
    collector = CCXTProCollector(config)
    
    await collector.start()
    
    # Get available options
    btc_calls = collector.get_available_options(
        base_currency='BTC',
        option_type='C'
    )
    
    # Subscribe to first 10 calls
    await collector.subscribe_options(btc_calls[:10])
    
    # Monitor for 60 seconds
    await asyncio.sleep(60)
    
    # Export to DataFrame
    df = collector.get_orderbooks_as_dataframe()
    print(df)
    
    await collector.stop()

asyncio.run(stream_options())
'''

QUICK_START_CALLBACKS = '''
async def callback_example():
    async def on_orderbook_update(orderbook):
        print(f"{orderbook.symbol}: "
              f"Bid=${orderbook.best_bid:.2f} "
              f"Ask=${orderbook.best_ask:.2f}")
    
    config = StreamConfig(
        exchange_id='deribit',
        on_orderbook_update=on_orderbook_update
    )
    
    collector = CCXTProCollector(config)
    await collector.start()
    await collector.subscribe_futures(['BTC/USD:BTC'])
    
    await asyncio.sleep(30)
    await collector.stop()

asyncio.run(callback_example())
'''

HISTORICAL_ANALYSIS = '''
config = StreamConfig(
    exchange_id='deribit',
    store_snapshots=True,
    max_snapshots_per_symbol=1000
)

collector = CCXTProCollector(config)
await collector.start()
await collector.subscribe_futures(['BTC/USD:BTC'])

# Wait to collect data
await asyncio.sleep(300)  # 5 minutes

# Analyze historical snapshots
history = collector.get_snapshot_history('BTC/USD:BTC')
mid_prices = [s.mid_price for s in history]
spreads = [s.spread for s in history]

print(f"Average price: ${sum(mid_prices)/len(mid_prices):.2f}")
print(f"Price volatility: ${max(mid_prices) - min(mid_prices):.2f}")
'''

VOL_SURFACE = '''
async def build_vol_surface():
    collector = CCXTProCollector(StreamConfig(exchange_id='deribit'))
    await collector.start()
    
    # Get all BTC options
    all_options = collector.get_available_options(base_currency='BTC')
    await collector.subscribe_options(all_options)
    
    # Wait for data
    await asyncio.sleep(10)
    
    # Export to DataFrame
    df = collector.get_orderbooks_as_dataframe()
    
    # Filter options only
    options_df = df[df['symbol'].str.contains('-')]
    
    # Your vol surface calculation here
    # ...
    
    await collector.stop()
'''

EXAMPLE_1_SIMPLE_FUTURES = '''
import asyncio
from src.data.ccxt_collector import CCXTProCollector, StreamConfig

async def simple_futures():
    config = StreamConfig(exchange_id='deribit')
    collector = CCXTProCollector(config)
    
    await collector.start()
    await collector.subscribe_futures(['BTC/USD:BTC'])
    
    # Monitor for 30 seconds
    for i in range(30):
        await asyncio.sleep(1)
        ob = collector.get_latest_orderbook('BTC/USD:BTC')
        print(f"BTC Mid: ${ob.mid_price:.2f}, Spread: ${ob.spread:.2f}")
    
    await collector.stop()

asyncio.run(simple_futures())
'''

EXAMPLE_2_OPTIONS_WITH_SAVE = '''
from src.data.storage import StreamingDataRecorder

async def options_with_save():
    recorder = StreamingDataRecorder(format='jsonl')
    
    config = StreamConfig(
        exchange_id='deribit',
        on_orderbook_update=recorder.record_snapshot
    )
    
    collector = CCXTProCollector(config)
    await collector.start()
    
    # Get BTC call options
    calls = collector.get_available_options(
        base_currency='BTC',
        option_type='C'
    )[:10]
    
    await collector.subscribe_options(calls)
    
    # Collect for 1 hour
    await asyncio.sleep(3600)
    
    stats = recorder.get_stats()
    print(f"Recorded {stats['total_snapshots']} snapshots")
    
    await collector.stop()

asyncio.run(options_with_save())
'''

EXAMPLE_3_MULTI_EXCHANGE = '''
from src.data.ccxt_collector import MultiExchangeCollector

async def multi_exchange():
    multi = MultiExchangeCollector()
    
    await multi.add_exchange(StreamConfig(exchange_id='deribit'))
    await multi.add_exchange(StreamConfig(exchange_id='okx'))
    
    # Subscribe to same symbols
    for exchange_id in ['deribit', 'okx']:
        collector = multi.get_collector(exchange_id)
        await collector.subscribe_futures(['BTC/USD:BTC'])
    
    # Monitor for 60 seconds
    for i in range(60):
        await asyncio.sleep(1)
        
        comparison = multi.compare_orderbooks('BTC/USD:BTC')
        
        for exchange, ob in comparison.items():
            print(f"{exchange}: ${ob.mid_price:.2f}", end="  ")
        print()
    
    await multi.stop_all()

asyncio.run(multi_exchange())
'''

TEST_CONNECTION = '''
# Minimal test
async def test():
    config = StreamConfig(exchange_id='deribit')
    collector = CCXTProCollector(config)
    
    try:
        await collector.start()
        print("✓ Connection successful")
        
        futures = collector.get_available_futures()
        print(f"✓ Found {len(futures)} futures")
        
        await collector.subscribe_futures([futures[0]])
        await asyncio.sleep(5)
        
        ob = collector.get_latest_orderbook(futures[0])
        print(f"✓ Received data: {ob.mid_price}")
        
    except Exception as e:
        print(f"✗ Error: {e}")
    finally:
        await collector.stop()

asyncio.run(test())
'''

# -- harness ----------------------------------------------------------------------------------------------

REAL_SLEEP = asyncio.sleep


class FastSleep:
    """Shortens the examples' sleeps of a second or more: the first to 0.5 s (time for the first books
    to arrive, as the example intends), later ones to 5% (0.1-1 s). Shorter sleeps (ccxt's, the
    collector's) are left alone."""

    def __init__(self) -> None:
        self.first = True

    async def __call__(self, delay: float, result=None):
        if delay >= 1:
            delay = 0.5 if self.first else min(max(delay * 0.05, 0.1), 1.0)
            self.first = False
        return await REAL_SLEEP(delay, result)


def adapt(source: str) -> str:
    for original, adapted in ADAPTED_IMPORTS.items():
        source = source.replace(original, adapted)
    assert "src.data" not in source
    return source


def run_example(source: str, *, top_level_await: bool = False, then: str | None = None) -> dict:
    """Execute an example in a namespace that has the guide's implicit imports; return the namespace."""
    from common import StreamConfig
    from producer import CCXTProCollector, MultiExchangeCollector

    namespace = {"__name__": "guide_example", "asyncio": asyncio, "StreamConfig": StreamConfig,
                 "CCXTProCollector": CCXTProCollector, "MultiExchangeCollector": MultiExchangeCollector}
    if top_level_await:
        code = compile(adapt(source), "<guide>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        asyncio.run(_eval_async(code, namespace))
    else:
        exec(compile(adapt(source), "<guide>", "exec"), namespace)
    if then:
        asyncio.run(namespace[then]())
    return namespace


async def _eval_async(code, namespace: dict) -> None:
    await eval(code, namespace)
    await namespace["collector"].stop()


@pytest.fixture
def guide_env(emulator_env, monkeypatch, tmp_path):
    monkeypatch.setattr(asyncio, "sleep", FastSleep())
    monkeypatch.chdir(tmp_path)
    return emulator_env


def test_quick_start_futures(guide_env, capsys):
    run_example(QUICK_START_FUTURES)
    assert capsys.readouterr().out.startswith("BTC Mid Price: $")


def test_quick_start_options(guide_env, capsys):
    run_example(QUICK_START_OPTIONS)
    out = capsys.readouterr().out
    assert "BTC/USD:BTC-" in out and "-C" in out and "[10 rows x" in out


def test_quick_start_callbacks(guide_env, capsys):
    run_example(QUICK_START_CALLBACKS)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > 3 and all(line.startswith("BTC/USD:BTC: Bid=$") for line in lines)


def test_historical_analysis(guide_env, capsys):
    namespace = run_example(HISTORICAL_ANALYSIS, top_level_await=True)
    out = capsys.readouterr().out
    assert "Average price: $" in out and "Price volatility: $" in out
    assert len(namespace["history"]) > 1


def test_vol_surface(guide_env):
    namespace = run_example(VOL_SURFACE, then="build_vol_surface")
    assert "build_vol_surface" in namespace


def test_example_1_simple_futures(guide_env, capsys):
    run_example(EXAMPLE_1_SIMPLE_FUTURES)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 30 and all(line.startswith("BTC Mid: $") for line in lines)


def test_example_2_options_with_save(guide_env, capsys, tmp_path):
    run_example(EXAMPLE_2_OPTIONS_WITH_SAVE)
    out = capsys.readouterr().out
    recorded = int(out.split("Recorded ")[1].split()[0])
    assert recorded > 10
    assert len(list((tmp_path / "data/raw/orderbooks/jsonl").iterdir())) == 10


def test_example_3_multi_exchange(monkeypatch, tmp_path, capsys):
    with EmulatorServer(exchanges=["deribit", "okx"], seed=3, port=0, update_interval=0.05) as server:
        monkeypatch.setenv(EXCHANGE_CONFIG_ENV, json.dumps(server.env_config()))
        monkeypatch.setattr(asyncio, "sleep", FastSleep())
        run_example(EXAMPLE_3_MULTI_EXCHANGE)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 60
    assert "deribit: $" in lines[-1] and "okx: $" in lines[-1]


def test_troubleshooting_connection_test(guide_env, capsys):
    run_example(TEST_CONNECTION)
    out = capsys.readouterr().out
    assert "✓ Received data: " in out and "✗" not in out
