#!/bin/sh
# `make demo` needs python3's venv module and Debian's Prometheus and Alertmanager binaries.
# As root, install what is missing with apt-get; otherwise say in one line what to install, exit 1.
set -eu

missing=""
python3 -c 'import ensurepip, venv' 2>/dev/null || missing="$missing python3-venv"
command -v prometheus >/dev/null 2>&1 || missing="$missing prometheus"
command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1 \
  || missing="$missing prometheus-alertmanager"
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "make demo: installing$missing with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086  # one word per package
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
  exit 0
fi
echo "make demo: missing$missing — install them first: sudo apt-get install$missing" >&2
exit 1
