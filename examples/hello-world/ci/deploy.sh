#!/usr/bin/env bash
# Deploys the release and follows the rollout (kubernaut deploy waits for the verdict
# by default); the exit code is the verdict: 0 succeeded, 1 failed, 70 timed out,
# 2 bad input or refused (401/403), 3 Kubernaut unreachable or failing, 4 another
# deploy of the service is active on the target. See docs/cli.md.
# KUBERNAUT_TOKEN is read by kubernaut itself and never printed.
set -euo pipefail
: "${VERSION:?the version}"
: "${KUBERNAUT_URL:?the Kubernaut server}"
: "${KUBERNAUT_TOKEN:?an API token with the deployer role for the target (Jenkins credentials kubernaut-token)}"
exec kubernaut deploy \
  --service "${SERVICE:-hello-world}" \
  --version "$VERSION" \
  --cluster "${CLUSTER:?the cluster}" \
  --namespace "${NAMESPACE:?the namespace}" \
  --timeout "${DEPLOY_TIMEOUT:-10m}"
