#!/usr/bin/env bash
# `npm run image`: the .deb (`npm run package`), then the container image from it, tagged
# localhost/xoauth2-bridge:VERSION; prints the tag. The base image (Containerfile FROM) is
# pulled when missing; XOAUTH2_BRIDGE_PODMAN_FLAGS adds podman build flags (.ci/run, where no
# registry is reachable: --isolation chroot --pull=never on a locally made base).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(node -p 'require("./package.json").version')
env -u OUT_DIR bash packaging/deb/build.sh >/dev/null   # into build/, where the Containerfile takes it
# --format docker: the OCI format has no HEALTHCHECK.
# shellcheck disable=SC2086 # the flags are words
podman build --pull=missing --format docker ${XOAUTH2_BRIDGE_PODMAN_FLAGS:-} -q -t "localhost/xoauth2-bridge:$version" -f Containerfile . >/dev/null
echo "localhost/xoauth2-bridge:$version"
