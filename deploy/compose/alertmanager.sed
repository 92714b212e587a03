# docker-compose.yml starts Alertmanager on the repository's alertmanager/alertmanager.yml run through
# this script: only what differs in the compose stack, the webhook's service name instead of loopback.
s|://127\.0\.0\.1:9749/|://webhook:9749/|
