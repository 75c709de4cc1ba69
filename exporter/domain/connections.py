"""A connection: one Omnisend account (its API key lives in Key Vault, named by ``secret_name``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .common import iso


@dataclass
class Connection:
    id: str
    display_name: str
    allow_contributors: bool
    data_privacy_consent: bool
    consented_by: str
    consented_at: datetime
    created_at: datetime
    max_profiles_per_export: int | None = None

    @property
    def secret_name(self) -> str:
        # Key Vault secret names allow only letters, digits and dashes.
        return f"omnisend-connection-{self.id}"

    def to_api(self) -> dict:
        return {
            "id": self.id,
            "displayName": self.display_name,
            "allowContributors": self.allow_contributors,
            "dataPrivacyConsent": self.data_privacy_consent,
            "consentedBy": self.consented_by,
            "consentedAt": iso(self.consented_at),
            "createdAt": iso(self.created_at),
            "maxProfilesPerExport": self.max_profiles_per_export,
        }
