# syntax=docker/dockerfile:1

# Tollgate image: a build stage with dev dependencies compiles TypeScript to dist/,
# and a slim runtime stage holds only dist/, production node_modules and the default policy.
# Node 22 is the LTS the image runs (the code also supports Node 20). For reproducible
# releases pin the base by digest too (node:22-bookworm-slim@sha256:...) and let a bot bump it.

FROM node:22-bookworm-slim AS build
WORKDIR /app
# Manifests first so the dependency layer is cached across source edits.
COPY package.json package-lock.json ./
# --ignore-scripts: no install script is needed to compile (only dev tools such as
# esbuild and the shellcheck wrapper have one, and the latter downloads a binary).
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

FROM node:22-bookworm-slim AS runtime
# tini is PID 1: it forwards SIGTERM to node (which then drains) and reaps zombies.
# Not version-pinned: the bookworm base fixes tini at 0.19.0, and pinning Debian's
# rebuild suffix (+bN) would break the build whenever the archive rebuilds it.
# linter ignore=ER0012
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production \
    TOLLGATE_CONFIG=/etc/tollgate/policies.yaml
WORKDIR /app
COPY package.json package-lock.json ./
# No production dependency has an install script; refusing them keeps the image build offline-safe.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
    && npm cache clean --force
COPY --from=build /app/dist ./dist
# `tollgate` on PATH, so the admin CLI runs as `kubectl exec deploy/voice-app -c tollgate -- tollgate blocks`.
RUN chmod 0755 dist/cli.js && ln -s /app/dist/cli.js /usr/local/bin/tollgate
# Default policy; in Kubernetes a ConfigMap is mounted over /etc/tollgate instead.
COPY policies.yaml /etc/tollgate/policies.yaml
# Numeric uid:gid so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
# 8080 = proxy listener (TOLLGATE_LISTEN), 9090 = admin: /healthz, /readyz, /metrics (TOLLGATE_ADMIN).
EXPOSE 8080 9090
# For plain `docker run`; Kubernetes ignores it and uses the probes in k8s/base.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["node", "-e", "const port = (process.env.TOLLGATE_ADMIN || ':9090').split(':').pop(); fetch('http://127.0.0.1:' + port + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1));"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["node", "dist/cli.js", "serve"]
