"""The one configuration file shared by every component: `load()` it, hand each component its section.

    loader.py        read the file, apply the environment, build and check the sections
    root.py          `Config`, the whole file; clusters.py, thresholds.py, exporter.py, webhook.py
                     (with its policy) and agent.py, one section class each
    keys.py          the schema's vocabulary: a key's kind, default and limits
    values.py        the kinds of value a key can hold
    env.py           VMHEALTH_<SECTION>_<KEY> overrides
    secret_files.py  secrets read from `<key>_file`
    checks.py        checks across keys (logins, secrets that must differ, TLS files, required keys)
    redaction.py     the configuration with its secrets hidden
"""

from .agent import AgentConfig
from .clusters import ClusterConfig
from .exporter import ExporterConfig
from .keys import Key, Section
from .loader import DEFAULT_CONFIG_PATH, load, load_from_environment, read_file
from .problems import ConfigError
from .redaction import redacted, secrets_of
from .root import COMPONENT_REQUIREMENTS, DATABASE_COMPONENTS, SCHEMA, Config
from .thresholds import ThresholdsConfig
from .values import check_listen, is_loopback, split_listen
from .webhook import PolicyConfig, WebhookConfig

__all__ = [
    "COMPONENT_REQUIREMENTS", "DATABASE_COMPONENTS", "DEFAULT_CONFIG_PATH", "SCHEMA", "AgentConfig", "ClusterConfig",
    "Config", "ConfigError", "ExporterConfig", "Key", "PolicyConfig", "Section", "ThresholdsConfig", "WebhookConfig",
    "check_listen", "is_loopback", "load", "load_from_environment", "read_file", "redacted", "secrets_of",
    "split_listen",
]
