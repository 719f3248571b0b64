"""Format layer (pure, no I/O): the settings' own documentation as docs/configuration.md and .env.example.

Each field of `Settings` carries its description and `_doc` extras (group, accepted values, example); this
module reads them off the model, never an instance, so what it renders does not depend on the environment.
What a field accepts is worked out from its type and bounds where they say it (`true`/`false`, the choices of
a Literal, `integer from 20 to 100`), so the reference cannot drift from the validation. A field without a
description or a group is an error here, and so a failing test: `python -m service settings` renders these.
"""

from __future__ import annotations

import json
import re
import textwrap
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from service.settings import SETTING_GROUPS, SettingGroup, Settings

MARKDOWN_PATH: Final = Path("docs") / "configuration.md"
ENV_PATH: Final = Path(".env.example")
ENV_WIDTH: Final = 110  # comment lines of .env.example, "# " included
_LINK: Final = re.compile(r"\[([^\]]+)\]\([^)]+\)")  # [text](target)
_CODE: Final = re.compile(r"`[^`]*`")
_KEEP: Final = "\x00"  # stands for a space inside a code span while the comment is wrapped

GENERATED = "Generated from service/settings.py by `make docs`: edit the descriptions there, not here."

MARKDOWN_INTRO = """\
Every setting is an environment variable. The name is the setting's field name in `service/settings.py`,
upper-cased. callscribe also reads an optional `.env` file in the working directory; variables in the
environment take precedence over the file. `.env.example` lists every setting with its default (both it and
this page are rendered from `service/settings.py` by `make docs`, and a test fails when they differ).

- The secrets (marked *secret* below) never appear in logs, error messages or reprs. An empty value counts
  as unset.
- Booleans accept `true`/`false`, `1`/`0`, `yes`/`no` and `on`/`off`.
- A bad value stops start-up with exit code 2 and a message that names the variable:

```
callscribe cannot start: bad configuration
  FORWARD_TO: Value error, must be an E.164 number such as +14155550100, or a sip: or client: address
  STREAM_TRACK: Input should be 'inbound_track', 'outbound_track' or 'both_tracks'
```
"""

ENV_INTRO = """\
callscribe settings. Copy to .env (read from the working directory) or set them as environment variables;
the environment wins over .env. Each name is a field of service/settings.py, upper-cased.
A commented line shows the default, or an example where the comment says so. A bad value stops start-up
with a message naming the variable. Booleans: true/false (also 1/0, yes/no, on/off).
Secrets are never logged; an empty value counts as unset.
"""


APP_JSON_PATH: Final = Path("app.json")
# Read by `python -m service serve`, not a setting; the Python buildpack would pick a number from the dyno size.
APP_JSON_EXTRA_ENV: Final = {
    "WEB_CONCURRENCY": {
        "description": "Hypercorn worker processes per dyno (read by python -m service serve). MAX_CALLS applies to "
        "each worker. Without it the Python buildpack picks a number from the dyno size.",
        "value": "1",
        "required": False,
    }
}


class UndocumentedSetting(ValueError):
    """A settings field lacks its description or its group, or names a group that does not exist."""


@dataclass(frozen=True, slots=True)
class SettingDoc:
    """One setting as the reference shows it."""

    variable: str  # the environment variable
    group: str
    description: str
    default: str  # in words, Markdown: "`nova-3`", "(unset)"
    accepts: str  # Markdown: "integer from 20 to 100", "`text` or `json`"
    example: str  # a value to show when there is no default, else ""
    env_value: str  # what the .env.example line shows after "="
    secret: bool
    fill_in: bool  # .env.example leaves an empty, uncommented line to fill in
    heroku: dict[str, Any] | None = None  # listed in app.json, with what its entry adds (`required`, `value`, ...)


def setting_docs(
    model: type[BaseModel] = Settings, groups: Sequence[SettingGroup] = SETTING_GROUPS
) -> list[SettingDoc]:
    """Every field of `model`, in declaration order; raises UndocumentedSetting naming each field that is not."""
    known = {group.key for group in groups}
    problems = [problem for name, info in model.model_fields.items() for problem in _problems(name, info, known)]
    if problems:
        raise UndocumentedSetting("; ".join(problems))
    return [_setting_doc(name, info) for name, info in model.model_fields.items()]


def render_markdown(docs: Sequence[SettingDoc], groups: Sequence[SettingGroup] = SETTING_GROUPS) -> str:
    """docs/configuration.md: the introduction, then one table per group."""
    parts = [f"# Configuration\n\n<!-- {GENERATED} -->\n\n{MARKDOWN_INTRO}"]
    for group, members in _grouped(docs, groups):
        parts.append(_markdown_group(group, members))
    return "\n".join(parts)


def render_env(docs: Sequence[SettingDoc], groups: Sequence[SettingGroup] = SETTING_GROUPS) -> str:
    """.env.example: a commented block per setting, under a banner per group."""
    parts = [_comment(f"{GENERATED}\n{ENV_INTRO}")]
    for group, members in _grouped(docs, groups):
        parts.append(_env_group(group, members))
    return "\n\n".join(parts) + "\n"


def render_app_json(docs: Sequence[SettingDoc], manifest: dict[str, Any]) -> str:
    """app.json (Heroku's app manifest): `manifest` with its `env` made from the settings Heroku users set.

    Everything else in the manifest (name, formation, add-ons, buildpacks) is kept as it is. The required
    settings come first, then the others in the reference's order; each entry's description is the setting's
    own, as plain text, with its default.
    """
    chosen = [doc for doc in docs if doc.heroku is not None]
    chosen.sort(key=lambda doc: not (doc.heroku or {}).get("required", False))
    env = {doc.variable: _app_json_entry(doc) for doc in chosen} | APP_JSON_EXTRA_ENV
    return json.dumps({**manifest, "env": env}, indent=2, ensure_ascii=False) + "\n"


# --- Reading the model -------------------------------------------------------------------------------------


def _problems(name: str, info: FieldInfo, known: set[str]) -> list[str]:
    extra = _extra(info)
    problems = [] if info.description else [f"{name.upper()} has no description"]
    if extra.get("group") not in known:
        problems.append(f"{name.upper()} has no group of {sorted(known)}")
    return problems


def _extra(info: FieldInfo) -> dict[str, Any]:
    return info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}


def _setting_doc(name: str, info: FieldInfo) -> SettingDoc:
    extra = _extra(info)
    value = _default_value(info.default)
    example = str(extra.get("example", ""))
    return SettingDoc(
        variable=name.upper(),
        group=str(extra["group"]),
        description=str(info.description),
        default=str(extra.get("default") or (f"`{value}`" if value else _no_default(info.default))),
        accepts=str(extra.get("accepts") or accepted_values(info)),
        example=example,
        env_value=example or value,
        secret=_is_secret(info.annotation),
        fill_in=bool(extra.get("fill_in")),
        heroku=dict(extra["heroku"]) if isinstance(extra.get("heroku"), dict) else None,
    )


def _default_value(default: object) -> str:
    """The default as an environment variable would spell it; "" when there is none."""
    if default is None:
        return ""
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, tuple):
        return ",".join(str(item) for item in default)
    return str(default)


def _no_default(default: object) -> str:
    return "(unset)" if default is None else "(empty)"


def _is_secret(annotation: object) -> bool:
    return SecretStr in _members(annotation)


def _members(annotation: object) -> tuple[object, ...]:
    """The types of a union without None (`SecretStr | None` -> SecretStr), or the type itself."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return tuple(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return (annotation,)


def accepted_values(info: FieldInfo) -> str:
    """What the field's type and bounds accept, in words (Markdown); "" when they say nothing useful.

    A union of choices (`BatchMs | Literal["auto"]`) is each member's words, "or" between them; a member's own
    bounds are in its `Annotated` metadata."""
    members = _members(info.annotation)
    if len(members) > 1:
        return _one_of([_accepted(*_annotated(member, info)) for member in members])
    (kind, *_) = members or (None,)
    return _accepted(kind, info)


def _annotated(member: object, info: FieldInfo) -> tuple[object, FieldInfo]:
    """`Annotated[int, Field(ge=…)]` as its type and the FieldInfo holding its bounds; any other type as itself."""
    if typing.get_origin(member) is typing.Annotated:
        kind, *extras = typing.get_args(member)
        inner = next((extra for extra in extras if isinstance(extra, FieldInfo)), info)
        return kind, inner
    return member, info


def _accepted(kind: object, info: FieldInfo) -> str:
    if kind is bool:
        return "`true` or `false`"
    if typing.get_origin(kind) is typing.Literal:
        return _one_of([f"`{choice}`" for choice in typing.get_args(kind)])
    if kind is SecretStr:
        return "text"
    bounds = _bounds(info)
    if kind is int:
        return f"integer {bounds}".rstrip()
    if kind is float:
        return f"number {bounds}".rstrip()
    return _length(info) or "text"


def _one_of(choices: Sequence[str]) -> str:
    return choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"


def _bounds(info: FieldInfo) -> str:
    """In words: `from 20 to 100` for both ends inclusive, else each bound: `above 0, at most 8`, `at least 10`."""
    limits = {
        key: value
        for item in info.metadata
        for key in ("gt", "ge", "lt", "le")
        if (value := getattr(item, key, None)) is not None
    }
    if set(limits) == {"ge", "le"}:
        return f"from {limits['ge']} to {limits['le']}"
    words = {"gt": "above", "ge": "at least", "lt": "below", "le": "at most"}
    return ", ".join(f"{words[key]} {value}" for key, value in limits.items())


def _length(info: FieldInfo) -> str:
    shortest = next((item.min_length for item in info.metadata if getattr(item, "min_length", None)), None)
    longest = next((item.max_length for item in info.metadata if getattr(item, "max_length", None)), None)
    if shortest is not None and longest is not None:
        return f"text of {shortest} to {longest} characters"
    return ""


def _grouped(docs: Iterable[SettingDoc], groups: Sequence[SettingGroup]) -> list[tuple[SettingGroup, list[SettingDoc]]]:
    docs = list(docs)
    return [(group, [doc for doc in docs if doc.group == group.key]) for group in groups]


# --- Markdown ----------------------------------------------------------------------------------------------


def _markdown_group(group: SettingGroup, members: Sequence[SettingDoc]) -> str:
    lines = [f"## {group.title}", ""]
    if group.note:
        lines += [group.note, ""]
    lines += ["| Variable | Default | Accepts | What it does |", "|---|---|---|---|"]
    lines += [_markdown_row(doc) for doc in members]
    return "\n".join(lines) + "\n"


def _markdown_row(doc: SettingDoc) -> str:
    variable = f"`{doc.variable}` (*secret*)" if doc.secret else f"`{doc.variable}`"
    accepts = f"{doc.accepts}, such as `{doc.example}`" if doc.example else doc.accepts
    cells = (variable, doc.default, accepts, doc.description)
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


# --- app.json ----------------------------------------------------------------------------------------------


def _app_json_entry(doc: SettingDoc) -> dict[str, Any]:
    """One config var of app.json: the setting's description as plain text (Heroku shows no Markdown), then
    what it accepts, whether it is a secret, and its default, as .env.example says them."""
    heroku = doc.heroku or {}
    text = [doc.description]
    if doc.accepts and not doc.accepts.startswith("`true`") and doc.accepts != "text":
        text.append(f"Accepts: {doc.accepts}" + (f", such as {doc.example}." if doc.example else "."))
    if doc.secret:
        text.append("Secret: never logged.")
    if "value" not in heroku and "generator" not in heroku and not doc.default.startswith("("):
        text.append(f"Default: {doc.default}" + ("" if doc.default.rstrip("`").endswith(".") else "."))
    entry: dict[str, Any] = {"description": _plain(" ".join(text)).replace("`", "")}
    entry |= {key: heroku[key] for key in ("value", "generator") if key in heroku}
    entry["required"] = bool(heroku.get("required", False))
    return entry


# --- .env.example ------------------------------------------------------------------------------------------


def _env_group(group: SettingGroup, members: Sequence[SettingDoc]) -> str:
    banner = "# " + "=" * (ENV_WIDTH - 2)
    head = [banner, f"# {group.title}", banner]
    if group.note:
        head.append(_comment(_plain(group.note)))
    return "\n\n".join(["\n".join(head), *(_env_entry(doc) for doc in members)])


def _env_entry(doc: SettingDoc) -> str:
    text = [doc.description]
    if doc.accepts and not doc.accepts.startswith("`true`") and doc.accepts != "text":
        text.append(f"Accepts: {doc.accepts}.")
    if doc.secret:
        text.append("Secret: never logged.")
    if doc.example:
        text.append(f"Default: {doc.default.strip('()')}. The line below is an example.")
    line = f"{doc.variable}={doc.env_value}" if doc.fill_in else f"# {doc.variable}={doc.env_value}"
    return f"{_comment(_plain(' '.join(text)))}\n{line}"


def _plain(markdown: str) -> str:
    """Markdown's emphasis and links off (code marks stay: they say where a name or a value starts and ends)."""
    return _LINK.sub(r"\1", markdown.replace("**", ""))


def _comment(text: str) -> str:
    """`text` as comment lines of at most ENV_WIDTH, never breaking inside a `code span`."""
    lines: list[str] = []
    for paragraph in text.splitlines():
        kept = _CODE.sub(lambda code: code.group().replace(" ", _KEEP), paragraph)
        wrapped = textwrap.wrap(kept, ENV_WIDTH - 2, break_long_words=False, break_on_hyphens=False)
        lines += [f"# {line.replace(_KEEP, ' ')}" for line in wrapped] or ["#"]
    return "\n".join(lines)
