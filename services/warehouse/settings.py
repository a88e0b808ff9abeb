"""Warehouse settings (environment variables `MICHI_WAREHOUSE_*` plus the shared `MICHI_*`)."""

from __future__ import annotations

from pydantic import Field

from michi.settings import MichiSettings


class WarehouseSettings(MichiSettings):
    # /healthz, /readyz and /metrics on this address and port; 0.0.0.0 in a container.
    warehouse_host: str = "127.0.0.1"
    warehouse_port: int = Field(default=8086, ge=0, le=65535)
    # A partition's buffered rows are written once this old or this many, whichever comes first.
    warehouse_flush_s: float = Field(default=10.0, gt=0)
    warehouse_flush_rows: int = Field(default=20000, ge=1)
