#!/usr/bin/env bash
# `docker build` with the legacy builder (DOCKER_BUILDKIT=0), minus its deprecation notice.
# The legacy builder is deliberate: these machines have no buildx, and nothing may be pulled
# (see `make image`). Docker 28 has no switch for the notice, so this drops exactly its lines
# ("DEPRECATED: The legacy builder is deprecated ..." and the three that follow) from stderr;
# every other line, and docker's exit code, pass through unchanged.
set -euo pipefail
{ DOCKER_BUILDKIT=0 docker build "$@" 2>&1 1>&3 3>&- | awk '
    /^DEPRECATED: The legacy builder is deprecated/ { skip = 3; next }
    skip > 0 { skip--; next }
    { print; fflush() }' >&2; } 3>&1
