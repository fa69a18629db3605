"""Security: Redis passwords, ACL users and TLS work; secrets never reach logs, status or errors; hostile
names cannot escape the archive; every listener binds to loopback by default."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
import redis

from common.codec import encode
from common.health import serve_metrics
from common.model import OrderbookSnapshot, ms_to_datetime
from common.redis_client import async_client
from common.streams import StreamKeys
from consumers.archiver import ParquetArchiver
from consumers.runner import ConsumerRunner
from emulator import EmulatorServer
from producer.publisher import RedisPublisher
from tests.redis_server import RedisServer
from tests.waiting import wait_until, wait_until_sync

PASSWORD = "s3cret-redis-Pw-91"
USER_PASSWORD = "acl-user-Pw-77"
API_KEY = "apikey-TOPSECRET-5521"
API_SECRET = "apisecret-TOPSECRET-9932"
KEYS = StreamKeys()


def cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})


@pytest.mark.timeout(120)
def test_password_and_acl_user_and_no_secret_in_any_output(tmp_path):
    server = RedisServer(tmp_path / "redis", password=PASSWORD).start()
    admin = redis.Redis(port=server.port, password=PASSWORD)
    admin.execute_command("ACL", "SETUSER", "collector", "on", f">{USER_PASSWORD}", "~*", "&*", "+@all")
    url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
    acl_url = f"redis://collector:{USER_PASSWORD}@127.0.0.1:{server.port}/0"
    env = {"CCXT_COLLECTOR_DERIBIT_API_KEY": API_KEY, "CCXT_COLLECTOR_DERIBIT_API_SECRET": API_SECRET}
    producer = cli("produce", "--demo", "--exchange", "deribit", "--futures", "BTC", "-vv", "--redis-url", url, env=env)
    archiver = cli("archive", "--out", str(tmp_path / "archive"), "--max-file-age", "0.5", "-v", env={"REDIS_URL": acl_url})
    try:
        wait_until_sync(lambda: admin.scard(KEYS.shard_streams("deribit.btc")) >= 4, 60, "the producer's streams")
        wait_until_sync(lambda: list((tmp_path / "archive").rglob("*.parquet")), 60, "archived files (ACL user)")
        status = subprocess.run([sys.executable, "-m", "cli", "status", "--json", "--redis-url", acl_url],
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        assert '"deribit.btc"' in status.stdout
    finally:
        for proc in (producer, archiver):
            proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=60) for proc in (producer, archiver)]
    assert producer.returncode == 0 and archiver.returncode == 0, outputs
    wrong = subprocess.run([sys.executable, "-m", "cli", "status", "--redis-url",
                            f"redis://:wrong-{PASSWORD}@127.0.0.1:{server.port}/0"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    everything = "\n".join([*(o for pair in outputs for o in pair), status.stdout, status.stderr, wrong.stdout, wrong.stderr])
    assert "streaming" in everything or "deribit" in everything  # the logs did say things
    for secret in (PASSWORD, USER_PASSWORD, API_KEY, API_SECRET):
        assert secret not in everything, f"a secret leaked into output: {secret[:6]}…"
    admin.close()
    server.stop()


def make_tls_material(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / name for name in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem", "ext.cnf")}
    paths["ext.cnf"].write_text("subjectAltName=IP:127.0.0.1")
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(paths["ca.key"]), "-out", str(paths["ca.pem"]),
        "-days", "2", "-subj", "/CN=ccxt-collector-test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(paths["server.key"]), "-out", str(paths["server.csr"]),
        "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", str(paths["server.csr"]), "-CA", str(paths["ca.pem"]), "-CAkey", str(paths["ca.key"]),
        "-CAcreateserial", "-out", str(paths["server.pem"]), "-days", "2", "-extfile", str(paths["ext.cnf"]))
    return paths


@pytest.mark.timeout(90)
async def test_tls_pipeline(tmp_path):
    tls = make_tls_material(tmp_path / "tls")
    server = RedisServer(tmp_path / "redis")
    server.extra_args = ("--port", "0", "--tls-port", str(server.port), "--tls-cert-file", str(tls["server.pem"]),
                         "--tls-key-file", str(tls["server.key"]), "--tls-ca-cert-file", str(tls["ca.pem"]),
                         "--tls-auth-clients", "no")
    proc = subprocess.Popen([server.binary, "--bind", "127.0.0.1", "--save", "", "--dir", str(server.directory),
                             *server.extra_args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={tls['ca.pem']}"
    client = async_client(url)
    try:
        await wait_until(_pings(client), 10, "the TLS redis-server")
        publisher = RedisPublisher(client, "deribit.btc")
        writer = asyncio.create_task(publisher.run())
        for seq in range(1, 51):
            publisher.publish(OrderbookSnapshot("BTC/USD:BTC", ms_to_datetime(1_790_000_000_000 + seq),
                                                [[100.0, 1.0]], [[101.0, 1.0]], "deribit", "swap", 1, None, seq))
        assert await publisher.flush(10)
        publisher.close()
        await writer
        archiver = ParquetArchiver(tmp_path / "archive", max_file_age=0.2)
        runner = ConsumerRunner(async_client(url), archiver, block_ms=100, flush_interval=0.1)
        task = asyncio.create_task(runner.run())
        await wait_until(lambda: runner.stats.acked >= 50, 20, "50 entries archived over TLS")
        runner.stop()
        await task
        plain = subprocess.run([sys.executable, "-m", "cli", "status", "--redis-url",
                                f"redis://127.0.0.1:{server.port}/0"], capture_output=True, text=True, timeout=60)
        assert plain.returncode == 2  # a plain-text client cannot talk to the TLS port
    finally:
        await client.aclose()
        proc.terminate()
        proc.wait(10)


def _pings(client):
    async def check() -> bool:
        try:
            return await client.ping()
        except Exception:
            return False
    return check


async def test_hostile_names_cannot_escape_the_archive(redis_url, tmp_path):
    client = async_client(redis_url)
    out = tmp_path / "archive"
    stream = KEYS.book_stream("evil", "x")
    await client.sadd(KEYS.shards, "evil")
    await client.sadd(KEYS.shard_streams("evil"), stream)
    for seq, (exchange, symbol) in enumerate([("../../outside", "../../../etc/passwd"), ("/abs", "x"),
                                              ("deribit", "../../../../tmp/escape"), ("ok\x00x", "y")], start=1):
        payload = encode(OrderbookSnapshot(symbol, ms_to_datetime(1_790_000_000_000), [[1.0, 1.0]], [[2.0, 1.0]],
                                           exchange, "swap", 1, None, seq))
        await client.xadd(stream, {"d": payload})
    runner = ConsumerRunner(client, ParquetArchiver(out, max_file_age=0.1), block_ms=50, flush_interval=0.1)
    task = asyncio.create_task(runner.run())
    await wait_until(lambda: runner.stats.acked + runner.stats.dead_letters >= 4, 20, "all four entries handled")
    runner.stop()
    await task
    inside = out.resolve()
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix == ".parquet":
            assert inside in path.resolve().parents, f"{path} escaped the archive"
    assert not (tmp_path / "outside").exists() and not Path("/tmp/escape").exists()
    await client.aclose()


async def test_listeners_bind_loopback_by_default():
    with EmulatorServer(exchanges=["deribit"], port=0) as emulator:
        assert emulator.url.startswith("http://127.0.0.1:")
    metrics = await serve_metrics(_free_port())
    try:
        assert metrics.host == "127.0.0.1"
    finally:
        await metrics.stop()


def _free_port() -> int:
    from emulator.redis_server import free_port
    return free_port()


def test_status_json_never_prints_passwords(redis_server):
    url = f"redis://:{PASSWORD}@127.0.0.1:1/0"  # unreachable on purpose: the error names the URL
    result = subprocess.run([sys.executable, "-m", "cli", "status", "--redis-url", url], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and PASSWORD not in result.stderr + result.stdout
    assert msgpack  # keep the import honest: the wire format is msgpack
