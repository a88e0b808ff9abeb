"""The edge bundle's settings: the fleet key bundles are signed with (`MICHI_EDGE_BUNDLE_KEY`)."""

from __future__ import annotations

from pydantic import SecretStr, model_validator

from michi.settings import PLACEHOLDER_SECRETS, MichiSettings

DEV_BUNDLE_KEY = "michi-dev-edge-bundle-key-not-for-production"


class EdgeSettings(MichiSettings):
    # HMAC-SHA256 key shared by the exporting side and the fleet's devices (secret; required outside dev).
    edge_bundle_key: SecretStr = SecretStr(DEV_BUNDLE_KEY)

    @model_validator(mode="after")
    def _refuse_placeholder_bundle_key(self) -> EdgeSettings:
        key = self.edge_bundle_key.get_secret_value()
        if self.env != "dev" and (key in PLACEHOLDER_SECRETS or key == DEV_BUNDLE_KEY):
            raise ValueError("MICHI_EDGE_BUNDLE_KEY must be set to a real secret outside MICHI_ENV=dev")
        return self
