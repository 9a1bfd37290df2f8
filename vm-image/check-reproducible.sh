#!/bin/bash
# Build the image twice from the same inputs, each in its own fresh directory with its own
# empty cache, and compare the outputs byte for byte (sha256). Exit 0 when they match.
#   make -C vm-image check-reproducible      (about twice a build's time; not run in CI)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
VARIANT=${VARIANT:-}
tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/toolbox-repro.XXXXXX")
# shellcheck disable=SC2064
trap "rm -rf '$tmp'" EXIT

for n in 1 2; do
	mkdir -p "$tmp/$n/work" "$tmp/$n/cache"
	echo "check-reproducible: build $n of 2 (in $tmp/$n)" >&2
	TMPDIR="$tmp/$n/work" TOOLBOX_BUILD_CACHE="$tmp/$n/cache" VARIANT=$VARIANT \
		TOOLBOX_IMAGE_OUT="$tmp/$n/out" "$HERE/build.sh" --rebuild
done
echo "build 1:" >&2
cat "$tmp/1/out/SHA256SUMS" >&2
if cmp -s "$tmp/1/out/SHA256SUMS" "$tmp/2/out/SHA256SUMS"; then
	echo "check-reproducible: the two builds are identical (toolbox.iso, vmlinuz, initrd)" >&2
	exit 0
fi
echo "build 2:" >&2
cat "$tmp/2/out/SHA256SUMS" >&2
echo "check-reproducible: the builds DIFFER" >&2
exit 1
