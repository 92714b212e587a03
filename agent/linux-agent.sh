#!/bin/sh
# vmhealth shell agent: the heartbeat of `vmhealth agent` for Linux guests without Python.
# Needs only a POSIX sh, awk, df, curl and /proc. Sends the same JSON report to the exporter's
# POST /api/health/report every VMHEALTH_AGENT_INTERVAL seconds; logs changes of state, not every failure.
#
#   linux-agent.sh                   run until killed
#   linux-agent.sh --once            print one report and exit (nothing is sent)
#   linux-agent.sh --defaults FILE   read settings from FILE instead of /etc/default/vmhealth-agent
#
# Settings (environment, or the defaults file, which is read when present):
#   VMHEALTH_AGENT_EXPORTER_URL   default http://127.0.0.1:9747
#   VMHEALTH_AGENT_EXPORTER_URLS  instead of _URL: every exporter of a pair, comma- or space-separated;
#                                 each gets every report from its own loop, so one that is down
#                                 delays none of the others
#   VMHEALTH_AGENT_API_KEY        or VMHEALTH_AGENT_API_KEY_FILE (a file holding the key): this guest's
#                                 own key, `vmhealth agent-key --cluster C --vmid N` on the exporter's host
#   VMHEALTH_AGENT_VMID           optional; without it the SMBIOS UUID identifies the guest
#   VMHEALTH_AGENT_UUID           optional; the SMBIOS UUID when /sys/class/dmi/id/product_uuid is unreadable
#   VMHEALTH_AGENT_CLUSTER        optional
#   VMHEALTH_AGENT_INTERVAL       seconds, default 30
#   VMHEALTH_AGENT_TIMEOUT        seconds, default 10
#   VMHEALTH_AGENT_CA_BUNDLE      PEM file of the exporter's CA (https)
#   VMHEALTH_AGENT_CLIENT_CERT_FILE, VMHEALTH_AGENT_CLIENT_KEY_FILE
#                                 this guest's client certificate and key, for an exporter with mutual TLS
set -u

log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) vmhealth-agent: $*" >&2; }

DEFAULTS=/etc/default/vmhealth-agent
ONCE=
while [ $# -gt 0 ]; do
  case "$1" in
    --once) ONCE=1 ;;
    --defaults) [ $# -ge 2 ] || { log "--defaults needs a file"; exit 2; }; DEFAULTS=$2; shift ;;
    *) log "unknown argument $1 (use --once, --defaults FILE)"; exit 2 ;;
  esac
  shift
done
# shellcheck disable=SC1090
[ -r "$DEFAULTS" ] && . "$DEFAULTS"

if [ -n "${VMHEALTH_AGENT_EXPORTER_URL:-}" ] && [ -n "${VMHEALTH_AGENT_EXPORTER_URLS:-}" ]; then
  log "set both VMHEALTH_AGENT_EXPORTER_URL and VMHEALTH_AGENT_EXPORTER_URLS; keep one"; exit 2
fi
URLS=
for url in $(printf '%s' "${VMHEALTH_AGENT_EXPORTER_URLS:-${VMHEALTH_AGENT_EXPORTER_URL:-http://127.0.0.1:9747}}" | tr ',' ' '); do
  case "$url" in http://?*|https://?*) ;; *) log "exporter URL '$url' is not http:// or https://"; exit 2 ;; esac
  url=${url%/}/api/health/report
  case " $URLS " in *" $url "*) log "exporter URL '$url' is listed twice"; exit 2 ;; esac
  URLS="${URLS:+$URLS }$url"
done
INTERVAL=${VMHEALTH_AGENT_INTERVAL:-30}
INTERVAL=${INTERVAL%s}
TIMEOUT=${VMHEALTH_AGENT_TIMEOUT:-10}
TIMEOUT=${TIMEOUT%s}
VERSION="sh-0.1.0"

case "$INTERVAL$TIMEOUT" in *[!0-9]*|"") log "VMHEALTH_AGENT_INTERVAL and _TIMEOUT must be whole seconds"; exit 2 ;; esac
[ "$TIMEOUT" -ge "$INTERVAL" ] && TIMEOUT=$((INTERVAL * 4 / 5)) && [ "$TIMEOUT" -lt 1 ] && TIMEOUT=1

API_KEY=${VMHEALTH_AGENT_API_KEY:-}
if [ -z "$API_KEY" ] && [ -n "${VMHEALTH_AGENT_API_KEY_FILE:-}" ]; then
  API_KEY=$(cat "$VMHEALTH_AGENT_API_KEY_FILE") || { log "cannot read VMHEALTH_AGENT_API_KEY_FILE"; exit 2; }
fi

json_string() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g' | tr -d '\n\r\t')"; }

UUID=${VMHEALTH_AGENT_UUID:-}
[ -z "$UUID" ] && [ -r /sys/class/dmi/id/product_uuid ] && UUID=$(cat /sys/class/dmi/id/product_uuid 2>/dev/null)
UUID=$(printf '%s' "$UUID" | tr 'A-F' 'a-f' | tr -d ' \n')

# CPU times "busy total" from the first line of /proc/stat; guest time is already inside user.
cpu_times() { awk '/^cpu /{t=0; for(i=2;i<=9&&i<=NF;i++)t+=$i; print t-$5-$6, t; exit}' /proc/stat; }
PREV_CPU=$(cpu_times)

report() {
  now_cpu=$(cpu_times)
  cpu=$(echo "$PREV_CPU $now_cpu" | awk '{db=$3-$1; dt=$4-$2; if(dt>0) printf "%.1f", 100*db/dt; else print 0}')
  PREV_CPU=$now_cpu
  # %.0f, not %d: some awks print %d through a 32-bit int.
  mem=$(awk '/^MemTotal:/{t=$2} /^MemAvailable:/{a=$2} END{printf "%.0f %.0f", (t-a)*1024, t*1024}' /proc/meminfo)
  disk=$(df -Pk / | awk 'NR==2{printf "%.0f %.0f", $3*1024, $2*1024}')
  net=$(awk 'NR>2{sub(/^ +/,""); split($0,f,/[: ]+/); if(f[1]!="lo"){rx+=f[2]; tx+=f[10]}}
             END{printf "%.0f %.0f", rx, tx}' /proc/net/dev)
  host=$(cat /proc/sys/kernel/hostname 2>/dev/null || hostname)
  set -- $mem $disk $net
  printf '{"hostname":%s,"status":"running","timestamp":%s,"agentVersion":"%s","cpuUsage":%s' \
    "$(json_string "$host")" "$(date +%s)" "$VERSION" "$cpu"
  printf ',"ramUsage":%d,"ramTotal":%d,"memUsedBytes":%s,"memTotalBytes":%s' \
    $(($1 / 1048576)) $(($2 / 1048576)) "$1" "$2"
  printf ',"diskUsage":%d,"diskTotal":%d,"diskUsedBytes":%s,"diskTotalBytes":%s' \
    $(($3 / 1048576)) $(($4 / 1048576)) "$3" "$4"
  printf ',"netRxBytes":%s,"netTxBytes":%s' "$5" "$6"
  awk '{printf ",\"uptime\":%d", $1}' /proc/uptime
  awk '{printf ",\"load1\":%s,\"load5\":%s,\"load15\":%s", $1, $2, $3}' /proc/loadavg
  [ -n "${VMHEALTH_AGENT_VMID:-}" ] && printf ',"vmid":%s' "$(json_string "$VMHEALTH_AGENT_VMID")"
  [ -n "$UUID" ] && printf ',"uuid":%s' "$(json_string "$UUID")"
  [ -n "${VMHEALTH_AGENT_CLUSTER:-}" ] && printf ',"cluster":%s' "$(json_string "$VMHEALTH_AGENT_CLUSTER")"
  printf '}\n'
}

if [ -n "$ONCE" ]; then
  sleep 1
  report
  exit 0
fi
[ -n "$API_KEY" ] || { log "VMHEALTH_AGENT_API_KEY (or _FILE) is not set"; exit 2; }
if [ -z "${VMHEALTH_AGENT_VMID:-}" ] && [ -z "$UUID" ]; then
  log "no VMHEALTH_AGENT_VMID and no readable SMBIOS UUID: the exporter cannot tell which guest this is"
fi

TMP=$(mktemp -d) || exit 1
trap 'rm -rf "$TMP"' EXIT
trap 'exit 0' TERM INT
# Start-up jitter, so that guests booted together do not report in the same second.
sleep $(( $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % INTERVAL ))

# push_to URL N: report to one exporter until killed, logging its changes of state.
push_to() {
  URL=$1 BODY=$TMP/body.$2 REPLY=$TMP/reply.$2
  trap 'kill $! 2>/dev/null; exit 0' TERM INT  # and the sleep with it
  STATE=starting
  FAILS=0
  while :; do
    report > "$BODY"
    # The key goes to curl on stdin, never on its command line (where `ps` would show it).
    code=$(printf 'header = "X-API-Key: %s"\n' "$API_KEY" | curl -sS -K - -o "$REPLY" -w '%{http_code}' \
      --max-time "$TIMEOUT" ${VMHEALTH_AGENT_CA_BUNDLE:+--cacert "$VMHEALTH_AGENT_CA_BUNDLE"} \
      ${VMHEALTH_AGENT_CLIENT_CERT_FILE:+--cert "$VMHEALTH_AGENT_CLIENT_CERT_FILE"} \
      ${VMHEALTH_AGENT_CLIENT_KEY_FILE:+--key "$VMHEALTH_AGENT_CLIENT_KEY_FILE"} \
      -H 'Content-Type: application/json' --data-binary @"$BODY" "$URL" 2>"$REPLY.err")
    case "$code" in
      2??) new=ok ;;
      000|408|429|5??) new=unreachable ;;
      *) new="refused:$code" ;;
    esac
    if [ "$new" != "$STATE" ]; then
      case "$new" in
        ok) if [ "$STATE" = starting ]; then log "reporting to $URL"
            else log "exporter $URL accepts reports again (after $FAILS failed attempt(s))"; fi ;;
        unreachable) log "exporter $URL unreachable (HTTP $code): $(cat "$REPLY.err" "$REPLY" 2>/dev/null | head -c 200 | tr '\n' ' ')" ;;
        *) log "exporter $URL refused the report (HTTP $code): $(head -c 300 "$REPLY")" ;;
      esac
    fi
    rm -f "$REPLY.err"
    STATE=$new
    if [ "$new" = ok ]; then FAILS=0; delay=$INTERVAL; else FAILS=$((FAILS + 1)); delay=$INTERVAL; fi
    if [ "$new" = unreachable ]; then
      # Exponential backoff with jitter, capped at the interval.
      cap=$(( 1 << (FAILS < 8 ? FAILS - 1 : 7) )); [ "$cap" -gt "$INTERVAL" ] && cap=$INTERVAL
      delay=$(( cap / 2 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % (cap / 2 + 1) )); [ "$delay" -lt 1 ] && delay=1
    fi
    sleep "$delay" &
    wait $!
  done
}

set -- $URLS
if [ $# -eq 1 ]; then
  push_to "$1" 1
fi
# Several exporters: one loop each, in the background; a stop ends them all.
PIDS= n=0
for url in "$@"; do
  n=$((n + 1))
  push_to "$url" "$n" &
  PIDS="$PIDS $!"
done
trap 'kill $PIDS 2>/dev/null; exit 0' TERM INT
wait
