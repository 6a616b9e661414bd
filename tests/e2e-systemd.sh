#!/bin/bash
# End-to-end test of the lbaws package under a real systemd (issue 5).
#
# The machine's PID 1 need not be systemd: a Debian bookworm system
# (debootstrap --variant=minbase, cached between runs) boots in a container
# with systemd-nspawn, on a private network (only its own loopback), with a
# throw-away overlay over the cached tree. The test drives it with
# `nsenter -t <container PID 1> -a ...` and checks, in order:
#   1. dpkg -i: lbaws.socket active, lbaws.service inactive, user, default page
#   2. curl :8080 returns the default page; the service is active, its
#      StatusText has the live counts, its MainPID runs as lbaws
#   3. reload with a new route and a CGI route (same MainPID): a request
#      body over 64 KiB reaches its script from an unlinked file in /var/tmp
#      (the service's own, PrivateTmp=), a small one from memory; a broken
#      edit keeps the old configuration and the journal names
#      config.toml:LINE:COL
#   4. the journal has the start and reload lines at their priorities; the
#      access log file has the requests, and so has the journal once a
#      reload moved the access log to stderr
#   5. stopping the service: the next connection starts it again; installing
#      the package again (the upgrade path) restarts it and keeps the edited
#      conffile; stopping socket and service: nothing listens
#   6. Accept=yes: lbaws-accept.socket, one instance per connection
#   7. dpkg --purge: units, user and listeners gone, no file left behind
#
# Usage (as root, from anywhere):  bash tests/e2e-systemd.sh [PATH.deb]
# Without an argument the .deb is built with `cargo deb`.
# Environment: LBAWS_E2E_CACHE (default /var/cache/lbaws-e2e) holds the
# rootfs; LBAWS_E2E_KEEP=1 leaves the container running at the end (for
# debugging; its PID 1 is printed).
# Exit status: 0 when every check passed, 1 otherwise (the journal of the
# container is printed then), 2 when the test could not run at all.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
CACHE=${LBAWS_E2E_CACHE:-/var/cache/lbaws-e2e}
ROOTFS=$CACHE/rootfs
SUITE=bookworm
INCLUDE=systemd,systemd-sysv,dbus,curl,iproute2,procps
STAMP_TEXT="$SUITE minbase $INCLUDE"
START=$SECONDS

pass=0
fail=0
skip=0
failures=()
say() { printf '%s\n' "$*"; }
declare -A step_pass=() step_fail=() step_skip=() step_title=()
steps=()
current_step=setup
count() {
	local -n arr=$1
	local n=${arr[$current_step]:-0}
	arr["$current_step"]=$((n + 1))
}
ok() { pass=$((pass + 1)); count step_pass; say "  ok   $*"; }
bad() { fail=$((fail + 1)); count step_fail; failures+=("$current_step: $*"); say "  FAIL $*"; }
skipped() { skip=$((skip + 1)); count step_skip; say "  skip $*"; }
die() { say "e2e-systemd: cannot run: $*" >&2; exit 2; }
step() {
	current_step=$1
	shift
	steps+=("$current_step")
	step_title[$current_step]=$*
	say ""
	say "== $current_step $*"
}

# check DESCRIPTION CMD... : one assertion; CMD's output is shown if it fails.
check() {
	local what=$1 out
	shift
	if out=$("$@" 2>&1); then
		ok "$what"
	else
		bad "$what"
		[ -n "$out" ] && printf '%s\n' "$out" | tail -n 20 | sed 's/^/       /'
	fi
	return 0
}
not() { ! "$@"; }

# wait_for SECONDS CMD... : poll CMD (quietly) until it succeeds or the deadline passes.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		[ "$SECONDS" -ge "$deadline" ] && return 1
		sleep 0.1
	done
}

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, nspawn, nsenter)"

work=
cg_dirs=()
NSPAWN_PID=
CPID=
# nspawn is our child: once it has exited it stays a zombie until waited for.
nspawn_gone() {
	! kill -0 "$NSPAWN_PID" 2>/dev/null || grep -q '^[0-9]* (.*) Z' "/proc/$NSPAWN_PID/stat" 2>/dev/null
}
cleanup() {
	local rc=$?
	if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
		if [ "${LBAWS_E2E_KEEP:-0}" = 1 ]; then
			say "LBAWS_E2E_KEEP=1: container left running, PID 1 = $CPID, nspawn = $NSPAWN_PID"
			return
		fi
		[ -n "$CPID" ] && timeout 10 nsenter -t "$CPID" -a systemctl poweroff >/dev/null 2>&1
		wait_for 20 nspawn_gone || kill -KILL "$NSPAWN_PID" 2>/dev/null
		wait "$NSPAWN_PID" 2>/dev/null
	fi
	local d
	for d in "${cg_dirs[@]}"; do
		[ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
	done
	[ -n "$work" ] && rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# --- tools ---------------------------------------------------------------------
# shellcheck source=tests/lib.sh
. tests/lib.sh   # the working directory is the repository here
apt_install systemd-container debootstrap debian-archive-keyring util-linux procps ||
	die "apt-get install systemd-container debootstrap failed"

# --- the package -----------------------------------------------------------------
work=$(mktemp -d /tmp/lbaws-e2e.XXXXXX)
mkdir "$work/debs"
if [ $# -ge 1 ]; then
	deb=$(realpath "$1")
else
	export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
	command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet || die "cannot install cargo-deb"
	say "== cargo deb"
	cargo deb --target x86_64-unknown-linux-gnu >"$work/cargo-deb.log" 2>&1 || { cat "$work/cargo-deb.log"; die "cargo deb failed"; }
	deb=$(tail -n 1 "$work/cargo-deb.log")
fi
[ -f "$deb" ] || die "no package at $deb"
cp "$deb" "$work/debs/lbaws.deb"
say "package: $deb"

# --- the root file system, cached ----------------------------------------------------
# The mirror is the one apt already uses here (deb822 .sources or one-line .list).
apt_mirror() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk -v suite="$SUITE" 'BEGIN { RS = ""; FS = "\n" }
			{
				types = ""; uris = ""; suites = ""; enabled = "yes"
				for (i = 1; i <= NF; i++) {
					if ($i ~ /^[ \t]*#/) continue
					k = tolower($i); sub(/:.*/, "", k)
					v = $i; sub(/^[^:]*:[ \t]*/, "", v)
					if (k == "types") types = v
					else if (k == "uris") uris = v
					else if (k == "suites") suites = v
					else if (k == "enabled") enabled = tolower(v)
				}
				if (enabled != "no" && (" " types " ") ~ / deb / && (" " suites " ") ~ (" " suite " ")) {
					split(uris, u, /[ \t]+/); print u[1]; exit
				}
			}' "$f"
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		awk -v suite="$SUITE" '$1 == "deb" {
				i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
				if ($(i + 1) == suite) { print $i; exit }
			}' "$f"
	done
}

mkdir -p "$CACHE"
(
	flock 9
	if [ "$(cat "$ROOTFS/.lbaws-e2e-rootfs" 2>/dev/null)" != "$STAMP_TEXT" ]; then
		mirror=$(apt_mirror | head -n 1)
		[ -n "$mirror" ] || { say "no '$SUITE' mirror in /etc/apt/sources.list{,.d}"; exit 1; }
		say "== debootstrap $SUITE from $mirror into $ROOTFS (cached for later runs)"
		rm -rf "$ROOTFS" "$ROOTFS.tmp"
		t0=$SECONDS
		debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOTFS.tmp" "$mirror" \
			>"$CACHE/debootstrap.log" 2>&1 || { tail -n 30 "$CACHE/debootstrap.log"; exit 1; }
		echo "$STAMP_TEXT" >"$ROOTFS.tmp/.lbaws-e2e-rootfs"
		mv "$ROOTFS.tmp" "$ROOTFS"
		say "debootstrap took $((SECONDS - t0)) s"
	else
		say "rootfs: $ROOTFS (cached)"
	fi
) 9>"$CACHE/lock" || die "debootstrap failed"

# --- boot ---------------------------------------------------------------------------
# nspawn gets a cgroup of its own, so that the container's cgroups are not
# created in the root cgroup of this machine.
cg_name=lbaws-e2e.$$
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
	cg_dirs+=("/sys/fs/cgroup/$cg_name")
else
	for h in unified systemd; do
		[ -d "/sys/fs/cgroup/$h" ] && cg_dirs+=("/sys/fs/cgroup/$h/$cg_name")
	done
fi


say "== boot: systemd-nspawn --boot (private network)"
t_boot=$SECONDS
(
	for d in "${cg_dirs[@]}"; do
		mkdir -p "$d" && echo "$BASHPID" >"$d/cgroup.procs"
	done
	export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
	exec systemd-nspawn -D "$ROOTFS" --boot --register=no --keep-unit --private-network \
		--volatile=overlay --bind-ro="$work/debs:/debs" --machine=lbaws-e2e
) >"$work/nspawn.log" 2>&1 </dev/null &
NSPAWN_PID=$!

# The container's PID 1 is the child of nspawn whose pid in its namespace is 1.
find_init() {
	local p
	for p in $(pgrep -P "$NSPAWN_PID"); do
		if awk '/^NSpid:/ { exit !($NF == 1) }' "/proc/$p/status" 2>/dev/null; then
			CPID=$p
			return 0
		fi
	done
	return 1
}
if ! wait_for 30 find_init || ! find_init; then
	tail -n 30 "$work/nspawn.log"
	die "the container did not start"
fi

# c CMD... : run CMD in the container, with a clean environment.
c() {
	timeout 60 nsenter -t "$CPID" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		LANG=C.UTF-8 SYSTEMD_PAGER= SYSTEMD_COLORS=0 TERM=dumb "$@"
}
booted() {
	local s
	s=$(timeout 10 nsenter -t "$CPID" -a systemctl is-system-running --wait 2>/dev/null)
	[ "$s" = running ] || [ "$s" = degraded ]
}
if ! wait_for 60 booted; then
	tail -n 30 "$work/nspawn.log"
	die "systemd in the container did not finish booting"
fi
say "booted in $((SECONDS - t_boot)) s: container PID 1 is $CPID, state $(c systemctl is-system-running)"

dump_journal() {
	say ""
	say "== journal of the container (last 200 lines)"
	c journalctl -b --no-pager -o short-precise | tail -n 200
	say "== systemctl status 'lbaws*'"
	c systemctl status --no-pager --all 'lbaws*' 2>&1 | head -n 80
}

# --- helpers on the container ---------------------------------------------------------
get() { c curl -sS --max-time 5 "$@"; }
active() { [ "$(c systemctl is-active "$1")" = active ]; }
inactive() { [ "$(c systemctl is-active "$1")" = inactive ]; }
prop() { c systemctl show -P "$2" "$1"; }
listening() { [ -n "$(c ss -Hltn "sport = :$1")" ]; }
not_listening() { ! listening "$1"; }
body_is() { # body_is URL FILE-in-container
	[ "$(get "$1")" = "$(c cat "$2")" ]
}
body_has() { get "$1" | grep -qF -- "$2"; }
journal_has() { # journal_has PRIORITY TEXT : a line of lbaws.service at exactly this priority
	c journalctl -u lbaws --no-pager -o cat -p "$1..$1" | grep -qF -- "$2"
}
# Every path on the container's root file system, for the leftovers check.
snapshot() {
	c find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \) -prune -o -print |
		sort
}

conf=/etc/lbaws/config.toml

# --- 1 -------------------------------------------------------------------------------
step 1 "dpkg -i: the socket listens, the service waits"
snapshot >"$work/before.txt"
if c dpkg -i /debs/lbaws.deb >"$work/dpkg-i.log" 2>&1; then ok "dpkg -i lbaws.deb"; else
	bad "dpkg -i lbaws.deb"
	cat "$work/dpkg-i.log"
fi
check "lbaws.socket is active" active lbaws.socket
check "lbaws.socket is enabled" test "$(c systemctl is-enabled lbaws.socket)" = enabled
check "lbaws.service is inactive" inactive lbaws.service
check "lbaws-accept.socket is not enabled" test "$(c systemctl is-enabled lbaws-accept.socket)" = disabled
bound_by_pid1() { c ss -Hltnp "sport = :$1" | grep -q 'pid=1,'; }
check "port 8080 is bound by systemd (pid 1)" bound_by_pid1 8080
check "system user lbaws exists" c getent passwd lbaws
check "default page copied to /var/www/lbaws" c cmp /usr/share/lbaws/www/index.html /var/www/lbaws/index.html
if out=$(c systemd-analyze verify --man=no lbaws.socket lbaws.service lbaws-accept.socket lbaws-accept@.service 2>&1) && [ -z "$out" ]; then
	ok "systemd-analyze verify on the installed units: clean"
else
	bad "systemd-analyze verify on the installed units: $out"
fi
exposure=$(c systemd-analyze security lbaws.service 2>/dev/null | sed -n 's/.*Overall exposure level for lbaws.service: \([0-9.]*\).*/\1/p')
check "systemd-analyze security lbaws.service (installed): ${exposure:-?} <= 2.0" \
	awk -v l="${exposure:-99}" 'BEGIN { exit !(l <= 2.0) }'

# --- 2 -------------------------------------------------------------------------------
step 2 "first connection: socket activation"
check "curl http://127.0.0.1:8080/ returns the default page" body_is http://127.0.0.1:8080/ /var/www/lbaws/index.html
check "lbaws.service is now active" wait_for 10 active lbaws.service
served_status() { prop lbaws.service StatusText | grep -Eq '^lbaws [^:]+: [0-9]+ active, [0-9]+ waiting, [0-9]+ parked; [1-9][0-9]* served, [0-9]+ refused'; }
# STATUS= is sent at most once a second.
check "StatusText shows the live counts" wait_for 5 served_status
say "       StatusText=$(prop lbaws.service StatusText)"
pid1=$(prop lbaws.service MainPID)
check "MainPID $pid1 runs as user lbaws" test "$(c ps -o user= -p "$pid1" 2>&1 | tr -d ' ')" = lbaws
check "lbaws.service Type=notify, NotifyAccess=main" test "$(prop lbaws.service Type)/$(prop lbaws.service NotifyAccess)" = notify/main

# --- 3 -------------------------------------------------------------------------------
step 3 "reload: a new route, then a broken edit"
c cp "$conf" /root/config.toml.orig
# The shipped access log file (if any); this reload moves the access log to
# stderr, i.e. the journal, so that step 4 sees access lines in both places.
access_file=$(c sed -n 's|^access *= *"\(/[^"]*\)".*|\1|p' "$conf")
[ -n "$access_file" ] && c sed -i 's|^access *= *".*"|access = "stderr"|' "$conf"
# A CGI script that says where its stdin (the request body) is kept, and its size.
cgi_dir=/srv/lbaws-e2e-cgi
c mkdir -p "$cgi_dir"
c sh -c "cat >$cgi_dir/body.sh" <<'EOF'
#!/bin/sh
printf 'Content-Type: text/plain\n\n'
readlink /proc/self/fd/0
wc -c
EOF
c chmod 755 "$cgi_dir/body.sh"
c sh -c "cat >>$conf" <<EOF

# added by tests/e2e-systemd.sh
[[route]]
prefix = "/e2e-reload"
respond = { status = 200, body = "reloaded route\n", content_type = "text/plain" }

[[route]]
prefix = "/e2e-cgi"
cgi = { script = "$cgi_dir/body.sh" }
EOF
check "systemctl reload lbaws" c systemctl reload lbaws
# `systemctl reload` returns once kill(1) has run, not when lbaws has reloaded.
check "the new route answers" wait_for 10 body_has http://127.0.0.1:8080/e2e-reload "reloaded route"
post_body() { # post_body BYTES : what body.sh answers to a body of BYTES zeros
	c sh -c "head -c $1 /dev/zero | curl -sS --max-time 5 --data-binary @- http://127.0.0.1:8080/e2e-cgi"
}
small_body=$(post_body 5)
big_body=$(post_body 70000)
say "       5 bytes: $(echo "$small_body" | tr '\n' ' '); 70000 bytes: $(echo "$big_body" | tr '\n' ' ')"
check "CGI: a 5-byte body reaches the script from memory" \
	test "$small_body" = "$(printf '/memfd:lbaws-body (deleted)\n5')"
big_ok() { [[ $big_body == "/var/tmp/#"*" (deleted)"$'\n'"70000" ]]; }
check "CGI: a 70000-byte body reaches the script from an unlinked file in /var/tmp" big_ok
check "same MainPID after the reload ($pid1)" test "$(prop lbaws.service MainPID)" = "$pid1"
check "lbaws.service still active" active lbaws.service
c cp "$conf" /root/config.toml.good
# The broken line: a status out of range, at a known line and column.
broken_line=$(($(c sh -c "wc -l <$conf") + 3))
c sh -c "cat >>$conf" <<'EOF'

[[route]]
respond = { status = 42 }
prefix = "/broken"
EOF
broken_col=22
check "systemctl reload lbaws (broken file)" c systemctl reload lbaws
check "journal: config.toml:$broken_line:$broken_col named" \
	wait_for 10 journal_has 3 "reload failed, keeping the running configuration: $conf:$broken_line:$broken_col:"
say "       $(c journalctl -u lbaws --no-pager -o cat -p 3..3 | grep -F 'reload failed' | tail -n 1)"
check "the old configuration still serves /e2e-reload" body_has http://127.0.0.1:8080/e2e-reload "reloaded route"
check "the old configuration still serves the default page" body_is http://127.0.0.1:8080/ /var/www/lbaws/index.html
check "same MainPID after the failed reload" test "$(prop lbaws.service MainPID)" = "$pid1"
status_has() { prop lbaws.service StatusText | grep -qF -- "$1"; }
check "StatusText reports the failed reload" wait_for 5 status_has "reload failed: $conf:$broken_line:$broken_col:"
c cp /root/config.toml.good "$conf"

# --- 4 -------------------------------------------------------------------------------
step 4 "journal: lines and priorities"
check "start line at info (6): 'ready: pid $pid1'" journal_has 6 "ready: pid $pid1"
check "listening line at info (6)" journal_has 6 "listening on [::]:8080 (http) [from systemd]"
check "reload line at info (6): 'SIGHUP: reloading configuration'" journal_has 6 "SIGHUP: reloading configuration from $conf"
check "reload done at info (6): 'reloaded configuration from'" journal_has 6 "reloaded configuration from $conf"
check "failed reload at err (3)" journal_has 3 "reload failed, keeping the running configuration"
raw_prefix() { c journalctl -u lbaws --no-pager -o cat | grep -q '^<[0-7]>'; }
check "no raw <N> prefix reached the journal" not raw_prefix
if [ -n "$access_file" ]; then
	check "access log file $access_file is owned by lbaws" test "$(c stat -c %U "$access_file")" = lbaws
	check "access log file has step 2's request" \
		c grep -qE '^(::ffff:)?127\.0\.0\.1 - - \[[^]]+\] "GET / HTTP/1\.1" 200 [0-9]+ "-" "curl/' "$access_file"
	check "access lines in the journal at info (6) after the reload to stderr" \
		journal_has 6 '"GET /e2e-reload HTTP/1.1" 200 15 "-" "curl/'
else
	skipped "access log: off in the shipped configuration ([log] access)"
fi

# --- 5 -------------------------------------------------------------------------------
step 5 "stop and socket activation again"
check "systemctl stop lbaws.service" c systemctl stop lbaws.service
check "lbaws.service inactive" inactive lbaws.service
check "stopped gracefully (Result=success, exit 0)" test "$(prop lbaws.service Result)/$(prop lbaws.service ExecMainStatus)" = success/0
check "journal: graceful stop on SIGTERM" journal_has 6 "SIGTERM: stopping gracefully"
check "lbaws.socket still active" active lbaws.socket
check "the next connection is served" body_has http://127.0.0.1:8080/e2e-reload "reloaded route"
check "lbaws.service started again" wait_for 10 active lbaws.service
pid2=$(prop lbaws.service MainPID)
check "new MainPID ($pid1 -> $pid2)" test "$pid2" != "$pid1" -a "$pid2" != 0
# The upgrade path of the maintainer scripts: installing the package again
# restarts the running service and keeps the edited conffile.
if c dpkg -i /debs/lbaws.deb >"$work/dpkg-i2.log" 2>&1; then ok "dpkg -i again (upgrade path)"; else
	bad "dpkg -i again (upgrade path)"
	cat "$work/dpkg-i2.log"
fi
new_pid() { local p; p=$(prop lbaws.service MainPID); [ "$p" != 0 ] && [ "$p" != "$pid2" ]; }
check "lbaws.service restarted by the upgrade" wait_for 10 new_pid
check "lbaws.socket and lbaws.service active after the upgrade" test "$(c systemctl is-active lbaws.socket lbaws.service | tr '\n' ' ')" = "active active "
check "the edited conffile was kept" body_has http://127.0.0.1:8080/e2e-reload "reloaded route"
check "systemctl stop lbaws.socket lbaws.service" c systemctl stop lbaws.socket lbaws.service
check "lbaws.socket inactive" inactive lbaws.socket
check "lbaws.service inactive" inactive lbaws.service
check "nothing listens on 8080" wait_for 5 not_listening 8080
check "a connection to 8080 is refused" not get http://127.0.0.1:8080/

# --- 6 -------------------------------------------------------------------------------
step 6 "Accept=yes: one instance per connection"
check "systemctl start lbaws-accept.socket" c systemctl start lbaws-accept.socket
check "port 8081 listens" wait_for 5 listening 8081
check "curl http://127.0.0.1:8081/ returns the default page" body_is http://127.0.0.1:8081/ /var/www/lbaws/index.html
instance_ran() { c journalctl --no-pager -o cat -u 'lbaws-accept@*' | grep -q 'Started lbaws-accept@'; }
check "an lbaws-accept@ instance served it" wait_for 10 instance_ran
say "       $(c journalctl --no-pager -o cat -u 'lbaws-accept@*' | grep 'Started lbaws-accept@' | tail -n 1)"
no_instances() { [ -z "$(c systemctl list-units --no-legend --all 'lbaws-accept@*')" ]; }
check "the instance is gone afterwards (CollectMode=inactive-or-failed)" wait_for 10 no_instances
instance_failed() { c journalctl --no-pager -o cat -u 'lbaws-accept@*' | grep -qi 'failed'; }
check "no instance failed" not instance_failed
check "lbaws.service was not involved" inactive lbaws.service

# --- 7 -------------------------------------------------------------------------------
step 7 "dpkg --purge while everything runs"
# Everything running as lbaws when the package goes: both sockets and the service.
c systemctl start lbaws.socket
get -o /dev/null http://127.0.0.1:8080/
check "lbaws.service running before the purge" wait_for 10 active lbaws.service
if c dpkg --purge lbaws >"$work/dpkg-purge.log" 2>&1; then ok "dpkg --purge lbaws"; else
	bad "dpkg --purge lbaws"
	cat "$work/dpkg-purge.log"
fi
sed 's/^/       /' "$work/dpkg-purge.log"
# shellcheck disable=SC2016 # ${...} is dpkg-query's format, not the shell's
pkg_gone() {
	local st
	st=$(c dpkg-query -W -f='${db:Status-Status}' lbaws 2>/dev/null)
	[ -z "$st" ] || [ "$st" = not-installed ]
}
check "package is purged" pkg_gone
no_units() {
	[ -z "$(c systemctl list-unit-files --no-legend 'lbaws*')" ] &&
		! c systemctl list-units --no-legend --all 'lbaws*' | grep -qv 'not-found'
}
check "no lbaws unit left" no_units
check "user lbaws gone" not c getent passwd lbaws
check "group lbaws gone" not c getent group lbaws
check "nothing listens on 8080" not listening 8080
check "nothing listens on 8081" not listening 8081
check "no lbaws process left" not c pgrep -f /usr/sbin/lbaws
c rm -rf "$cgi_dir"
snapshot >"$work/after.txt"
# New paths that the purge left behind, less what the system itself writes meanwhile.
comm -13 "$work/before.txt" "$work/after.txt" |
	grep -Ev '^/var/log/(journal|dpkg\.log|alternatives\.log)|^/var/lib/systemd/(random-seed|timers|catalog)|^/var/cache/(debconf|ldconfig|man)/|^/var/lib/dpkg/|^/etc/(passwd|group|shadow|gshadow|subuid|subgid)-$|^/root/config\.toml\.(orig|good)$' \
	>"$work/left.txt" || true
if [ -s "$work/left.txt" ]; then
	bad "files left after the purge:"
	sed 's/^/       /' "$work/left.txt"
else
	ok "no file left outside dpkg's list"
fi

# --- summary --------------------------------------------------------------------------
say ""
say "== summary ($((SECONDS - START)) s)"
for st in "${steps[@]}"; do
	line=$(printf '  step %s  %-52s %3d ok' "$st" "${step_title[$st]}" "${step_pass[$st]:-0}")
	[ "${step_fail[$st]:-0}" -gt 0 ] && line+=", ${step_fail[$st]} FAILED"
	[ "${step_skip[$st]:-0}" -gt 0 ] && line+=", ${step_skip[$st]} skipped"
	say "$line"
done
if [ "$fail" -gt 0 ]; then
	for f in "${failures[@]}"; do say "  FAIL step $f"; done
	dump_journal
fi
say "e2e-systemd: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
