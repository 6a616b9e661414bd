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
#      StatusText has the live counts, its MainPID runs as lbaws; `lbaws
#      status` prints the page (the shipped configuration's status route)
#   3. reload with a new route and CGI routes (same MainPID): a request
#      body over 64 KiB reaches its script from an unlinked file in /var/tmp
#      (the service's own, PrivateTmp=), a small one from memory; `systemctl
#      reload` of a broken edit fails; SIGHUP with it keeps the old
#      configuration and the journal names config.toml:LINE:COL; the
#      sandbox is in force in full, and a CGI script can neither signal
#      lbaws nor read outside its route
#   4. the journal has the start and reload lines at their priorities; the
#      access log file has the requests, and so has the journal once a
#      reload moved the access log to stderr
#   5. stopping the service: the next connection starts it again; installing
#      the package again (the upgrade path) upgrades it in place (same
#      MainPID, lbaws.socket untouched) and keeps the edited conffile;
#      stopping socket and service: nothing listens
#   6. Accept=yes: lbaws-accept.socket, one instance per connection
#   7. dpkg --purge: units, user and listeners gone, no file left behind
#   8. version N, then N+1 installed under load (request loops, connections
#      queued behind max_connections = 2, a keep-alive client, a 60 MB
#      download at 2 MB/s): no failed request, the download intact, the same
#      MainPID, lbaws.socket never restarted, N+1 serving; then the same with
#      SIGUSR2 sent directly
#   9. a refused upgrade (broken configuration): dpkg succeeds and says why,
#      the running version serves on; from a version before 0.2.0: a restart
#      of lbaws.service only; abort-upgrade and the old scripts' upgrade
#      calls touch nothing
#  10. broken configuration: `systemctl reload` fails; a restart fails (the
#      error at priority err), yet the port listens for a whole minute (no
#      start limit) and serves once the file is fixed; try-reload-or-restart
#      of a stopped service is a no-op
#  11. logrotate: the access log is rotated and lbaws writes to the new file
#  12. idle exit: with exit_idle_after, lbaws.service ends by itself (success)
#      and the next connection starts a new one
#  watchdog. two upgrades in place within one watchdog interval under the
#      packaged unit (WatchdogSec=30s), placed so that an image that waited
#      half the interval before its first ping would have been killed: each
#      new image pings at once (WatchdogTimestamp moves), the service lives
#      on a whole interval later with the same MainPID, and the supervisor
#      runs under as many seccomp filters as before
#  13. remove, then install again: lbaws.socket listens, the inetd pair can be
#      enabled; purge
#  14. policy-rc.d forbids (exit 101): installing starts nothing, an upgrade
#      upgrades nothing in place, and both say so; a taken port: dpkg
#      succeeds and names the address and the cause, systemd logs it at err,
#      and once the port is free the socket starts and serves
#
# Usage (as root, from anywhere):  bash tests/e2e-systemd.sh [PATH.deb]
# Without an argument the .deb is built with packaging/build-deb. Version N+1 (the
# same tree with LBAWS_VERSION_SUFFIX=+next, Debian version UPSTREAM+next-1)
# is built with packaging/build-deb into $LBAWS_E2E_CACHE/cargo-target.
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
INCLUDE=systemd,systemd-sysv,dbus,curl,iproute2,procps,logrotate
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
	say "== packaging/build-deb"
	packaging/build-deb >"$work/cargo-deb.log" 2>&1 || { cat "$work/cargo-deb.log"; die "packaging/build-deb failed"; }
	deb=$(tail -n 1 "$work/cargo-deb.log")
fi
[ -f "$deb" ] || die "no package at $deb"
cp "$deb" "$work/debs/lbaws.deb"
say "package: $deb"
# Version N+1, from the same tree: what an upgrade installs.
ver_n=$(dpkg-deb -f "$deb" Version)
upstream_n=${ver_n%-*}
ver_next=$upstream_n+next-1
say "== cargo deb: version N+1 ($ver_next)"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet || die "cannot install cargo-deb"
if ! LBAWS_VERSION_SUFFIX=+next CARGO_TARGET_DIR=$CACHE/cargo-target \
	packaging/build-deb --deb-version "$ver_next" -o "$work/debs/lbaws-next.deb" \
	>"$work/cargo-deb-next.log" 2>&1; then
	tail -n 30 "$work/cargo-deb-next.log"
	die "cargo deb (version N+1) failed"
fi
say "package N+1: $ver_next"

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
	# nspawn's own seccomp allow-list (systemd 252) lacks Landlock's calls:
	# without them lbaws would report Landlock missing (and test less).
	exec systemd-nspawn -D "$ROOTFS" --boot --register=no --keep-unit --private-network \
		--volatile=overlay --bind-ro="$work/debs:/debs" --machine=lbaws-e2e \
		--system-call-filter='landlock_create_ruleset landlock_add_rule landlock_restrict_self'
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
	# By unit, or by lbaws's identifier: now and then a line of a start was
	# missing from `journalctl -u lbaws` (journald files a line under its
	# unit from the sender's cgroup, and lbaws's supervisor moves into
	# lbaws.service/supervisor at start, for the CGI leaves: the suspect).
	# (Read whole first: grep -q ending early must not fail a writer.)
	local lines
	lines=$({
		c journalctl -u lbaws --no-pager -o cat -p "$1..$1"
		c journalctl -t lbaws --no-pager -o cat -p "$1..$1"
	} 2>/dev/null || true)
	grep -qF -- "$2" <<<"$lines"
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
status_page() { c lbaws status | grep -q '^scoreboard: '; }
check "lbaws status prints the status page (the shipped status route)" status_page
sandbox_line() { c journalctl -u lbaws --no-pager -o cat | grep -m1 -E 'sandbox (best-effort|required|off)'; }
say "       $(sandbox_line)"
check "journal: the sandbox (Landlock, seccomp) is in force under the unit's own filter" \
	journal_has info "sandbox best-effort: Landlock ABI"
sandbox_complete() { sandbox_line | grep -q . && ! sandbox_line | grep -q 'not enforced'; }
check "journal: nothing of the sandbox is left unenforced" sandbox_complete

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
# And one that tries what its sandbox refuses it: signal lbaws (the user's own
# process), read a file the user may read outside its route.
c sh -c "cat >$cgi_dir/probe.sh" <<'EOF'
#!/bin/sh
printf 'Content-Type: text/plain\n\n'
kill -0 "$QUERY_STRING" 2>/dev/null && echo "kill: allowed" || echo "kill: denied"
cat /var/lib/lbaws/default-page.sha256 >/dev/null 2>&1 && echo "read: allowed" || echo "read: denied"
grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status | tr -d '\t'
EOF
c chmod 755 "$cgi_dir/probe.sh"
c sh -c "cat >>$conf" <<EOF

# added by tests/e2e-systemd.sh
[[route]]
prefix = "/e2e-reload"
respond = { status = 200, body = "reloaded route\n", content_type = "text/plain" }

[[route]]
prefix = "/e2e-cgi"
cgi = { script = "$cgi_dir/body.sh" }

[[route]]
prefix = "/e2e-probe"
cgi = { script = "$cgi_dir/probe.sh" }
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
probe_out=$(get "http://127.0.0.1:8080/e2e-probe?$pid1" | tr '\n' ' ')
say "       probe.sh: $probe_out"
check "CGI sandbox: a script cannot signal lbaws nor read outside its route; Seccomp 2, NoNewPrivs 1" \
	test "$probe_out" = "kill: denied read: denied NoNewPrivs:1 Seccomp:2 "
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
check "systemctl reload lbaws (broken file) fails" not c systemctl reload lbaws
status_names() { c systemctl status --no-pager -n 20 lbaws | grep -qF "$conf:$broken_line:$broken_col:"; }
check "systemctl status lbaws names config.toml:$broken_line:$broken_col" status_names
check "same MainPID after the refused reload" test "$(prop lbaws.service MainPID)" = "$pid1"
# lbaws itself, sent SIGHUP with the broken file (as if it broke after the check):
check "systemctl kill -s HUP --kill-whom=main lbaws (broken file)" c systemctl kill -s HUP --kill-whom=main lbaws
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
# upgrades the running service in place and keeps the edited conffile.
sock_since=$(prop lbaws.socket ActiveEnterTimestampMonotonic)
if c dpkg -i /debs/lbaws.deb >"$work/dpkg-i2.log" 2>&1; then ok "dpkg -i again (upgrade path)"; else
	bad "dpkg -i again (upgrade path)"
	cat "$work/dpkg-i2.log"
fi
sed 's/^/       /' "$work/dpkg-i2.log" | grep -F 'lbaws:'
check "postinst: upgraded in place" grep -qF "lbaws: upgraded in place to $upstream_n (pid $pid2" "$work/dpkg-i2.log"
check "same MainPID after the upgrade ($pid2)" test "$(prop lbaws.service MainPID)" = "$pid2"
check "lbaws.socket not restarted by the upgrade" test "$(prop lbaws.socket ActiveEnterTimestampMonotonic)" = "$sock_since"
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

# helpers for the upgrade steps
upgraded_count() { # "upgraded in place" lines of lbaws.service so far
	c journalctl -u lbaws --no-pager -o cat | grep -c 'info: upgraded in place from ' || true
}
# holds SECONDS CMD... : CMD succeeds at every poll for SECONDS (an
# observation over a span of time, not a wait).
holds() {
	local deadline=$((SECONDS + $1))
	shift
	while [ "$SECONDS" -lt "$deadline" ]; do
		"$@" >/dev/null 2>&1 || return 1
		sleep 0.5
	done
}
# maint SCRIPT ARGS... : an installed maintainer script, run as dpkg runs it
maint() {
	c env DPKG_MAINTSCRIPT_PACKAGE=lbaws DPKG_MAINTSCRIPT_NAME="$1" DPKG_MAINTSCRIPT_ARCH=amd64 \
		"/var/lib/dpkg/info/lbaws.$1" "${@:2}"
}
same_pid_socket() { # same_pid_socket PID SOCKET-SINCE
	[ "$(prop lbaws.service MainPID)/$(prop lbaws.socket ActiveEnterTimestampMonotonic)" = "$1/$2" ]
}

# --- 8 -------------------------------------------------------------------------------
step 8 "upgrade in place under load: N to N+1, then SIGUSR2"
if c dpkg -i /debs/lbaws.deb >"$work/dpkg-n.log" 2>&1; then ok "dpkg -i version N ($ver_n)"; else
	bad "dpkg -i version N ($ver_n)"
	cat "$work/dpkg-n.log"
fi
# Two workers at most: the rest of the load waits in lbaws's gate.
c sed -i 's/^max_connections = .*/max_connections = 2/' "$conf"
c sh -c 'head -c 60M /dev/urandom >/var/www/lbaws/big.bin'
big_sum=$(c sha256sum /var/www/lbaws/big.bin | cut -d' ' -f1)
check "first connection served" body_is http://127.0.0.1:8080/ /var/www/lbaws/index.html
check "lbaws.service active" wait_for 10 active lbaws.service
pid_n=$(prop lbaws.service MainPID)
sock_since=$(prop lbaws.socket ActiveEnterTimestampMonotonic)
# The load runs in the container, detached; each part writes its results and
# a .done file, and ends by itself (the stop file, or 120 s).
c sh -c 'cat >/root/load.sh' <<'LOAD'
#!/bin/sh
# load.sh: request loops, a keep-alive client and a throttled download
cd /root && rm -f load.* ka.* dl.* big.out stop
end=$(($(date +%s) + 120))
for i in 1 2 3 4; do
	(
		while [ ! -e stop ] && [ "$(date +%s)" -lt "$end" ]; do
			curl -s -o /dev/null --max-time 30 -w '%{http_code}\n' "http://127.0.0.1:8080/?loop=$i" >>"load.$i" ||
				echo "curl-exit-$?" >>"load.$i"
		done
		touch "load.$i.done"
	) &
done
(
	# one connection, a request every 100 ms (keepalive_timeout is 5 s)
	set --
	n=0
	while [ $n -lt 400 ]; do set -- "$@" "http://127.0.0.1:8080/?ka=$n"; n=$((n + 1)); done
	curl -s --rate 10/s --max-time 100 -w '%{stderr}%{http_code} %{num_connects}\n' "$@" >/dev/null 2>ka.out ||
		echo "curl-exit-$?" >>ka.out
	touch ka.done
) &
(
	curl -s --limit-rate 2M --max-time 100 -o big.out -w '%{http_code}\n' http://127.0.0.1:8080/big.bin >dl.out ||
		echo "curl-exit-$?" >>dl.out
	touch dl.done
) &
wait
LOAD
c sh -c 'setsid sh /root/load.sh </dev/null >/dev/null 2>&1 &'
dl_running() { [ "$(c stat -c %s /root/big.out 2>/dev/null || echo 0)" -gt 4000000 ]; }
check "the download is under way" wait_for 20 dl_running
queued() { prop lbaws.service StatusText | grep -Eq ' [1-9][0-9]* waiting'; }
check "connections wait for a worker (max_connections = 2)" wait_for 10 queued
say "       StatusText=$(prop lbaws.service StatusText)"
n_up=$(upgraded_count)
t0=$SECONDS
if c dpkg -i /debs/lbaws-next.deb >"$work/dpkg-next.log" 2>&1; then
	ok "dpkg -i version N+1 ($ver_next) under load, $((SECONDS - t0)) s"
else
	bad "dpkg -i version N+1 ($ver_next)"
	cat "$work/dpkg-next.log"
fi
grep -F 'lbaws:' "$work/dpkg-next.log" | sed 's/^/       /'
check "postinst: upgraded in place to ${upstream_n}+next" \
	grep -qF "lbaws: upgraded in place to ${upstream_n}+next (pid $pid_n" "$work/dpkg-next.log"
check "same MainPID ($pid_n), lbaws.socket not restarted" same_pid_socket "$pid_n" "$sock_since"
check "StatusText: lbaws ${upstream_n}+next" wait_for 5 status_has "lbaws ${upstream_n}+next: "
check "lbaws --version: lbaws ${upstream_n}+next" test "$(c lbaws --version)" = "lbaws ${upstream_n}+next"
check "journal: one upgrade in place" test "$(upgraded_count)" = $((n_up + 1))
check "the download is still under way" not c test -e /root/dl.done
# The same, asked for directly (the binary is the same file now).
check "systemctl kill -s USR2 --kill-whom=main lbaws" c systemctl kill -s USR2 --kill-whom=main lbaws
up_again() { [ "$(upgraded_count)" = $((n_up + 2)) ] && active lbaws.service; }
check "journal: upgraded in place again" wait_for 30 up_again
check "same MainPID ($pid_n), lbaws.socket not restarted" same_pid_socket "$pid_n" "$sock_since"
load_done() {
	local f
	for f in load.1 load.2 load.3 load.4 ka dl; do c test -e "/root/$f.done" || return 1; done
}
check "the download ends" wait_for 60 c test -e /root/dl.done
c touch /root/stop
check "the load ends" wait_for 60 load_done
check "download: 200" test "$(c cat /root/dl.out)" = 200
check "download: 60 MiB intact (sha256)" test "$(c sha256sum /root/big.out | cut -d' ' -f1)" = "$big_sum"
loop_total=$(c sh -c 'cat /root/load.[1-4]' | wc -l)
loop_bad=$(c sh -c 'cat /root/load.[1-4]' | grep -vcx 200)
ka_total=$(c cat /root/ka.out | wc -l)
ka_bad=$(c cat /root/ka.out | grep -vc '^200 ')
ka_connects=$(c cat /root/ka.out | awk '{ n += $2 } END { print n + 0 }')
say "       request loops: $loop_total requests, $loop_bad failed; keep-alive: $ka_total requests, $ka_bad failed, $ka_connects connection(s)"
check "request loops: no failed request (of $loop_total)" test "$loop_bad" = 0 -a "$loop_total" -gt 20
check "keep-alive client: no failed request (of $ka_total)" test "$ka_bad" = 0 -a "$ka_total" = 400
check "keep-alive client: one connection throughout" test "$ka_connects" = 1
check "no worker ended abnormally (journal, warning)" not journal_has 4 "worker"
check "lbaws.socket never restarted" same_pid_socket "$pid_n" "$sock_since"
c rm -f /var/www/lbaws/big.bin /root/big.out

# --- 9 -------------------------------------------------------------------------------
step 9 "a refused upgrade, an old version, abort-upgrade"
c cp "$conf" /root/config.toml.good
c sh -c "printf '\n[[route]]\nprefix = \"/broken\"\nrespond = { status = 42 }\n' >>$conf"
n_up=$(upgraded_count)
if c dpkg -i /debs/lbaws.deb >"$work/dpkg-refused.log" 2>&1; then ok "dpkg -i $ver_n with a broken configuration: exit 0"; else
	bad "dpkg -i $ver_n with a broken configuration"
fi
grep -F 'lbaws:' "$work/dpkg-refused.log" | sed 's/^/       /'
check "postinst says why the upgrade was refused" grep -qF "lbaws:   upgrade refused: " "$work/dpkg-refused.log"
check "postinst says the old version still serves" grep -qF "still runs and serves (pid $pid_n)" "$work/dpkg-refused.log"
check "journal: upgrade refused at err (3)" journal_has 3 "upgrade refused: "
check "same MainPID ($pid_n), no upgrade happened" test "$(prop lbaws.service MainPID)/$(upgraded_count)" = "$pid_n/$n_up"
check "StatusText: still ${upstream_n}+next" status_has "lbaws ${upstream_n}+next: "
check "StatusText: upgrade refused" status_has "; upgrade refused: "
check "the running version serves" body_is http://127.0.0.1:8080/ /var/www/lbaws/index.html
c cp /root/config.toml.good "$conf"
# From a version before upgrade in place: a restart of the service only.
maint postinst configure 0.1.0-1 >"$work/postinst-old.log" 2>&1
check "postinst configure 0.1.0-1: exit 0" test $? = 0
check "from 0.1.0: lbaws.service restarted" test "$(prop lbaws.service MainPID)" != "$pid_n"
check "from 0.1.0: lbaws.socket not restarted" test "$(prop lbaws.socket ActiveEnterTimestampMonotonic)" = "$sock_since"
check "from 0.1.0: $upstream_n serves" wait_for 5 status_has "lbaws $upstream_n: "
pid_r=$(prop lbaws.service MainPID)
# dpkg's error unwinding, and the old package's scripts during an upgrade.
for call in "prerm upgrade 9.9-1" "postrm upgrade 9.9-1" "prerm failed-upgrade 9.9-1" "postinst abort-upgrade 9.9-1"; do
	# shellcheck disable=SC2086 # the words of the call
	maint $call >"$work/maint.log" 2>&1
	check "$call: exit 0" test $? = 0
	check "$call: same MainPID, lbaws.socket untouched" same_pid_socket "$pid_r" "$sock_since"
done
check "lbaws.service still serves" body_is http://127.0.0.1:8080/ /var/www/lbaws/index.html

# --- 10 ------------------------------------------------------------------------------
step 10 "broken configuration: reload fails, the port stays open"
c sh -c "printf '\n[[route]]\nprefix = \"/broken\"\nrespond = { status = 42 }\n' >>$conf"
check "systemctl reload lbaws fails" not c systemctl reload lbaws
check "the running configuration still serves" body_is http://127.0.0.1:8080/ /var/www/lbaws/index.html
cursor=$(c journalctl -u lbaws -n 0 --show-cursor --quiet | sed -n 's/^-- cursor: //p')
check "systemctl restart lbaws fails" not c systemctl restart lbaws
start_error_at_err() {
	c journalctl -u lbaws --no-pager -o cat -p 3..3 --after-cursor="$cursor" | grep -qE "^error: $conf:[0-9]+:[0-9]+: "
}
check "journal: the failed start's FILE:LINE:COLUMN at err (3)" wait_for 10 start_error_at_err
say "       watching lbaws.socket for a minute"
socket_holds() {
	active lbaws.socket && listening 8080 &&
		[ "$(prop lbaws.service Result)" != start-limit-hit ] && [ "$(prop lbaws.socket Result)" = success ]
}
check "for 60 s: lbaws.socket listens, no start limit hit" holds 60 socket_holds
restarts=$(prop lbaws.service NRestarts)
check "lbaws.service kept trying ($restarts restarts)" test "$restarts" -ge 10
# (systemctl status, between two attempts, shows the log of the next
# attempt only, which is empty: systemd 252 filters it by invocation.)
journal_error() { c journalctl -u lbaws --no-pager -o cat -n 20 | grep -qF "$conf:"; }
check "journalctl -u lbaws shows the error line" wait_for 10 journal_error
say "       $(c journalctl -u lbaws --no-pager -o cat -n 20 | grep -F "$conf:" | tail -n 1)"
c cp /root/config.toml.good "$conf"
check "fixed: the next connection is served" body_is http://127.0.0.1:8080/ /var/www/lbaws/index.html
check "lbaws.service active" wait_for 10 active lbaws.service
check "systemctl stop lbaws.service" c systemctl stop lbaws.service
check "systemctl try-reload-or-restart lbaws (stopped): exit 0" c systemctl try-reload-or-restart lbaws
check "... and lbaws.service stays stopped" inactive lbaws.service

# --- 11 ------------------------------------------------------------------------------
step 11 "logrotate"
access_log=/var/log/lbaws/access.log
check "a request before the rotation" get -o /dev/null "http://127.0.0.1:8080/?before-rotation"
check "the access log has it" wait_for 5 c grep -qF "?before-rotation" "$access_log"
check "logrotate -f /etc/logrotate.d/lbaws" c logrotate -f /etc/logrotate.d/lbaws
check "rotated to $access_log.1" c grep -qF "?before-rotation" "$access_log.1"
check "a request after the rotation" get -o /dev/null "http://127.0.0.1:8080/?after-rotation"
check "lbaws writes to the new $access_log" wait_for 5 c grep -qF "?after-rotation" "$access_log"
check "... and not to the old one" not c grep -qF "?after-rotation" "$access_log.1"
check "the new file belongs to lbaws" test "$(c stat -c %U "$access_log")" = lbaws

# --- 12 ------------------------------------------------------------------------------
step 12 "idle exit under socket activation"
c sed -i '/^\[server\]/a exit_idle_after = "2s"' "$conf"
check "lbaws check accepts exit_idle_after" c lbaws check --config "$conf"
check "systemctl restart lbaws" c systemctl restart lbaws.service
check "a request is served" body_is http://127.0.0.1:8080/ /var/www/lbaws/index.html
idle_pid=$(prop lbaws.service MainPID)
check "lbaws.service ends by itself once idle (MainPID $idle_pid)" wait_for 60 inactive lbaws.service
check "journal: idle for 2s, exiting" wait_for 10 journal_has info "idle for 2s with sockets from systemd: exiting"
check "it ended cleanly (not failed)" test "$(prop lbaws.service Result)" = success
check "lbaws.socket still listens" active lbaws.socket
# The next start runs without the idle exit, so that it stays to be seen.
c sed -i '/^exit_idle_after = "2s"$/d' "$conf"
check "the next connection is served" body_is http://127.0.0.1:8080/ /var/www/lbaws/index.html
check "by a new lbaws.service process" test "$(prop lbaws.service MainPID)" != "$idle_pid" -a "$(prop lbaws.service MainPID)" != 0

# --- CGI limits (issue 24) -----------------------------------------------------------
# A step of its own, written with the CGI limits: the packaged unit delegates
# pids and memory (Delegate=), so each CGI script gets a cgroup v2 leaf of its
# own whose pids.max and memory.max hold its whole tree. Seen from outside:
# the supervisor in .../lbaws.service/supervisor, a running script in
# .../lbaws.service/cgi/s<slot> with the route's limits, a bounded fork bomb
# held there (504, the limit logged) while the site answers, and the leaf
# removed once the request has ended.
step_cgi_limits() {
	step cgi "CGI limits: a cgroup v2 leaf per script, or the rlimits fallback"
	local dir=/srv/lbaws-e2e-limits svc=/sys/fs/cgroup/system.slice/lbaws.service
	c mkdir -p "$dir"
	c sh -c "cat >$dir/hold.sh" <<'EOF'
#!/bin/sh
printf 'Content-Type: text/plain\n\nheld\n'
exec sleep 3.25
EOF
	# Bounded by itself too (a tree of depth 6: at most 127 processes).
	c sh -c "cat >$dir/bomb.sh" <<'EOF'
#!/bin/bash
bomb() {
  [ "$1" -ge 6 ] && exec sleep 60
  while :; do bomb $(($1 + 1)) & bomb $(($1 + 1)) & wait; done
}
bomb 0
EOF
	c chmod 755 "$dir/hold.sh" "$dir/bomb.sh"
	c sh -c "cat >>$conf" <<EOF

# added by tests/e2e-systemd.sh (CGI limits)
[[route]]
prefix = "/e2e-limits/"
cgi = { dir = "$dir", timeout = "3s", limits = { processes = 8, memory = "64MiB" } }
EOF
	check "lbaws check accepts the route" c lbaws check --config "$conf"
	check "systemctl restart lbaws" c systemctl restart lbaws.service
	check "the site answers" body_is http://127.0.0.1:8080/ /var/www/lbaws/index.html
	# Which containment lbaws found: a cgroup v2 leaf per script where the
	# container's systemd runs the unified hierarchy with pids and memory
	# delegated; on a host whose controllers sit in cgroup v1 hierarchies
	# (hybrid), no cgroup can hold them, and lbaws says it falls back to
	# rlimits. Each path is checked for what it promises.
	limits_line() { c journalctl -u lbaws --no-pager -o cat -p info..info | grep -F "CGI limits: " | tail -n 1; }
	check "journal: the CGI limits' line" wait_for 10 limits_line
	local mode=rlimits
	if limits_line | grep -qF "CGI limits: cgroup v2, a leaf per script under $svc/cgi"; then
		mode=cgroup
	fi
	say "       containment: $mode ($(limits_line))"
	local main
	main=$(prop lbaws.service MainPID)
	if [ "$mode" = cgroup ]; then
		check "the supervisor ($main) runs in lbaws.service/supervisor" \
			test "$(c sed -n 's/^0:://p' "/proc/$main/cgroup")" = /system.slice/lbaws.service/supervisor
	else
		check "no cgroup v2 controllers for lbaws here (cgroup v1 or hybrid host)" \
			not c grep -qw pids "/sys/fs/cgroup/system.slice/lbaws.service/cgroup.controllers"
		check "journal: the fallback says why, and what rlimits hold" \
			c sh -c "journalctl -u lbaws --no-pager -o cat | grep -F 'CGI limits: rlimits (' | grep -qF 'RLIMIT_AS'"
	fi
	c curl -sS --max-time 20 -o - http://127.0.0.1:8080/e2e-limits/hold.sh >"$work/hold.out" &
	local held=$!
	holder() { c pgrep -x -f 'sleep 3.25'; }
	check "a script is running" wait_for 10 holder
	local pid cg
	pid=$(holder | head -n 1)
	cg=$(c sed -n 's/^0:://p' "/proc/$pid/cgroup")
	say "       script $pid in $cg"
	if [ "$mode" = cgroup ]; then
		check "the script runs in a leaf of its own" grep -Eq '^/system.slice/lbaws.service/cgi/s[0-9]+$' <<<"$cg"
		check "its pids.max is the route's processes (8)" test "$(c cat "/sys/fs/cgroup$cg/pids.max")" = 8
		check "its memory.max is the route's memory (64MiB)" test "$(c cat "/sys/fs/cgroup$cg/memory.max")" = 67108864
	else
		# RLIMIT_AS = the route's memory, on the script's own process.
		as_limit() { c sed -n 's/^Max address space[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$pid/limits"; }
		check "its address space is limited to the route's memory (64MiB)" test "$(as_limit)" = 67108864
	fi
	wait "$held"
	check "its response came whole" grep -qx held "$work/hold.out"
	leaves_gone() { [ -z "$(c find "$svc/cgi" -mindepth 1 -maxdepth 1 -type d 2>/dev/null)" ]; }
	if [ "$mode" = cgroup ]; then
		check "its leaf is removed once the request has ended" wait_for 10 leaves_gone
	fi
	local code
	code=$(c curl -sS --max-time 20 -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/e2e-limits/bomb.sh)
	check "a fork bomb ends its own request: 504 ($code)" test "$code" = 504
	check "... while the site answers" body_is http://127.0.0.1:8080/ /var/www/lbaws/index.html
	bomb_gone() { ! c pgrep -f "$dir/bomb.sh" >/dev/null; }
	check "... and nothing of it is left" wait_for 10 bomb_gone
	if [ "$mode" = cgroup ]; then
		check "journal: its processes limit refused forks" \
			wait_for 10 journal_has warning "its processes limit (8) refused"
		check "... and its leaf is removed" wait_for 10 leaves_gone
	fi
}
step_cgi_limits

# --- Sites (issue 19) ------------------------------------------------------------------
# A step of its own: the package ships /etc/lbaws/sites.d/default.toml (a
# conffile) and the main config includes the directory. A site is added as an
# admin would: a file in sites.d, lbaws check --explain, systemctl reload; the
# new name gets its site (with its header), any other name the default site;
# a broken edit of that file is refused at its own FILE:LINE:COLUMN and the
# running sites stay; the file removed, a reload drops the site.
step_sites() {
	step sites "sites.d: a site added by a file and a reload"
	local site=/etc/lbaws/sites.d/e2e.toml
	check "default.toml is a conffile" c grep -qx /etc/lbaws/sites.d/default.toml /var/lib/dpkg/info/lbaws.conffiles
	c sh -c "cat >$site" <<'EOF'
[[site]]
names = ["e2e.test", "*.e2e.test"]
headers = { "X-E2E-Site" = "yes" }
[[site.route]]
prefix = "/"
respond = { status = 200, body = "e2e site\n", content_type = "text/plain" }
EOF
	explained() { c lbaws check --explain http://www.e2e.test/ | grep -qF "site:   e2e.test (a wildcard name), at $site:1:1"; }
	check "lbaws check --explain names the new site" explained
	check "systemctl reload lbaws" c systemctl reload lbaws
	e2e_site() { get -H 'Host: www.e2e.test' http://127.0.0.1:8080/ | grep -qx 'e2e site'; }
	check "the new site answers its names" wait_for 10 e2e_site
	e2e_header() { c curl -sS -o /dev/null -D - -H 'Host: e2e.test' http://127.0.0.1:8080/ | grep -qi '^X-E2E-Site: yes'; }
	check "... with its header" e2e_header
	check "another name gets the default site" body_is http://127.0.0.1:8080/ /var/www/lbaws/index.html
	c sed -i 's/status = 200/status = 2000/' "$site"
	check "systemctl reload lbaws refuses a broken site file" not c systemctl reload lbaws
	broken_logged() { c journalctl -u lbaws --no-pager -o cat | grep -qF "$site:6:22: status 2000 out of range"; }
	check "the reload names the site file, line and column" wait_for 10 broken_logged
	check "... and the running sites stay" e2e_site
	c rm -f "$site"
	check "systemctl reload lbaws (the file removed)" c systemctl reload lbaws
	e2e_gone() { get -H 'Host: www.e2e.test' http://127.0.0.1:8080/ | cmp -s - <(c cat /var/www/lbaws/index.html); }
	check "the site is gone: its names get the default site" wait_for 10 e2e_gone
}
step_sites

# --- two upgrades in place within one watchdog interval (issue 18) -------------------
# The packaged unit's WatchdogSec=30s: lbaws pings every 15 s. The upgrades
# come 13 s and 26 s after a regular ping, both within one interval. An
# image that waited half the interval before its first ping (lbaws 0.3.0)
# would have left the watchdog without a ping from then until 41 s: killed
# at 30 s (SIGABRT). Here each new image pings at once.
step_watchdog() {
	step watchdog "two upgrades in place within one watchdog interval"
	check "the unit's watchdog: WatchdogSec=30s" test "$(prop lbaws.service WatchdogUSec)" = 30s
	check "a connection is served" body_is http://127.0.0.1:8080/ /var/www/lbaws/index.html
	check "lbaws.service active" wait_for 10 active lbaws.service
	local pid restarts n_up filters t0 before i
	pid=$(prop lbaws.service MainPID)
	restarts=$(prop lbaws.service NRestarts)
	n_up=$(upgraded_count)
	seccomp_filters() { c sed -n 's/^Seccomp_filters:[[:space:]]*//p' "/proc/$pid/status"; }
	filters=$(seccomp_filters)
	last_ping() { prop lbaws.service WatchdogTimestampMonotonic; }
	before=$(last_ping)
	pinged() { [ "$(last_ping)" != "$before" ]; }
	check "a regular WATCHDOG=1 (WatchdogTimestamp moves)" wait_for 20 pinged
	t0=$(date +%s%N)
	for i in 1 2; do
		# The schedule is the point here: 13 s, then 26 s after that ping.
		sleep "$(awk -v t0="$t0" -v now="$(date +%s%N)" -v at=$((13 * i)) \
			'BEGIN { d = at - (now - t0) / 1e9; print (d > 0 ? d : 0) }')"
		before=$(last_ping)
		check "upgrade $i: systemctl kill -s USR2 --kill-whom=main lbaws" \
			c systemctl kill -s USR2 --kill-whom=main lbaws
		up() { [ "$(upgraded_count)" = $((n_up + i)) ] && active lbaws.service; }
		wait_for 10 up
		check "upgrade $i: upgraded in place, $((($(date +%s%N) - t0) / 1000000)) ms after the ping" up
		check "upgrade $i: the new image pinged at once (WatchdogTimestamp moved)" pinged
	done
	same() { [ "$(prop lbaws.service MainPID)/$(prop lbaws.service NRestarts)" = "$pid/$restarts" ] && active lbaws.service; }
	say "       watching lbaws.service for 35 s (past the interval after the last regular ping)"
	check "for 35 s: active, the same MainPID ($pid), no restart" holds 35 same
	check "journal: no watchdog timeout" not c sh -c 'journalctl -u lbaws --no-pager -o cat | grep -qi "watchdog timeout"'
	check "the supervisor runs under as many seccomp filters as before ($filters)" test "$(seccomp_filters)" = "$filters"
	check "it serves" body_is http://127.0.0.1:8080/ /var/www/lbaws/index.html
}
step_watchdog

# --- 13 ------------------------------------------------------------------------------
step 13 "remove, then install again"
if c dpkg -r lbaws >"$work/dpkg-r.log" 2>&1; then ok "dpkg -r lbaws"; else bad "dpkg -r lbaws"; cat "$work/dpkg-r.log"; fi
check "nothing listens on 8080" wait_for 5 not_listening 8080
check "lbaws-accept.socket masked while removed" test "$(c systemctl is-enabled lbaws-accept.socket 2>&1)" = masked
if c dpkg -i /debs/lbaws.deb >"$work/dpkg-again.log" 2>&1; then ok "dpkg -i again"; else bad "dpkg -i again"; cat "$work/dpkg-again.log"; fi
check "lbaws.socket active" active lbaws.socket
check "port 8080 answers" body_is http://127.0.0.1:8080/ /var/www/lbaws/index.html
check "lbaws-accept.socket no longer masked" test "$(c systemctl is-enabled lbaws-accept.socket 2>&1)" = disabled
check "systemctl enable --now lbaws-accept.socket" c systemctl enable --now lbaws-accept.socket
check "port 8081 answers" body_is http://127.0.0.1:8081/ /var/www/lbaws/index.html
if c dpkg --purge lbaws >"$work/dpkg-purge2.log" 2>&1; then ok "dpkg --purge lbaws"; else
	bad "dpkg --purge lbaws"
	cat "$work/dpkg-purge2.log"
fi
check "package is purged" pkg_gone
check "nothing listens on 8080" wait_for 5 not_listening 8080
check "nothing listens on 8081" wait_for 5 not_listening 8081

# --- 14 ------------------------------------------------------------------------------
step 14 "policy-rc.d forbids; a taken port"
forbid() { c sh -c 'printf "#!/bin/sh\nexit 101\n" >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d'; }
allow() { c rm -f /usr/sbin/policy-rc.d; }
forbid
if c dpkg -i /debs/lbaws.deb >"$work/dpkg-policy.log" 2>&1; then ok "dpkg -i with policy-rc.d forbidding"; else
	bad "dpkg -i with policy-rc.d forbidding"
	cat "$work/dpkg-policy.log"
fi
grep -F 'lbaws:' "$work/dpkg-policy.log" | sed 's/^/       /'
check "postinst says policy-rc.d forbids starting lbaws.socket" grep -qF "policy-rc.d forbids starting lbaws.socket" "$work/dpkg-policy.log"
check "lbaws.socket enabled, not started" test "$(c systemctl is-enabled lbaws.socket)/$(c systemctl is-active lbaws.socket)" = enabled/inactive
check "nothing listens on 8080" not_listening 8080
allow
check "systemctl start lbaws.socket" c systemctl start lbaws.socket
check "the first connection is served" body_is http://127.0.0.1:8080/ /var/www/lbaws/index.html
check "lbaws.service active" wait_for 10 active lbaws.service
pid_p=$(prop lbaws.service MainPID)
sock_since=$(prop lbaws.socket ActiveEnterTimestampMonotonic)
n_up=$(upgraded_count)
forbid
if c dpkg -i /debs/lbaws-next.deb >"$work/dpkg-policy-next.log" 2>&1; then ok "dpkg -i N+1 with policy-rc.d forbidding"; else
	bad "dpkg -i N+1 with policy-rc.d forbidding"
	cat "$work/dpkg-policy-next.log"
fi
grep -F 'lbaws:' "$work/dpkg-policy-next.log" | sed 's/^/       /'
check "postinst says policy-rc.d forbids the upgrade in place" grep -qF "policy-rc.d forbids restarting lbaws.service: not upgraded in place" "$work/dpkg-policy-next.log"
check "same MainPID ($pid_p), lbaws.socket not restarted" same_pid_socket "$pid_p" "$sock_since"
check "no upgrade in place happened" test "$(upgraded_count)" = "$n_up"
check "StatusText: still $upstream_n" wait_for 5 status_has "lbaws $upstream_n: "
allow
# A taken port: another server listens on 8080 when the package is installed.
check "systemctl stop lbaws.socket lbaws.service" c systemctl stop lbaws.socket lbaws.service
if c dpkg --purge lbaws >"$work/dpkg-purge3.log" 2>&1; then ok "dpkg --purge lbaws"; else bad "dpkg --purge lbaws"; cat "$work/dpkg-purge3.log"; fi
squatter=$(c sh -c 'setsid systemd-socket-activate -l 8080 sleep 600 </dev/null >/dev/null 2>&1 & echo $!')
check "another server listens on 8080" wait_for 10 listening 8080
if c dpkg -i /debs/lbaws.deb >"$work/dpkg-taken.log" 2>&1; then ok "dpkg -i with the port taken: exit 0"; else
	bad "dpkg -i with the port taken"
	cat "$work/dpkg-taken.log"
fi
grep -F 'lbaws:' "$work/dpkg-taken.log" | sed 's/^/       /'
check "postinst names the address and the cause" \
	grep -qF "lbaws: lbaws.socket could not listen on [::]:8080: Address already in use" "$work/dpkg-taken.log"
check "lbaws.socket failed" test "$(c systemctl is-failed lbaws.socket)" = failed
socket_err() { c journalctl -u lbaws.socket --no-pager -o cat -p 3..3 | grep -qF "[::]:8080"; }
check "journal: lbaws.socket's failure names [::]:8080 at err (3)" socket_err
c kill "$squatter"
check "the other server is gone" wait_for 10 not_listening 8080
check "systemctl start lbaws.socket" c systemctl start lbaws.socket
check "port 8080 answers" body_is http://127.0.0.1:8080/ /var/www/lbaws/index.html
check "lbaws status prints the status page" status_page
if c dpkg --purge lbaws >"$work/dpkg-purge4.log" 2>&1; then ok "dpkg --purge lbaws"; else bad "dpkg --purge lbaws"; cat "$work/dpkg-purge4.log"; fi
check "nothing listens on 8080" wait_for 5 not_listening 8080

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
