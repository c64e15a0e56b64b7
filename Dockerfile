# syntax=docker/dockerfile:1
#
# One image runs both services; the command picks one:
#   docker run IMAGE gateway          (the default; listens on 8080)
#   docker run IMAGE resource         (listens on 8081)
#   docker run -i IMAGE keys generate (any other `latchkey` CLI command)
#
# bookworm-slim rather than alpine: glibc, so @node-rs/argon2 loads its -gnu binary, the
# build the upstream project tests most; and /bin/sleep for the Kubernetes preStop hook.
ARG NODE_IMAGE=node:20-bookworm-slim

# --- build: dev dependencies, TypeScript -> dist/ ------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
# Dependencies first, so source edits reuse the cached layer. No install scripts: the
# compiler needs none, and some test-only packages would try to compile native code.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY shared/src shared/src
COPY services/gateway/src services/gateway/src
COPY services/resource/src services/resource/src
# The demo page bundle (esbuild): dist/public/
COPY scripts/build-browser.mjs scripts/build-browser.mjs
RUN npm run build

# --- runtime: production dependencies and the compiled code only ---------------------
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
# No production dependency has an install script; refusing them all keeps it that way.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY bin bin
COPY --from=build /app/dist dist
# The app's files stay root-owned and read-only to the process (uid 1000 in node images).
USER node
EXPOSE 8080 8081
# Liveness, not readiness: a Redis outage must not get the container replaced. With PORT
# unset, whichever service this is answers on its default port (gateway 8080, resource 8081).
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "const ports = process.env.PORT ? [process.env.PORT] : ['8080', '8081']; Promise.any(ports.map(p => fetch('http://127.0.0.1:' + p + '/healthz', { signal: AbortSignal.timeout(3000) }).then(r => { if (r.status !== 200) throw new Error(String(r.status)) }))).then(() => process.exit(0), () => process.exit(1))"]
ENTRYPOINT ["node", "bin/latchkey.js"]
CMD ["gateway"]
