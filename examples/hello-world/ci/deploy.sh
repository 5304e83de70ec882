#!/usr/bin/env bash
# Deploys the release and follows the rollout; the exit code is the verdict:
# 0 succeeded, 1 failed, 70 timed out, 2 bad input, 3 Kubernaut unreachable.
set -euo pipefail
: "${VERSION:?the version}"
: "${KUBERNAUT_URL:?the Kubernaut server}"
exec kubernaut deploy \
  --service "${SERVICE:-hello-world}" \
  --version "$VERSION" \
  --cluster "${CLUSTER:?the cluster}" \
  --namespace "${NAMESPACE:?the namespace}" \
  --timeout "${DEPLOY_TIMEOUT:-10m}" \
  --wait
