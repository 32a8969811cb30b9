#!/usr/bin/env bash
# Checks packaging/systemd against the systemd on this machine:
#  1. `systemd-analyze verify` passes on the unit, with ExecStart pointed at
#     the built binary (verify refuses a unit whose binary is missing) and
#     MANPATH at the source man pages (it runs man for Documentation=);
#  2. `systemd-analyze security` rates it at most 2.0 (printed);
#  3. systemd-sysusers creates the user from ferry.sysusers in a scratch root;
#  4. every system call ferry makes, while it starts, serves a request, is
#     checked (-t), reloads, reopens its log and drains, is allowed by the
#     unit's SystemCallFilter= (strace). A call outside the filter would get
#     EPERM under systemd and fail in production only.
# Usage: FERRY_BIN=build/ferry tests/packaging/test_systemd.sh
# Needs: systemd (systemd-analyze, systemd-sysusers), strace, man-db, python3.
set -euo pipefail

src=$(cd "$(dirname "$0")/../.." && pwd)
bin=${FERRY_BIN:-$src/build/ferry}
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
unit=$src/packaging/systemd/ferry.service
sysusers=$src/packaging/systemd/ferry.sysusers
passed=0
failed=0

ok() { echo "ok - $*"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $*"; failed=$((failed + 1)); }
need() {
	command -v "$1" >/dev/null || { echo "test_systemd: $1 not found: install $2 (tools/install-deps)" >&2; exit 1; }
}
need systemd-analyze systemd
need systemd-sysusers systemd
need strace strace
need man man-db
need python3 python3
[ -x "$bin" ] || { echo "test_systemd: no ferry binary at $bin (set FERRY_BIN)" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ferry-systemd.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	[ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT

# ------------------------------------------------------------- verify ----
mkdir -p "$tmp/unit" "$tmp/man/man8" "$tmp/man/man5"
cp "$src/man/ferry.8" "$tmp/man/man8/"
cp "$src/man/ferry.yaml.5" "$tmp/man/man5/"
sed "s|/usr/sbin/ferry|$bin|g" "$unit" >"$tmp/unit/ferry.service"
grep -q "^ExecStart=$bin " "$tmp/unit/ferry.service" || { echo "test_systemd: ExecStart not rewritten" >&2; exit 1; }
if out=$(cd "$tmp/unit" && MANPATH=$tmp/man systemd-analyze verify --man=yes ./ferry.service 2>&1) &&
    [ -z "$out" ]; then
	ok "systemd-analyze verify ferry.service"
else
	printf '%s\n' "$out"
	not_ok "systemd-analyze verify ferry.service"
fi
# the same without the rewrite fails only on the missing /usr/sbin/ferry
if [ ! -e /usr/sbin/ferry ]; then
	out=$(cd "$tmp" && MANPATH=$tmp/man systemd-analyze verify --man=yes "$unit" 2>&1 || true)
	if [ -n "$out" ] && ! printf '%s\n' "$out" | grep -v '/usr/sbin/ferry is not executable' | grep -q .; then
		ok "the installed paths differ only in /usr/sbin/ferry"
	else
		printf '%s\n' "$out"
		not_ok "unexpected verify output on the unit as shipped"
	fi
fi
for key in 'Type=notify' 'ExecStartPre=/usr/sbin/ferry -t -c /etc/ferry/ferry.yaml' \
    'ExecStart=/usr/sbin/ferry -c /etc/ferry/ferry.yaml' 'ExecReload=/bin/kill -HUP $MAINPID' \
    'WatchdogSec=30s' 'Restart=on-failure' 'KillMode=mixed' 'TimeoutStopSec=35s' \
    'User=ferry' 'LimitNOFILE=65536' 'LimitCORE=0' 'CPUSchedulingPolicy=batch' \
    'CapabilityBoundingSet=' 'NoNewPrivileges=yes'; do
	if grep -qxF -- "$key" "$unit"; then
		ok "unit has $key"
	else
		not_ok "unit lacks $key"
	fi
done

# ----------------------------------------------------------- security ----
sec=$(cd "$tmp/unit" && systemd-analyze security --offline=true --threshold=20 \
    --no-pager ./ferry.service 2>&1) && rc=0 || rc=$?
printf '%s\n' "$sec" | grep '✗' || true
score=$(printf '%s\n' "$sec" | grep -o 'Overall exposure level for ferry.service: .*' || true)
echo "# $score"
if [ "$rc" = 0 ] && [ -n "$score" ]; then
	ok "systemd-analyze security: exposure at most 2.0"
else
	not_ok "systemd-analyze security: exposure above 2.0 (exit $rc)"
fi

# ----------------------------------------------------------- sysusers ----
mkdir -p "$tmp/root/etc"
if systemd-sysusers --root="$tmp/root" "$sysusers" >/dev/null 2>&1 &&
    line=$(grep '^ferry:' "$tmp/root/etc/passwd"); then
	IFS=: read -r _ _ uid gid gecos home shell <<<"$line"
	if [ "$uid" -lt 1000 ] && [ "$home" = /nonexistent ] &&
	    [ "$gecos" = "ferry sidecar proxy" ] && grep -q "^ferry:x:$gid:" "$tmp/root/etc/group" &&
	    case $shell in */nologin) true ;; *) false ;; esac; then
		ok "systemd-sysusers creates system user ferry ($line)"
	else
		not_ok "sysusers made an unexpected user: $line"
	fi
else
	not_ok "systemd-sysusers ferry.sysusers"
fi

# ---------------------------------------------------- syscall filter ----
# What the unit allows: @system-service less @privileged and @resources,
# groups expanded as this systemd defines them, and sched_setaffinity back.
systemd-analyze syscall-filter --no-pager >"$tmp/groups.txt" 2>/dev/null
python3 - "$tmp/groups.txt" >"$tmp/allowed.txt" <<'EOF'
import sys
groups, cur = {}, None
for line in open(sys.argv[1]):
    s = line.strip()
    if not s or s.startswith('#'):
        continue
    if not line[0].isspace():
        cur = groups.setdefault(s, [])
    elif cur is not None:
        cur.append(s)
def expand(name, seen=None):
    seen = seen if seen is not None else set()
    out = set()
    for m in groups.get(name, []):
        if m.startswith('@'):
            if m not in seen:
                seen.add(m)
                out |= expand(m, seen)
        else:
            out.add(m)
    return out
allowed = expand('@system-service') - expand('@privileged') - expand('@resources')
allowed.add('sched_setaffinity')
assert len(allowed) > 100, 'could not parse systemd-analyze syscall-filter'
print('\n'.join(sorted(allowed)))
EOF

ports=$(python3 -c '
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
read -r p_out p_admin p_up p_dns <<<"$ports"
mkdir -p "$tmp/run"
cat >"$tmp/run/ferry.yaml" <<EOF
drain_delay: 0s
drain_timeout: 5s
log:
  level: debug
  access: $tmp/run/access.log
listeners:
  outbound:
    address: 127.0.0.1:$p_out
  admin:
    address: 127.0.0.1:$p_admin
resolver:                     # nobody answers: the lookup fails, as sockets
  nameservers: ["127.0.0.1:$p_dns"]   # and timers the filter must allow
services:
  up:
    endpoints: ["127.0.0.1:$p_up"]
  named:
    endpoints: ["named.invalid:80"]
EOF
python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
' "$p_up" &
pids+=($!)

# started as the unit starts it: CPUSchedulingPolicy=batch
chrt --batch 0 strace -f -qq -o "$tmp/check.trace" "$bin" -t -c "$tmp/run/ferry.yaml" \
	>"$tmp/check.out" 2>&1 || { cat "$tmp/check.out"; not_ok "ferry -t on the scratch config"; }
chrt --batch 0 strace -f -qq -o "$tmp/run.trace" "$bin" -c "$tmp/run/ferry.yaml" \
	>"$tmp/run.out" 2>&1 &
spid=$!
pids+=($spid)
# wait for /ready, then exercise the paths the sandbox must allow
python3 - "$p_admin" "$p_out" <<'EOF' || not_ok "ferry under strace did not serve"
import http.client, sys, time
admin, out = int(sys.argv[1]), int(sys.argv[2])
def get(port, path, host=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", path, headers={"Host": host} if host else {})
    r = c.getresponse(); r.read(); c.close()
    return r.status
deadline = time.time() + 30
while True:
    try:
        if get(admin, "/ready") == 200:
            break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("ferry never became ready")
    time.sleep(0.2)
for p in ("/healthz", "/metrics", "/services", "/config", "/"):
    get(admin, p)
# the upstream (a python3 started in the background) may still be
# starting on a busy machine: ferry answers 503 until it listens
while get(out, "/x", host="up") != 200:
    if time.time() > deadline:
        sys.exit("request through ferry failed")
    time.sleep(0.2)
EOF
# ferry is strace's child (no pgrep: procps may be absent)
fpid=
for st in /proc/[0-9]*/status; do
	if grep -qx "PPid:	$spid" "$st" 2>/dev/null && grep -qx "Name:	ferry" "$st" 2>/dev/null; then
		fpid=$(basename "$(dirname "$st")")
	fi
done
if [ -n "$fpid" ]; then
	kill -HUP "$fpid"; sleep 0.5
	kill -USR1 "$fpid"; sleep 0.3
	kill -TERM "$fpid"
fi
for _ in $(seq 1 100); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$spid" 2>/dev/null; then
	not_ok "ferry did not exit on SIGTERM within 10 s"
	kill -KILL "$fpid" 2>/dev/null || true
fi
wait "$spid" 2>/dev/null || true

# "PID name(args) = ret" lines; strace prints resumed calls as "<... name resumed>"
bad=$(cat "$tmp/check.trace" "$tmp/run.trace" |
	sed -nE 's/^[0-9]+ +(<\.\.\. )?([a-z_0-9]+)[( ].*/\2/p' | sort -u |
	grep -vxF -f "$tmp/allowed.txt" | grep -vx 'exited\|killed\|resumed' || true)
used=$(cat "$tmp/check.trace" "$tmp/run.trace" | sed -nE 's/^[0-9]+ +([a-z_0-9]+)\(.*/\1/p' | sort -u | wc -l)
if [ "$used" -lt 20 ]; then
	not_ok "strace saw only $used distinct system calls; the trace is broken"
elif [ -z "$bad" ]; then
	ok "all $used system calls ferry made are inside SystemCallFilter="
else
	not_ok "system calls outside SystemCallFilter=: $(echo $bad)"
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
