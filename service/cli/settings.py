"""Command line: `python -m service settings --markdown | --env | --app-json`, the settings' reference on stdout.

`make docs` writes `--markdown` to docs/configuration.md, `--env` to .env.example and `--app-json` to app.json
(whose other parts, read from the app.json in the working directory, are kept); a test fails when the
committed files differ from what this prints. It reads the settings' model, never the environment, so a bad
or missing setting does not stop it, and it loads neither the app nor the SDKs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Literal

from service.settings_docs import APP_JSON_PATH, render_app_json, render_env, render_markdown, setting_docs

Format = Literal["markdown", "env", "app-json"]


def add_commands(commands: Any) -> None:
    """Register `settings --markdown | --env` on the `python -m service` sub-command parser."""
    parser = commands.add_parser("settings", help="every setting, documented (docs/configuration.md, .env.example)")
    formats = parser.add_mutually_exclusive_group(required=True)
    formats.add_argument(
        "--markdown", dest="format", action="store_const", const="markdown", help="the configuration reference"
    )
    formats.add_argument("--env", dest="format", action="store_const", const="env", help="the .env.example file")
    formats.add_argument(
        "--app-json", dest="format", action="store_const", const="app-json", help="app.json, its env from the settings"
    )
    parser.set_defaults(handler=print_settings)


def render(fmt: Format) -> str:
    """The reference in `fmt`, from service/settings.py alone."""
    docs = setting_docs()
    if fmt == "app-json":
        return render_app_json(docs, json.loads(APP_JSON_PATH.read_text()))
    return render_markdown(docs) if fmt == "markdown" else render_env(docs)


def print_settings(args: argparse.Namespace) -> int:
    sys.stdout.write(render(args.format))
    return 0
