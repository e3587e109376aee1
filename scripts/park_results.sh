#!/usr/bin/env bash
# Keep the working tree small for a device call (at most 64 MiB travel, tracked files included; results/ alone is
# ~48 MB): `park` moves results/ to .dev/parked/ (ignored by git), `restore` moves it back. The code without
# results/ is under 1 MB, so the packed v2 shards (carried with `carry`) have the rest of the room.
#   scripts/park_results.sh park     # before the call
#   scripts/park_results.sh restore  # after it (also after a failed call)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  park)
    [ -e .dev/parked/results ] && { echo "park_results: .dev/parked/results exists: restore first"; exit 2; }
    mkdir -p .dev/parked && mv results .dev/parked/results && echo "results/ parked in .dev/parked/results" ;;
  restore)
    [ -e .dev/parked/results ] || { echo "park_results: nothing parked"; exit 2; }
    [ -e results ] && { echo "park_results: results/ exists beside the parked copy; move one of them away"; exit 2; }
    mv .dev/parked/results results && echo "results/ restored" ;;
  *) echo "usage: scripts/park_results.sh park|restore"; exit 2 ;;
esac
