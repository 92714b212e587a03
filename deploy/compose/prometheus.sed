# docker-compose.yml starts Prometheus on the repository's prometheus/prometheus.yml run through this
# script: only what differs in the compose stack, the service names instead of loopback (two exporter
# replicas) and the read tokens the stack sets (mounted where the commented lines point).
s|'127\.0\.0\.1:9093'|'alertmanager:9093'|
s|'127\.0\.0\.1:9747'|'exporter:9747', 'exporter-b:9747'|
s|'127\.0\.0\.1:9749'|'webhook:9749'|
s|# authorization: {credentials_file: /etc/prometheus/vmhealth-|authorization: {credentials_file: /etc/prometheus/vmhealth-|
