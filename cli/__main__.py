"""``python -m cli`` == ``ccxt-collector``."""

from cli import main

main(prog_name="ccxt-collector")
