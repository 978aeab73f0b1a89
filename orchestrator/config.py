"""Settings: command-line flags > LABELJOB_* environment > labeljob.toml > defaults."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from orchestrator.errors import ConfigError

CONFIG_FILE = "labeljob.toml"
ENV_PREFIX = "LABELJOB_"
Backend = Literal["groundtruth", "mturk", "portal"]


class Settings(BaseModel):
    """Where labeljob keeps its files and how it reaches AWS."""

    model_config = ConfigDict(extra="forbid")

    workspace: str = "labeljob-workspace"
    region: str | None = None
    profile: str | None = None
    backend: Backend = "portal"
    format: Literal["table", "json"] = "table"
    quiet: bool = False


def find_config_file(start: Path | None = None) -> Path | None:
    """The nearest labeljob.toml in this folder or a parent, or the one LABELJOB_CONFIG names."""
    named = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if named:
        return Path(named)
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_FILE
        if candidate.is_file():
            return candidate
    return None


def _file_values(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    values = data.get("labeljob", data)
    workspace = values.get("workspace")
    # A relative local workspace is relative to the config file, not to wherever the command runs.
    if isinstance(workspace, str) and "://" not in workspace and not Path(workspace).is_absolute():
        values = {**values, "workspace": str((path.parent / workspace).resolve())}
    return values


def _env_values() -> dict:
    values = {}
    for field in Settings.model_fields:
        raw = os.environ.get(f"{ENV_PREFIX}{field.upper()}")
        if raw is not None and raw != "":
            values[field] = raw
    return values


def debug() -> bool:
    """Whether $LABELJOB_DEBUG asks for tracebacks: set, and not 0, false, no or off."""
    return os.environ.get(f"{ENV_PREFIX}DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")


def load_settings(flags: dict | None = None, config_file: Path | None = None) -> Settings:
    """Merge the four sources; a flag left at None does not override anything."""
    path = config_file or find_config_file()
    merged: dict = {}
    for source, values in (
        (str(path) if path else CONFIG_FILE, _file_values(path)),
        ("environment", _env_values()),
        ("flags", {k: v for k, v in (flags or {}).items() if v is not None}),
    ):
        merged.update(values)
        try:
            Settings.model_validate(merged)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{source}: {key}: {err['msg']}") from None
    return Settings.model_validate(merged)


def render_config(settings: Settings) -> str:
    """labeljob.toml text for these settings."""
    lines = ["# labeljob settings; flags and LABELJOB_* environment variables override these.", "[labeljob]"]
    for key in ("workspace", "region", "profile", "backend"):
        value = getattr(settings, key)
        if value is None:
            lines.append(f'# {key} = ""')
        else:
            lines.append(f'{key} = "{value}"')
    return "\n".join(lines) + "\n"
