#!/usr/bin/env bash
# Keeps a cargo target dir that outlives its clones (CI's ~/.cache/weir/target) from filling
# the disk: every clone builds the workspace crates anew (their path is in the hash), so old
# test binaries and libraries of those crates pile up. When the disk holding the target dir has
# less than $WEIR_MIN_FREE_GB (default 20) free, this deletes half-written files, incremental
# caches, and all but the newest $WEIR_KEEP_BUILDS (default 3) builds of each artifact name in
# debug/deps: a dependency's check (clippy) and build (test) artifacts and one more variant
# survive, so a pruned cache still builds warm; old clones' test binaries go.
set -euo pipefail
TARGET=${1:?usage: prune-target.sh TARGET_DIR}
MIN_FREE_GB=${WEIR_MIN_FREE_GB:-20}
KEEP=${WEIR_KEEP_BUILDS:-3}
[ -d "$TARGET" ] || exit 0
free_gb() { df -P -BG "$TARGET" | awk 'NR==2 { sub("G", "", $4); print $4 }'; }
[ "$(free_gb)" -ge "$MIN_FREE_GB" ] && exit 0
echo "prune-target: $(free_gb) GB free under $TARGET (< $MIN_FREE_GB GB): pruning old builds"
rm -rf "$TARGET"/debug/incremental "$TARGET"/release/incremental
for deps in "$TARGET"/debug/deps "$TARGET"/release/deps; do
  [ -d "$deps" ] || continue
  find "$deps" -maxdepth 1 -name '*.tmp*' -delete
  # name-hash[.ext]: keep the newest $KEEP files of each (name, ext).
  python3 - "$deps" "$KEEP" <<'PY'
import os, re, sys
deps, keep = sys.argv[1], int(sys.argv[2])
groups = {}
for f in os.listdir(deps):
    m = re.match(r"^(.*)-[0-9a-f]{16}(\..*)?$", f)
    if not m:
        continue
    path = os.path.join(deps, f)
    groups.setdefault((m.group(1), m.group(2) or ""), []).append((os.path.getmtime(path), path))
for files in groups.values():
    files.sort(reverse=True)
    for _, path in files[keep:]:
        os.remove(path)
PY
done
echo "prune-target: $(free_gb) GB free"
