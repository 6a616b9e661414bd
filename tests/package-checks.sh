#!/bin/bash
# Package checks for lbaws (issue 5): build the .deb with cargo-deb, then
#   - lintian: no error and no warning (each accepted tag is overridden, with
#     its reason, in packaging/lintian-overrides);
#   - the shipped /etc/lbaws/config.toml passes `lbaws check`;
#   - `systemd-analyze verify` is clean on the four units;
#   - `systemd-analyze security --offline=true` exposure of lbaws.service
#     (and lbaws-accept@.service) is at most 2.0;
#   - md5sums, Built-Using (packaging/build-deb adds them);
#   - packaging/copyright is what packaging/gen-copyright makes of the
#     current Cargo.lock (every crate linked in, glibc, libgcc);
#   - the maintainer scripts pass shellcheck; the toolchain here is at least
#     Cargo.toml's rust-version.
# Installs what it needs (cargo-deb, lintian) itself. Run from anywhere:
#   bash tests/package-checks.sh
# Prints the path of the .deb it built on the line "deb: PATH".
set -euo pipefail

cd "$(dirname "$0")/.."
MAX_EXPOSURE=2.0

pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok:   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# shellcheck source=tests/lib.sh
. tests/lib.sh   # the working directory is the repository here

apt_install lintian systemd man-db shellcheck
if ! command -v cargo-deb >/dev/null && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo-deb" ]; then
	echo "installing: cargo-deb"
	cargo install cargo-deb --locked --quiet
fi
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- build -------------------------------------------------------------------
echo "== packaging/build-deb"
# cargo deb for the named target (.cargo/config.toml), then md5sums and Built-Using.
packaging/build-deb 2>&1 | tee "$work/cargo-deb.log" | tail -n 3
deb=$(tail -n 1 "$work/cargo-deb.log")
if [ -f "$deb" ]; then ok "built $deb"; else bad "packaging/build-deb produced no package"; exit 1; fi
dpkg-deb -x "$deb" "$work/root"
dpkg-deb -e "$deb" "$work/control"

# --- lintian -----------------------------------------------------------------
echo "== lintian"
if lintian --allow-root --display-info --fail-on error,warning "$deb" >"$work/lintian.log" 2>&1; then
	ok "lintian: no error, no warning"
else
	bad "lintian"
fi
sed 's/^/   /' "$work/lintian.log"

# --- contents ----------------------------------------------------------------
echo "== contents"
for f in usr/sbin/lbaws etc/lbaws/config.toml usr/share/lbaws/www/index.html \
	usr/lib/systemd/system/lbaws.socket usr/lib/systemd/system/lbaws.service \
	usr/lib/systemd/system/lbaws-accept.socket usr/lib/systemd/system/lbaws-accept@.service \
	usr/share/man/man8/lbaws.8.gz usr/share/man/man5/lbaws.toml.5.gz \
	usr/share/doc/lbaws/copyright usr/share/doc/lbaws/changelog.Debian.gz \
	usr/share/lintian/overrides/lbaws; do
	if [ -f "$work/root/$f" ]; then ok "ships /$f"; else bad "missing /$f"; fi
done
for f in /etc/lbaws/config.toml /etc/lbaws/sites.d/default.toml /etc/logrotate.d/lbaws; do
	if grep -qx "$f" "$work/control/conffiles"; then ok "$f is a conffile"; else bad "$f is not a conffile"; fi
done
if [ -f "$work/root/etc/logrotate.d/lbaws" ]; then ok "ships /etc/logrotate.d/lbaws"; else bad "missing /etc/logrotate.d/lbaws"; fi
if [ -s "$work/control/md5sums" ] && (cd "$work/root" && md5sum --quiet -c "$work/control/md5sums"); then
	ok "md5sums: $(wc -l <"$work/control/md5sums") files, all match"
else
	bad "md5sums missing or wrong"
fi
if grep -Eq '^Built-Using: glibc \(= [^)]+\), gcc-[0-9]+ \(= [^)]+\)$' "$work/control/control"; then
	ok "$(grep -E '^Built-Using:' "$work/control/control")"
else
	bad "no Built-Using for glibc and libgcc"
fi
if packaging/gen-copyright >"$work/copyright" && diff -u packaging/copyright "$work/copyright" >"$work/copyright.diff"; then
	ok "packaging/copyright is current ($(grep -c '^Files: rust-crates/' packaging/copyright) crates, glibc, libgcc)"
else
	bad "packaging/copyright is stale: run packaging/gen-copyright >packaging/copyright"
	sed 's/^/   /' "$work/copyright.diff" | head -n 40
fi
for s in preinst postinst prerm postrm; do
	[ -f "$work/control/$s" ] || continue
	if shellcheck -s sh "$work/control/$s" >"$work/shellcheck.log" 2>&1; then ok "shellcheck $s"; else
		bad "shellcheck $s"
		sed 's/^/   /' "$work/shellcheck.log"
	fi
done
want=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
have=$(rustc --version | awk '{ print $2 }')
if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n 1)" = "$want" ]; then
	ok "rustc $have >= rust-version $want (the toolchain this run proves)"
else
	bad "rustc $have is older than rust-version $want"
fi
if [ -e "$work/root/var/www" ]; then bad "package ships files under /var/www"; else ok "nothing under /var/www"; fi
if out=$("$work/root/usr/sbin/lbaws" check --config "$work/root/etc/lbaws/config.toml" 2>&1); then
	ok "shipped config: $out"
else
	bad "shipped config does not validate: $out"
fi

# --- systemd-analyze verify ----------------------------------------------------
# verify checks that ExecStart= exists and that Documentation= man pages open:
# point both at the unpacked package (nothing is installed on this machine).
echo "== worker code layout"
# build.rs lays the functions a worker runs (.cargo/worker-symbols.txt) at the
# start of .text; a list gone stale (renamed functions, new dependencies)
# silently loses that. Most names must be in the packaged binary, together.
bin=target/x86_64-unknown-linux-gnu/release/lbaws   # the packaged one, before cargo-deb strips it
listed=$(grep -vc '^#' .cargo/worker-symbols.txt)
nm "$bin" | awk 'NR==FNR { if ($0 !~ /^#/) want[$0] = 1; next } ($3 in want) { print $1 }' .cargo/worker-symbols.txt - | sort > "$work/found"
found=$(wc -l < "$work/found")
span=$(( 0x$(tail -n 1 "$work/found") - 0x$(head -n 1 "$work/found") ))
if [ $((found * 10)) -ge $((listed * 9)) ] && [ "$span" -lt $((512 * 1024)) ]; then
	ok "worker code layout: $found of $listed listed functions, within $((span / 1024)) KiB"
else
	bad "worker code layout: $found of $listed listed functions found, spanning $((span / 1024)) KiB (run bench/order-symbols)"
fi

echo "== systemd-analyze verify"
mkdir "$work/units"
cp "$work/root/usr/lib/systemd/system/"* "$work/units/"
sed -i "s|/usr/sbin/lbaws|$work/root/usr/sbin/lbaws|" "$work/units/"*.service
if MANPATH="$work/root/usr/share/man" systemd-analyze verify \
	"$work/units/lbaws.socket" "$work/units/lbaws.service" \
	"$work/units/lbaws-accept.socket" "$work/units/lbaws-accept@.service" \
	>"$work/verify.log" 2>&1 && [ ! -s "$work/verify.log" ]; then
	ok "systemd-analyze verify: clean"
else
	bad "systemd-analyze verify:"
	sed 's/^/   /' "$work/verify.log"
fi

# --- systemd-analyze security ---------------------------------------------------
echo "== systemd-analyze security --offline=true"
for unit in lbaws.service lbaws-accept@.service; do
	systemd-analyze security --offline=true "$work/root/usr/lib/systemd/system/$unit" \
		>"$work/security.log" 2>&1 || true
	line=$(grep 'Overall exposure level' "$work/security.log" || true)
	level=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$line")
	if [ -z "$level" ]; then
		bad "$unit: no exposure level in the output"
		sed 's/^/   /' "$work/security.log"
	elif awk -v l="$level" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(l <= m) }'; then
		ok "$unit exposure $level <= $MAX_EXPOSURE"
		echo "exposure: $unit $level"
	else
		bad "$unit exposure $level > $MAX_EXPOSURE"
		grep '✗' "$work/security.log" | sed 's/^/   /'
	fi
done

echo "deb: $(realpath "$deb")"
echo "package-checks: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
