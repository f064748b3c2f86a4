#!/usr/bin/env bash
# Prints start-up time and idle RSS of one installed form of the CLI, for the packaging
# report in .ci/run (a measurement, never an assertion):
#   packaging/measure.sh LABEL COMMAND...      e.g. packaging/measure.sh deb /usr/bin/xoauth2-bridge
# MEASURE_ROOT=DIR: COMMAND runs chrooted in DIR (its files go to DIR/tmp, named without DIR).
set -euo pipefail
label=$1; shift
root=${MEASURE_ROOT:-}
host_dir=$(mktemp -d -p "$root/tmp")
dir=${host_dir#"$root"}
chmod 1777 "$host_dir"   # the command may run as the service user
trap 'rm -rf "$host_dir"' EXIT

best() {  # best wall time in ms of 5 runs of "$@"
  local best=999999 t0 ms
  for _ in 1 2 3 4 5; do
    t0=$(date +%s%N)
    "$@" >/dev/null
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    (( ms < best )) && best=$ms
  done
  echo "$best"
}
version_ms=$(best "$@" --version)
help_ms=$(best "$@" --help)

# Idle daemon: one loopback listener on a free port, one account without a token yet.
cat >"$host_dir/config.yaml" <<YAML
stateDir: $dir/state
listeners: [{ name: local, host: 127.0.0.1, port: 0 }]
accounts:
  - name: office
    email: measure@example.com
    oauth: { type: user, clientId: measure.apps.googleusercontent.com, clientSecret: measure-only }
http: { port: 0 }
log: { level: info, format: json }
YAML
"$@" serve -c "$dir/config.yaml" 2>"$host_dir/log" &
pid=$!
for _ in $(seq 1 100); do grep -q 'xoauth2-bridge started' "$host_dir/log" 2>/dev/null && break; sleep 0.1; done
grep -q 'xoauth2-bridge started' "$host_dir/log" || { cat "$host_dir/log" >&2; kill "$pid"; echo "measure: $label serve did not start" >&2; exit 1; }
sleep 2   # let start-up garbage settle before reading RSS
rss_kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
kill -TERM "$pid"; wait "$pid" || true
awk -v l="$label" -v v="$version_ms" -v h="$help_ms" -v r="$rss_kb" \
  'BEGIN { printf "%s: --version %d ms, --help %d ms, idle serve RSS %.1f MB\n", l, v, h, r / 1024 }'
