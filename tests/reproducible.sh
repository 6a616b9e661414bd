#!/bin/sh
# Two package builds from the same tree give the same bytes (issue 21):
# packaging/build-deb twice, the executable linked anew for the second
# (`cargo clean` of lbaws's own release artifacts: its dependencies stay
# built), then cmp. On a difference, says which files in the packages differ.
# SOURCE_DATE_EPOCH comes from the changelog (packaging/build-deb).
# Run from anywhere; needs cargo-deb (tests/package-checks.sh installs it) and
# writes nothing into the source tree (the packages go to target/).
set -eu
cd "$(dirname "$0")/.."
if ! command -v cargo-deb >/dev/null && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo-deb" ]; then
	echo "installing: cargo-deb"
	cargo install cargo-deb --locked --quiet
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

deb=$(packaging/build-deb | tail -n 1)
cp "$deb" "$work/first.deb"
cargo clean --release --target x86_64-unknown-linux-gnu -p lbaws --quiet
deb=$(packaging/build-deb | tail -n 1)
cp "$deb" "$work/second.deb"

if cmp -s "$work/first.deb" "$work/second.deb"; then
	echo "ok: reproducible: two builds of $(basename "$deb"), the same $(wc -c <"$deb") bytes"
	exit 0
fi
echo "FAIL: two builds of $(basename "$deb") differ" >&2
for n in first second; do
	mkdir "$work/$n"
	dpkg-deb -R "$work/$n.deb" "$work/$n"
	dpkg-deb -c "$work/$n.deb" >"$work/$n.list"
done
diff -r "$work/first" "$work/second" >&2 || true
diff "$work/first.list" "$work/second.list" >&2 || true
exit 1
