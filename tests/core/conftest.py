"""The core (vmhealth/): configuration, the servers' gunicorn worker and limits, TLS, authentication and
reads, the OpenAPI contract, files and secrets, the stack's generated configuration."""
