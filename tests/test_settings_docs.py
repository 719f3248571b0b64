"""The settings' documentation: one home (service/settings.py), rendered into docs/configuration.md and .env.example."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field, SecretStr

from service.cli import main
from service.cli.settings import render
from service.settings import SETTING_GROUPS, Settings
from service.settings_docs import (
    ENV_PATH,
    MARKDOWN_PATH,
    UndocumentedSetting,
    accepted_values,
    render_app_json,
    render_env,
    render_markdown,
    setting_docs,
)
from tests.helpers.paths import ROOT


@pytest.mark.parametrize(("committed", "fmt"), [(MARKDOWN_PATH, "markdown"), (ENV_PATH, "env")])
def test_the_committed_reference_is_what_the_settings_render(committed, fmt) -> None:
    """A setting added, removed or re-described without `make docs` fails here."""
    assert (ROOT / committed).read_text() == render(fmt), f"{committed} is stale: run `make docs`"


def test_every_setting_is_documented_and_rendered_once() -> None:
    """Each field has a description and a known group, and appears once in each rendering."""
    docs = setting_docs()
    assert [doc.variable for doc in docs] == [name.upper() for name in Settings.model_fields]
    markdown, env = render_markdown(docs), render_env(docs)
    for doc in docs:
        assert markdown.count(f"| `{doc.variable}`") == 1
        assert sum(line.lstrip("# ").startswith(f"{doc.variable}=") for line in env.splitlines()) == 1
    assert all(f"## {group.title}" in markdown for group in SETTING_GROUPS)


def test_a_setting_without_docs_is_refused() -> None:
    """The renderer names the undocumented field, so `make docs` and the tests fail until it has docs."""

    class WithANewSetting(Settings):
        brand_new_s: float = 1.0
        misfiled: int = Field(default=1, description="Somewhere.", json_schema_extra={"group": "nowhere"})

    with pytest.raises(UndocumentedSetting) as refused:
        setting_docs(WithANewSetting)
    assert "BRAND_NEW_S has no description" in str(refused.value)
    assert "MISFILED has no group" in str(refused.value)


def test_env_example_as_a_dotenv_file_changes_nothing() -> None:
    """Copied to .env unedited, .env.example gives the defaults: its uncommented lines are empty secrets."""
    assert Settings(_env_file=ROOT / ENV_PATH) == Settings(_env_file=None)  # type: ignore[call-arg]


def test_every_example_value_is_accepted() -> None:
    """The example values .env.example shows pass validation (the webhook URL needs its secret)."""
    examples: dict[str, Any] = {doc.variable.lower(): doc.example for doc in setting_docs() if doc.example}
    assert {"public_url", "forward_to", "retention_days", "transcript_webhook_url"} <= set(examples)
    settings = Settings(_env_file=None, webhook_secret=SecretStr("s"), **examples)  # type: ignore[call-arg]
    assert settings.forward_to == examples["forward_to"]


def test_secrets_and_fill_in_lines() -> None:
    """Every SecretStr is marked secret; the ones to fill in are uncommented, empty lines."""
    docs = {doc.variable: doc for doc in setting_docs()}
    secrets = {name.upper() for name, info in Settings.model_fields.items() if SecretStr in _types(info.annotation)}
    assert {name for name, doc in docs.items() if doc.secret} == secrets
    env = render_env(list(docs.values()))
    for name in ("DEEPGRAM_API_KEY", "TWILIO_AUTH_TOKEN", "API_TOKEN", "WEBHOOK_SECRET"):
        assert f"\n{name}=\n" in env
    assert "\n# METRICS_TOKEN=\n" in env
    assert "| `DEEPGRAM_API_KEY` (*secret*) |" in render_markdown(list(docs.values()))


@pytest.mark.parametrize(
    ("field", "accepts"),
    [
        ("deepgram_interim_results", "`true` or `false`"),
        ("stream_track", "`inbound_track`, `outbound_track` or `both_tracks`"),
        ("log_format", "`text` or `json`"),
        ("audio_batch_ms", "integer from 20 to 400 or `auto`"),
        ("deepgram_keepalive_s", "number above 0, at most 8"),
        ("db_queue_max", "integer at least 10"),
        ("retention_days", "integer at least 1"),
        ("speaker_inbound", "text of 1 to 64 characters"),
        ("deepgram_model", "text"),
        ("api_token", "text"),
    ],
)
def test_accepted_values_come_from_the_validation(field: str, accepts: str) -> None:
    assert accepted_values(Settings.model_fields[field]) == accepts


def test_app_json_names_only_settings() -> None:
    """app.json's config vars are settings (or WEB_CONCURRENCY, which `serve` reads), spelled as the reference does."""
    declared = set(json.loads((ROOT / "app.json").read_text())["env"])
    documented = {doc.variable for doc in setting_docs()}
    assert declared - documented == {"WEB_CONCURRENCY"}


def test_the_committed_app_json_is_what_the_settings_render() -> None:
    """app.json's env is rendered from the settings (`make docs`): a setting re-described, or an entry edited by
    hand, fails here; the manifest's other parts are its own."""
    committed = (ROOT / "app.json").read_text()
    assert render_app_json(setting_docs(), json.loads(committed)) == committed, "app.json is stale: run `make docs`"


def test_app_json_is_what_the_deploy_button_needs() -> None:
    """The two secrets a transcript needs are required and nothing else is; generated values are secrets; Postgres
    is the add-on, one web dyno the formation, and the migrations stay in the Procfile's release phase."""
    manifest = json.loads((ROOT / "app.json").read_text())
    env = manifest["env"]
    assert [name for name, entry in env.items() if entry["required"]] == ["DEEPGRAM_API_KEY", "TWILIO_AUTH_TOKEN"]
    secrets = {doc.variable for doc in setting_docs() if doc.secret}
    assert {name for name, entry in env.items() if "generator" in entry} <= secrets
    assert {"PUBLIC_URL", "TWILIO_ACCOUNT_SID", "API_TOKEN", "FORWARD_TO", "LOG_FORMAT"} <= set(env)
    assert "DATABASE_URL" not in env, "the heroku-postgresql add-on sets it"
    assert all(entry["description"] and "`" not in entry["description"] for entry in env.values())
    assert (env["LOG_FORMAT"]["value"], env["WEB_CONCURRENCY"]["value"]) == ("json", "1")
    assert manifest["addons"] == ["heroku-postgresql"]
    assert manifest["formation"] == {"web": {"quantity": 1, "size": "basic"}}
    assert "scripts" not in manifest
    assert "release: python -m service db upgrade" in (ROOT / "Procfile").read_text().splitlines()


def test_the_app_json_command_keeps_the_manifest_and_renders_its_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m service settings --app-json` reads app.json where it runs, and replaces only its env."""
    (tmp_path / "app.json").write_text(json.dumps({"name": "mine", "env": {"STALE": {"required": True}}}))
    assert main(["settings", "--app-json"]) == 0
    rendered = json.loads(capsys.readouterr().out)
    assert rendered["name"] == "mine"
    assert "STALE" not in rendered["env"]
    assert rendered["env"]["DEEPGRAM_API_KEY"]["required"] is True
    assert rendered["env"]["GREETING"]["description"].endswith("Default: This call is being transcribed.")


def test_the_command_prints_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m service settings --markdown | --env`, without reading any setting from the environment."""
    assert main(["settings", "--markdown"]) == 0
    assert capsys.readouterr().out == render("markdown")
    assert main(["settings", "--env"]) == 0
    assert capsys.readouterr().out == render("env")


def test_the_command_needs_a_format() -> None:
    with pytest.raises(SystemExit) as usage:
        main(["settings"])
    assert usage.value.code == 2


def _types(annotation: object) -> tuple[object, ...]:
    return getattr(annotation, "__args__", (annotation,))
