#!/usr/bin/env bash
# `npm run image`: the .deb (`npm run package`), then the container image from it, tagged
# localhost/xoauth2-bridge:VERSION; prints the tag. The base image (Containerfile FROM) is
# pulled when missing; XOAUTH2_BRIDGE_PODMAN_FLAGS adds podman build flags (.ci/run, where no
# registry is reachable: --isolation chroot --pull=never on a locally made base);
# XOAUTH2_BRIDGE_DEB=FILE takes that .deb instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(node -p 'require("./package.json").version')
if [[ -n ${XOAUTH2_BRIDGE_DEB:-} ]]; then
  # A .deb already built from this tree (.ci/run, after `npm run package`): no second build.
  echo "image: using $XOAUTH2_BRIDGE_DEB" >&2
  if [[ ! $XOAUTH2_BRIDGE_DEB -ef build/$(basename "$XOAUTH2_BRIDGE_DEB") ]]; then
    mkdir -p build && rm -f build/xoauth2-bridge_*_amd64.deb && cp "$XOAUTH2_BRIDGE_DEB" build/
  fi
else
  echo "image: building the .deb (npm run package)" >&2
  env -u OUT_DIR bash packaging/deb/build.sh >/dev/null   # into build/, where the Containerfile takes it
fi
echo "image: podman build of localhost/xoauth2-bridge:$version (Containerfile: the .deb on debian:bookworm-slim)" >&2
# --format docker: the OCI format has no HEALTHCHECK. Its step lines go to stderr: stdout's
# one line is the tag (.ci/run reads it).
# shellcheck disable=SC2086 # the flags are words
podman build --pull=missing --format docker ${XOAUTH2_BRIDGE_PODMAN_FLAGS:-} -t "localhost/xoauth2-bridge:$version" -f Containerfile . >&2
echo "localhost/xoauth2-bridge:$version"
