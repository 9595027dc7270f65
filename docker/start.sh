#!/bin/sh
# The image's start step (its ENTRYPOINT), also run by the tests. `exec` replaces this shell
# with the server, so SIGTERM from Docker or Kubernetes reaches the server itself, which drains
# accepted requests before it exits. Settings come from REWARDSERVE_* variables.
set -eu
exec rewardserve serve "$@"
