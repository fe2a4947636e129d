#!/usr/bin/env bash
# Keeps a cargo target dir that outlives its clones (CI's ~/.cache/weir/target) from filling
# the disk: every clone builds the workspace crates anew (their path is in the hash), so old
# test binaries and libraries of those crates pile up. When the disk holding the target dir has
# less than $WEIR_MIN_FREE_GB (default 40) free, this deletes half-written files, incremental
# caches, and all but the newest build of each artifact name in debug/deps. Dependencies keep
# their newest build and are not rebuilt.
set -euo pipefail
TARGET=${1:?usage: prune-target.sh TARGET_DIR}
MIN_FREE_GB=${WEIR_MIN_FREE_GB:-40}
[ -d "$TARGET" ] || exit 0
free_gb() { df -P -BG "$TARGET" | awk 'NR==2 { sub("G", "", $4); print $4 }'; }
[ "$(free_gb)" -ge "$MIN_FREE_GB" ] && exit 0
echo "prune-target: $(free_gb) GB free under $TARGET (< $MIN_FREE_GB GB): pruning old builds"
rm -rf "$TARGET"/debug/incremental "$TARGET"/release/incremental
for deps in "$TARGET"/debug/deps "$TARGET"/release/deps; do
  [ -d "$deps" ] || continue
  find "$deps" -maxdepth 1 -name '*.tmp*' -delete
  # name-hash[.ext]: keep the newest file of each (name, ext).
  python3 - "$deps" <<'PY'
import os, re, sys
deps = sys.argv[1]
groups = {}
for f in os.listdir(deps):
    m = re.match(r"^(.*)-[0-9a-f]{16}(\..*)?$", f)
    if not m:
        continue
    path = os.path.join(deps, f)
    groups.setdefault((m.group(1), m.group(2) or ""), []).append((os.path.getmtime(path), path))
for files in groups.values():
    files.sort(reverse=True)
    for _, path in files[1:]:
        os.remove(path)
PY
done
echo "prune-target: $(free_gb) GB free"
