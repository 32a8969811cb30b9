#!/usr/bin/env bash
# Builds the Debian package with packaging/build-deb and checks what it
# holds: that it was built with a profile (tools/build's training ran), the
# files (binary, unit, sysusers, man pages, sample config), the
# conffiles, the control fields, the maintainer scripts (unit installed but
# not enabled, user created), that the packaged binary runs, and that
# lintian finds no error (its warnings and notes are printed).
# Usage: tests/packaging/test_deb.sh
# Needs: dpkg-dev, debhelper (>= 13.10), lintian and the Build-Depends of
# packaging/debian/control.
set -euo pipefail

src=$(cd "$(dirname "$0")/../.." && pwd)
passed=0
failed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $*"; failed=$((failed + 1)); }
for t in dpkg-buildpackage:dpkg-dev dh:debhelper lintian:lintian; do
	command -v "${t%%:*}" >/dev/null ||
		{ echo "test_deb: ${t%%:*} not found: install ${t#*:} (tools/install-deps)" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ferry-debtest.XXXXXX")
trap '[ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"' EXIT

"$src/packaging/build-deb" "$tmp/out"
version=$(dpkg-parsechangelog -l "$src/packaging/debian/changelog" -S Version)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
deb=$tmp/out/ferry_${version}_${arch}.deb
[ -f "$deb" ] || { echo "test_deb: $deb was not built" >&2; exit 1; }
ok "built $(basename "$deb")"
# profile-guided, as tools/build builds it (debian/rules)
if grep -qE '^pgo-train: [0-9]+ requests$' "$tmp/out/build.log"; then
	ok "built with a profile (the training run answered every request)"
else
	not_ok "built without a profile: no training run in build.log"
fi

# ---------------------------------------------------------- contents ----
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' >"$tmp/files"
has() { grep -qxE "$1" "$tmp/files"; }
for f in /usr/sbin/ferry '(/usr)?/lib/systemd/system/ferry\.service' \
    /usr/lib/sysusers\.d/ferry\.conf /usr/share/man/man8/ferry\.8\.gz \
    /usr/share/man/man5/ferry\.yaml\.5\.gz /etc/ferry/ferry\.yaml \
    /etc/logrotate\.d/ferry /usr/share/doc/ferry/copyright \
    /usr/share/doc/ferry/changelog\.Debian\.gz; do
	if has "$f"; then ok "contains $f"; else not_ok "lacks $f"; fi
done
# no demo keys, build trees or tests leak in
if grep -E '\.(pem|key)$|/tests?/|/build|\.o$' "$tmp/files"; then
	not_ok "unexpected files in the package"
else
	ok "nothing but the installed files"
fi

mkdir -p "$tmp/x" "$tmp/ctrl"
dpkg-deb -x "$deb" "$tmp/x"
dpkg-deb --ctrl-tarfile "$deb" | tar -x -C "$tmp/ctrl"
unitfile=
for f in "$tmp"/x/lib/systemd/system/ferry.service "$tmp"/x/usr/lib/systemd/system/ferry.service; do
	[ -f "$f" ] && unitfile=$f
done
if [ -n "$unitfile" ] && cmp -s "$unitfile" "$src/packaging/systemd/ferry.service"; then
	ok "the unit is packaging/systemd/ferry.service"
else
	not_ok "the packaged unit differs from packaging/systemd/ferry.service"
fi
if cmp -s "$tmp/x/usr/lib/sysusers.d/ferry.conf" "$src/packaging/systemd/ferry.sysusers"; then
	ok "sysusers.d/ferry.conf is packaging/systemd/ferry.sysusers"
else
	not_ok "the packaged sysusers file differs"
fi
mode=$(dpkg-deb -c "$deb" | awk '$6 == "./usr/sbin/ferry" {print $1 " " $2}')
if [ "$mode" = "-rwxr-xr-x root/root" ]; then ok "/usr/sbin/ferry is $mode"; else not_ok "/usr/sbin/ferry is $mode"; fi
upstream=${version%-*}
if out=$("$tmp/x/usr/sbin/ferry" -V) && [ "$out" = "ferry $upstream" ]; then
	ok "packaged binary runs: $out"
else
	not_ok "packaged ferry -V said '$out', want 'ferry $upstream'"
fi

# ------------------------------------------------------------ control ----
conffiles=$(sort "$tmp/ctrl/conffiles" 2>/dev/null | tr '\n' ' ' || true)
if [ "$conffiles" = "/etc/ferry/ferry.yaml /etc/logrotate.d/ferry " ]; then
	ok "conffiles: $conffiles"
else
	not_ok "conffiles: ${conffiles:-none}, want /etc/ferry/ferry.yaml /etc/logrotate.d/ferry"
fi
depends=$(dpkg-deb -f "$deb" Depends)
for d in libssl3 libyaml-0-2 libevent-core-2.1-7 procps 'systemd | systemd-standalone-sysusers'; do
	case ", $depends" in
	*", $d"*) ok "Depends: $d" ;;
	*) not_ok "Depends lacks $d: $depends" ;;
	esac
done
for f in Package:ferry Section:net "Version:$version" "Architecture:$arch"; do
	if [ "$(dpkg-deb -f "$deb" "${f%%:*}")" = "${f#*:}" ]; then ok "$f"; else not_ok "${f%%:*} is not ${f#*:}"; fi
done
# the user exists before anything else in postinst; the unit is installed
# but not enabled (--no-enable: only a unit the admin enabled is re-enabled)
if grep -q 'systemd-sysusers .*ferry.conf' "$tmp/ctrl/postinst"; then
	ok "postinst creates the user with systemd-sysusers"
else
	not_ok "postinst does not run systemd-sysusers"
fi
if grep -q "deb-systemd-helper debian-installed 'ferry.service'" "$tmp/ctrl/postinst" &&
    ! grep -q "deb-systemd-helper enable 'ferry.service'" \
	<(sed "/was-enabled 'ferry.service'/,/fi/d" "$tmp/ctrl/postinst"); then
	ok "postinst does not enable ferry.service on a fresh install"
else
	not_ok "postinst enables ferry.service"
fi
if grep -q "_dh_action=restart" "$tmp/ctrl/postinst" &&
    ! grep -q "stop 'ferry.service'" "$tmp/ctrl/preinst" 2>/dev/null; then
	ok "an upgrade restarts a running ferry after unpacking"
else
	not_ok "upgrade handling: expected restart in postinst and no stop in preinst"
fi

# ------------------------------------------------------------ lintian ----
changes=$tmp/out/ferry_${version}_${arch}.changes
lintian --fail-on error --display-info --pedantic "$changes" >"$tmp/lintian.txt" 2>&1 && rc=0 || rc=$?
grep -E '^[EWIPX]: ' "$tmp/lintian.txt" | sed 's/^/# lintian: /' || true
if [ "$rc" = 0 ]; then
	ok "lintian: no errors ($(grep -c '^W: ' "$tmp/lintian.txt" || true) warnings)"
else
	cat "$tmp/lintian.txt"
	not_ok "lintian exit $rc"
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
