"""What an adapter needs from the settings for one provider, read once at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from config.settings import Settings


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """Identifier fields, the CallTrackerURL template, the time zone and numbering plan of one provider."""

    provider: str
    id_fields: Mapping[str, str] = field(default_factory=dict)
    tracker_template: str | None = None
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    phone_region: str | None = None  # numbering plan of numbers the provider writes without country code

    def tracker_url(self, call_id: str) -> str | None:
        return self.tracker_template.replace("{call_id}", call_id) if self.tracker_template else None

    @classmethod
    def from_settings(cls, settings: Settings, provider: str, zone: str = "UTC") -> ProviderConfig:
        return cls(
            provider,
            settings.identifier_fields.get(provider, {}),
            settings.call_tracker_urls.get(provider),
            ZoneInfo(zone),
            settings.phone_region,
        )
