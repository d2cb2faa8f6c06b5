#!/usr/bin/env bash
# Installs vaultfs on this machine (run as root):
#   $PREFIX/bin/vaultfs                          the program (PREFIX: /usr/local)
#   /sbin/mount.fuse.vaultfs -> $PREFIX/bin/vaultfs
#                                                what mount(8) runs for `-t fuse.vaultfs`
#                                                and fstab lines
#   bash, zsh and fish completions, and a man page per subcommand under $PREFIX/share
# Builds the release binary first (cargo; CARGO_TARGET_DIR is honoured), unless
# VAULTFS_BIN names a binary already built, and installs fuse3 with apt-get when
# fusermount3 is missing. PREFIX and SBIN choose where everything goes.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
SBIN=${SBIN:-/sbin}

if ! command -v fusermount3 >/dev/null; then
  echo "installing: fuse3"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq fuse3 >/dev/null
fi
if [ -n "${VAULTFS_BIN:-}" ]; then
  bin=$VAULTFS_BIN
else
  cargo build --release --locked
  bin=${CARGO_TARGET_DIR:-target}/release/vaultfs
fi
[ -x "$bin" ] || { echo "error: $bin is not an executable" >&2; exit 1; }

install -D -m 755 "$bin" "$PREFIX/bin/vaultfs"
install -d "$SBIN"
ln -sfn "$PREFIX/bin/vaultfs" "$SBIN/mount.fuse.vaultfs"
v=$PREFIX/bin/vaultfs
install -d "$PREFIX/share/bash-completion/completions" "$PREFIX/share/zsh/site-functions" \
  "$PREFIX/share/fish/vendor_completions.d"
"$v" completions bash >"$PREFIX/share/bash-completion/completions/vaultfs"
"$v" completions zsh >"$PREFIX/share/zsh/site-functions/_vaultfs"
"$v" completions fish >"$PREFIX/share/fish/vendor_completions.d/vaultfs.fish"
"$v" man "$PREFIX/share/man/man1" >/dev/null
echo "installed $("$v" --version) in $PREFIX/bin, the mount helper $SBIN/mount.fuse.vaultfs,"
echo "completions and man pages (man vaultfs-mount); example units: contrib/"
