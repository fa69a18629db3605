"""The ``ccxt-collector`` command line. Each command lives in its own module and is imported lazily,
so ``ccxt-collector --help`` stays fast and one command's dependencies never slow another."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

#: command name -> "module:attribute" of its click command
COMMANDS: dict[str, str] = {
    "markets": "cli.markets:markets",
    "record": "cli.record:record",
    "emulate": "cli.emulate:emulate",
    "produce": "cli.produce:produce",
    "archive": "cli.archive:archive",
    "read": "cli.archive:read",
    "cache": "cli.cache:cache",
    "latest": "cli.cache:latest",
    "monitor": "cli.monitor:monitor",
    "compare": "cli.monitor:compare",
    "up": "cli.up:up",
    "shards": "cli.shards:shards",
    "status": "cli.status:status",
    "bench": "cli.bench:bench",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            module_name, attr = COMMANDS[name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Every user error is one line on stderr and exit code 2 (click's usage errors included)."""
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "ccxt-collector"
            click.echo(f"error: {exc.format_message()} (see '{where} --help')", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="ccxt-collector")
def main() -> None:
    """Collect real-time crypto-derivatives order books with ccxt.pro.

    \b
    Embedded (no services):   ccxt-collector record --demo
    Pipeline (Redis Streams): ccxt-collector produce ... | archive | cache | monitor
    Offline exchange:         ccxt-collector emulate --exchange deribit --port 8801

    Every command takes --help.
    """
