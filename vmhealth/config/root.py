"""The whole file: one section per component, and which of them each program cannot start without."""

from __future__ import annotations

from dataclasses import dataclass

from .agent import AgentConfig
from .clusters import ClusterConfig
from .exporter import ExporterConfig
from .keys import section_of, subsection
from .thresholds import ThresholdsConfig
from .webhook import WebhookConfig


@dataclass(frozen=True)
class Config:
    """A loaded, checked configuration; each component is handed the sections it reads."""

    clusters: list[ClusterConfig] = subsection(ClusterConfig, repeated=True)
    thresholds: ThresholdsConfig = subsection(ThresholdsConfig)
    exporter: ExporterConfig = subsection(ExporterConfig)
    webhook: WebhookConfig = subsection(WebhookConfig)
    agent: AgentConfig = subsection(AgentConfig)


SCHEMA = section_of(Config)

# The components that keep a database of their own (vmhealth.db migrates each).
DATABASE_COMPONENTS = ("exporter", "webhook")

# Which sections and keys each program cannot start without.
COMPONENT_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "exporter": ("clusters", "exporter.api_key"),
    "webhook": ("clusters", "webhook.token", "webhook.admin_token"),
    "agent": ("agent.api_key",),
}
