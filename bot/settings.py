"""Configuration from the environment (prefix SHEPHERD_) or a .env file. Every field is in the README."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.orgs import DEFAULT_ORG, check_org_id


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHEPHERD_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path(".shepherd"), description="where the embedded database and workspaces live")
    database_url: SecretStr | None = Field(
        None, description="sqlite:///path or postgresql://user:pass@host/db; default SQLite in the data dir"
    )
    host: str = Field("127.0.0.1", description="address the web server binds")
    port: int = Field(8080, ge=0, le=65535, description="port the web server binds")
    org: str = Field(DEFAULT_ORG, description="org the console acts in, and the org of new tokens by default")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    max_body_bytes: int = Field(
        256 * 1024, ge=1024, le=64 * 1024 * 1024, description="largest REST request body accepted"
    )

    @field_validator("org")
    @classmethod
    def _org(cls, value: str) -> str:
        return check_org_id(value)

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        value = value.upper()
        if value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("one of DEBUG, INFO, WARNING, ERROR")
        return value

    @property
    def db_url(self) -> str:
        if self.database_url is not None and self.database_url.get_secret_value():
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'shepherd.db').resolve()}"

    @property
    def embedded(self) -> bool:
        """True on the no-setup default: SQLite, which `serve` migrates by itself."""
        return self.db_url.startswith("sqlite")

    def masked(self) -> dict[str, Any]:
        """Settings for display: secrets and passwords inside URLs hidden."""
        shown: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "database_url":
                value = mask_url(self.db_url)
            elif isinstance(value, SecretStr):
                value = "********" if value.get_secret_value() else ""
            shown[f"SHEPHERD_{name.upper()}"] = str(value)
        return shown


def mask_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:********@{host}" if ":" in creds else f"{scheme}://{user}@{host}"
