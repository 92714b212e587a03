"""The one configuration file shared by every component."""

from .loader import (  # noqa: F401
    COMPONENT_REQUIREMENTS, DATABASE_COMPONENTS, SCHEMA, ConfigError, Key, Section, _check_listen, is_loopback, load,
    read_file, redacted, secrets_of, split_listen,
)
