"""``python -m emulator --host 127.0.0.1 --port 8080 --config path.toml``."""

from __future__ import annotations

import argparse

from emulator.config import EmulatorConfig, load_config
from emulator.server import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emulator", description="Yandex Metrica upload API emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--config", help="TOML file (see emulator/example.toml); defaults apply without it")
    parser.add_argument("--log-level", help="uvicorn log level (default from config: warning)")
    args = parser.parse_args(argv)
    config = load_config(args.config) if args.config else EmulatorConfig()
    if args.log_level:
        config = config.with_changes(log_level=args.log_level.lower())
    serve(config, args.host, args.port)


if __name__ == "__main__":
    main()
