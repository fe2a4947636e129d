#!/usr/bin/env bash
# A wasm32 Rust toolchain for building transform guests on machines where rustup cannot add
# targets (like Weir's CI): Debian's rustc-web (a complete recent rustc with its library
# source) unpacked into a private prefix, building the standard library for wasm32 from source
# with -Zbuild-std. Nothing is installed system-wide; rustup's toolchain stays first on PATH.
#
# Users with rustup do not need this: `rustup target add wasm32-unknown-unknown` (see
# docs/transforms.md).
#
# Usage: scripts/setup-wasm-toolchain.sh [PREFIX]   (default: $WEIR_WASM_PREFIX or
#        ~/.cache/weir/rustweb). Prints the env file to source. Idempotent: a prefix that is
#        already set up is reused (delete it to move to a newer rustc-web).
set -euo pipefail
PREFIX=${1:-${WEIR_WASM_PREFIX:-$HOME/.cache/weir/rustweb}}
DEBS=$PREFIX.debs
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo

# A prefix set up before is reused as it is (fast, and works without the network).
if [ -f "$PREFIX/env.sh" ] && [ -f "$PREFIX/.version" ]; then
  echo "$PREFIX/env.sh"
  exit 0
fi
# A stale apt index can offer an old rustc-web (older than arrow's minimum Rust) that has left
# the mirror: refresh it first.
$SUDO apt-get update -qq
V=$(apt-cache policy rustc-web | awk '/Candidate:/{print $2}')
[ -n "$V" ] && [ "$V" != "(none)" ] || { echo "rustc-web is not available from apt" >&2; exit 1; }
LIBSTD=$(apt-cache depends "libstd-rust-web-dev=$V" | awk '/Depends: libstd-rust-web-[0-9]/{print $2}')
LLVM=$(apt-cache depends "$LIBSTD" | awk '/Depends: libllvm[0-9]+/{print $2}')
LLD=lld-${LLVM#libllvm}
rm -rf "$PREFIX" "$DEBS"
mkdir -p "$PREFIX" "$DEBS"
(cd "$DEBS" && apt-get download -qq "rustc-web=$V" "cargo-web=$V" "libstd-rust-web-dev=$V" "$LIBSTD=$V" \
  "rust-web-src=$V" "$LLVM" "$LLD" libgit2-1.5 libhttp-parser2.9 libmbedtls14 libmbedx509-1 libmbedcrypto7)
for d in "$DEBS"/*.deb; do
  case "$(basename "$d")" in
    # Only the library sources are needed to build std for wasm32.
    rust-web-src_*) dpkg-deb --fsys-tarfile "$d" | tar -x -C "$PREFIX" --wildcards './usr/lib/rustlib/src/*' './usr/src/rustc-*/library/*' ;;
    *) dpkg -x "$d" "$PREFIX" ;;
  esac
done
rm -rf "$DEBS"
RW=$PREFIX/usr
HOSTBIN=$RW/lib/rustlib/x86_64-unknown-linux-gnu/bin
mkdir -p "$HOSTBIN"
ln -sf "../../../llvm-${LLVM#libllvm}/bin/lld" "$HOSTBIN/rust-lld"
cat > "$PREFIX/env.sh" <<ENV
# Source this to build wasm32 guests with Debian's rustc-web (build machines only).
export RW=$RW
export PATH=$RW/bin:\$PATH
export LD_LIBRARY_PATH=$RW/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export RUSTC=$RW/bin/rustc RUSTDOC=$RW/bin/rustdoc CARGO=$RW/bin/cargo
export RUSTC_BOOTSTRAP=1
ENV
echo "$V" > "$PREFIX/.version"
echo "$PREFIX/env.sh"
