#!/usr/bin/env bash
# ferry.service under a real systemd: boots a Debian 12 container
# (debootstrap + systemd-nspawn), installs the package and checks what only
# a running systemd shows: Type=notify readiness, the sandbox in force,
# reload (good and bad), the watchdog restarting a stalled ferry, an
# application unit with Wants=/After= surviving a ferry restart, logrotate
# reopening the access log, a graceful stop, and an upgrade restarting ferry.
#
#   sudo tests/packaging/boot_test.sh [FERRY.deb]
#
# Not part of `meson test`: it needs root, the Debian mirror (debootstrap,
# apt inside the container) and about three minutes. Without FERRY.deb it
# builds one with packaging/build-deb. The container's root file system is
# cached in $FERRY_BOOT_CACHE (default /var/tmp/ferry-boot-rootfs) and
# copied for each run. Needs: debootstrap, systemd-container.
set -euo pipefail

src=$(cd "$(dirname "$0")/../.." && pwd)
cache=${FERRY_BOOT_CACHE:-/var/tmp/ferry-boot-rootfs}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
[ "$(id -u)" = 0 ] || { echo "boot_test: run as root" >&2; exit 1; }
for t in debootstrap:debootstrap systemd-nspawn:systemd-container; do
	command -v "${t%%:*}" >/dev/null || { echo "boot_test: install ${t#*:}" >&2; exit 1; }
done

work=$(mktemp -d /var/tmp/ferry-boot.XXXXXX)
mounted=
cleanup() {
	rm -rf "$work"
	[ -z "$mounted" ] || umount /run/systemd/nspawn
}
trap cleanup EXIT

deb=${1:-}
if [ -z "$deb" ]; then
	"$src/packaging/build-deb" "$work/out" >/dev/null
	deb=$(ls "$work"/out/ferry_*.deb)
fi
[ -f "$deb" ] || { echo "boot_test: no package $deb" >&2; exit 1; }

if [ ! -x "$cache/usr/lib/systemd/systemd" ]; then
	echo "boot_test: debootstrap into $cache (once)"
	rm -rf "$cache.new"
	debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,curl,python3,logrotate \
		bookworm "$cache.new" "$mirror" >"$work/debootstrap.log" 2>&1 ||
		{ tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
	mv "$cache.new" "$cache"
fi
root=$work/root
cp -a "$cache" "$root"
cp "$deb" "$root/root/ferry.deb"

# nspawn keeps state under /run/systemd/nspawn and insists it be a tmpfs;
# on a host without systemd /run may not be one
mkdir -p /run/systemd/nspawn
if ! mountpoint -q /run/systemd/nspawn && [ "$(stat -f -c %T /run)" != tmpfs ]; then
	mount -t tmpfs tmpfs /run/systemd/nspawn
	mounted=1
fi
nspawn() { systemd-nspawn -q --register=no --keep-unit -D "$root" "$@"; }

echo "boot_test: installing $(basename "$deb")"
nspawn sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /root/ferry.deb' \
	>"$work/install.log" 2>&1 || { tail -n 20 "$work/install.log" >&2; exit 1; }

cat >"$root/root/check.sh" <<'CHECK'
#!/bin/bash
exec 3>/root/results.txt >/root/check.log 2>&1
set -x
passed=0 failed=0
ok() { echo "ok - $*" >&3; passed=$((passed + 1)); }
no() { echo "not ok - $*" >&3; failed=$((failed + 1)); }
is() { if [ "$2" = "$3" ]; then ok "$1 ($2)"; else no "$1: got '$2', want '$3'"; fi; }
prop() { systemctl show ferry -p "$1" --value; }
http() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

is "installed, not enabled" "$(systemctl is-enabled ferry)" disabled
is "user ferry" "$(getent passwd ferry | cut -d: -f6,7)" /nonexistent:/usr/sbin/nologin
if ferry -t -c /etc/ferry/ferry.yaml; then no "the sample config passes -t"; else ok "the shipped sample needs configuring (-t fails)"; fi

cat >/etc/ferry/ferry.yaml <<'YAML'
drain_delay: 1s
drain_timeout: 30s
log:
  access: /var/log/ferry/access.log
listeners:
  outbound: { address: 127.0.0.1:15001 }
  admin: { address: 127.0.0.1:15000 }
services:
  app:
    endpoints: ["127.0.0.1:18080"]
YAML
cat >/etc/systemd/system/demo-app.service <<'UNIT'
[Unit]
Wants=ferry.service
After=ferry.service
[Service]
Environment=HTTP_PROXY=http://127.0.0.1:15001
ExecStart=/usr/bin/python3 -m http.server --bind 127.0.0.1 18080
UNIT
systemctl daemon-reload
systemctl start demo-app.service
# Type=notify: active only after READY=1, so /ready already says 200
is "Wants= started ferry, active once READY=1" "$(prop ActiveState)/$(prop SubState)" active/running
is "/ready at once" "$(http http://127.0.0.1:15000/ready)" 200
case $(prop StatusText) in serving*) ok "STATUS=: $(prop StatusText)" ;; *) no "STATUS=: '$(prop StatusText)'" ;; esac
pid=$(prop MainPID)
is "runs as" "$(stat -c %U /proc/$pid)" ferry
is "no capabilities" "$(awk '/^CapEff/ {print $2}' /proc/$pid/status)" 0000000000000000
is "no new privileges" "$(awk '/^NoNewPrivs/ {print $2}' /proc/$pid/status)" 1
is "seccomp filter" "$(awk '/^Seccomp:/ {print $2}' /proc/$pid/status)" 2
for i in $(seq 1 20); do [ "$(http -H 'Host: app' http://127.0.0.1:15001/)" = 200 ] && break; sleep 0.5; done
is "a request through ferry" "$(http -H 'Host: app' http://127.0.0.1:15001/)" 200

systemctl reload ferry
is "reload keeps it running" "$(prop ActiveState)/$(prop MainPID)" "active/$pid"
cp /etc/ferry/ferry.yaml /root/good.yaml
echo 'no_such_key: 1' >>/etc/ferry/ferry.yaml
systemctl reload ferry; sleep 1
is "a bad reload keeps it running" "$(prop ActiveState)/$(prop MainPID)" "active/$pid"
cp /root/good.yaml /etc/ferry/ferry.yaml
is "the failed reload is counted" \
	"$(curl -s http://127.0.0.1:15000/metrics | awk '/^ferry_config_reloads_total\{result="failure"\}/ {print $2}')" 1
journalctl -u ferry -b | grep -q 'no_such_key' && ok "the bad reload is logged" || no "the bad reload is not logged"

# logrotate: the file is moved, SIGUSR1 reopens a new one
sleep 1.5
logrotate -f /etc/logrotate.d/ferry
http -H 'Host: app' http://127.0.0.1:15001/after-rotate >/dev/null; sleep 1.5
grep -q after-rotate /var/log/ferry/access.log && ok "access log reopened after logrotate" ||
	no "access log not reopened after logrotate"
[ -e /var/log/ferry/access.log.1 ] && ok "access log rotated" || no "no access.log.1"

app=$(systemctl show demo-app -p MainPID --value)
sleep 31
is "watchdog pings keep it past WatchdogSec" "$(prop ActiveState)/$(prop NRestarts)" active/0
kill -STOP "$pid"
for i in $(seq 1 60); do [ "$(prop NRestarts)" = 1 ] && [ "$(prop ActiveState)" = active ] && break; sleep 1; done
is "a stalled ferry is killed by the watchdog and restarted" "$(prop ActiveState)/$(prop NRestarts)" active/1
journalctl -u ferry -b | grep -q 'Watchdog timeout' && ok "journal: watchdog timeout" || no "no watchdog timeout logged"
systemctl restart ferry
is "a ferry restart leaves the app alone (Wants=)" "$(systemctl show demo-app -p MainPID --value)" "$app"

pid=$(prop MainPID)
DEBIAN_FRONTEND=noninteractive dpkg -i --force-confold /root/ferry.deb
new=$(prop MainPID)
[ "$new" != "$pid" ] && [ "$(prop ActiveState)" = active ] && ok "an upgrade restarts ferry ($pid -> $new)" ||
	no "upgrade: pid $pid -> $new, $(prop ActiveState)"

t0=$(date +%s)
systemctl stop ferry
is "stop: drained and exited 0" "$(prop Result)/$(prop ExecMainStatus)" success/0
[ $(( $(date +%s) - t0 )) -lt 35 ] && ok "stopped within TimeoutStopSec" || no "stop took too long"
journalctl -u ferry -b | grep -q 'drain' && ok "journal: drain" || no "no drain logged"

echo "$passed passed, $failed failed" >&3
systemctl poweroff
CHECK
chmod +x "$root/root/check.sh"
cat >"$root/etc/systemd/system/ferry-boot-check.service" <<'UNIT'
[Unit]
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/root/check.sh
[Install]
WantedBy=multi-user.target
UNIT
ln -s /etc/systemd/system/ferry-boot-check.service \
	"$root/etc/systemd/system/multi-user.target.wants/ferry-boot-check.service"

echo "boot_test: booting (about two minutes)"
timeout 300 systemd-nspawn -q --register=no --keep-unit -D "$root" -b --console=pipe \
	</dev/null >"$work/boot.log" 2>&1 || true
if [ ! -s "$root/root/results.txt" ]; then
	tail -n 30 "$work/boot.log" "$root/root/check.log" 2>/dev/null >&2
	echo "boot_test: no results" >&2
	exit 1
fi
cat "$root/root/results.txt"
if grep -q '^not ok' "$root/root/results.txt" || ! grep -q ' 0 failed$' "$root/root/results.txt"; then
	tail -n 40 "$root/root/check.log" >&2
	exit 1
fi
