/**
 * Builds the gateway's Fastify instance from a frozen config. Listening and shutdown live
 * in main.ts; tests call `buildGatewayApp` and `close()` it in teardown.
 */
import type { Registry } from 'prom-client'
import Fastify, { type FastifyInstance } from 'fastify'
import type { DestinationStream } from 'pino'
import { randomUUID } from 'node:crypto'
import { systemClock, type Clock } from '#shared/clock.js'
import { startTracing, traceLogMixin } from '#shared/tracing.js'
import { type GatewayConfig, type RouteConfig, parseRoutes } from './config.js'
import authRoutes from './auth/routes.js'
import type { ClientDirectory } from './identity/clients-file.js'
import type { UserDirectory } from './identity/user-directory.js'
import { createLoginLimiter, MemoryAttemptCounter, RedisAttemptCounter, type AttemptCounter } from './auth/login-limiter.js'
import oauthRoutes from './oauth/routes.js'
import { ClientAssertionVerifier } from './oauth/client-assertion.js'
import { ClientAuthenticator } from './oauth/client-auth.js'
import { createClientAuthThrottle } from './oauth/client-auth-limiter.js'
import { TokenExchange } from './oauth/token-exchange.js'
import { type JtiReplayStore, MemoryJtiReplayStore } from './oauth/jti-replay-store.js'
import { RedisJtiReplayStore } from './oauth/redis-jti-replay-store.js'
import metricsPlugin, { createGatewayMetrics, type GatewayMetrics } from './ops/metrics.js'
import { AccessTokenIssuer } from './keys/access-token.js'
import { createGatewayVerifier } from './auth/bearer.js'
import jwksRoute from './keys/jwks-route.js'
import { FastLane } from './proxy/fast-lane.js'
import { RouteTable, assertRoutes } from './proxy/route-table.js'
import { FileReloader } from './ops/reloader.js'
import adminRoutes from './ops/admin-routes.js'
import proxyPlugin from './proxy/plugin.js'
import { demoPagePlugin } from './ui/demo-page.js'
import oidcRoutes from './identity/oidc/routes.js'
import { ProviderRegistry } from './identity/oidc/provider-registry.js'
import { parseProvidersText } from './identity/oidc/providers-file.js'
import { checkIdpTokenKey, IdpTokenSeal } from './identity/oidc/idp-token-seal.js'
import { NativeSignIn } from './identity/oidc/native-sign-in.js'
import { MemorySignInStateStore, RedisSignInStateStore } from './identity/oidc/sign-in-state.js'
import { MemoryFederatedLinks, RedisFederatedLinks } from './identity/oidc/federated-links.js'
import type { SigningKeys } from './keys/signing-keys.js'
import { type ConfigFiles, loadConfigFiles } from './ops/config-files.js'
import { frameworkErrors, installErrorHandling } from './ops/error-handler.js'
import { lazyRequestLogger } from './ops/request-logger.js'
import { createGatewayEvents, type GatewayEvents } from './ops/events.js'
import healthRoutes, { type Readiness } from './ops/health-routes.js'
import type { FamilyLimits, FamilyStore } from './sessions/family-store.js'
import { MemoryFamilyStore } from './sessions/memory-family-store.js'
import { RedisFamilyStore } from './sessions/redis-family-store.js'
import { RefreshTokenKey } from './sessions/refresh-token.js'
import { tracedFamilyStore } from './sessions/traced-family-store.js'
import { connectRedis, createRedisClient } from './sessions/redis-connection.js'
import { LocalRevokedSessions, RedisRevocationBus, REVOCATION_SLACK_MS, type RevokedSessions } from './sessions/revocation.js'
import { SessionService, type EdgeRevocation } from './sessions/service.js'

/** Server-side timeouts: a slow-loris client must not hold a socket forever. */
export const CONNECTION_TIMEOUT_MS = 10_000
export const REQUEST_TIMEOUT_MS = 30_000
export const KEEP_ALIVE_TIMEOUT_MS = 72_000
/** Default body limit for routes that do not set their own (proxied bodies stream past it). */
export const BODY_LIMIT_BYTES = 1024 * 1024

/** Request ids, for Fastify and for the proxy's fast lane alike. */
const genReqId = (): string => randomUUID()

export interface GatewayDeps {
  readonly clock: Clock
  readonly store: FamilyStore
  readonly keys: SigningKeys
  readonly users: UserDirectory
  readonly clients: ClientDirectory
  readonly metrics: GatewayMetrics
  readonly events: GatewayEvents
  /** Sessions revoked within the last access TTL, known to this replica. */
  readonly revoked: RevokedSessions
  /** Tells every replica (this one included) of revoked sessions; `revoked` is what it feeds. */
  readonly edge: EdgeRevocation
  /** Client-assertion ids already used (RFC 7523 §3), until their exp. */
  readonly replay: JtiReplayStore
}

export interface BuildGatewayOptions {
  /** Replace parts (tests inject a clock, a store, keys). */
  readonly deps?: Partial<GatewayDeps>
  /** Where JSON log lines go (tests capture them); default stdout. */
  readonly logStream?: DestinationStream
  /** What GET /metrics answers, given this app's registry (a pool worker answers for the whole pool); default the registry itself. */
  readonly metricsSource?: (registry: Registry) => () => Promise<string>
}

export interface GatewayInfo {
  /** The generated demo user's password when no USERS_FILE is set; printed once by the CLI. */
  readonly demoPassword: string | undefined
  readonly readiness: Readiness
  readonly deps: GatewayDeps
  /** Every session change goes through here (routes, admin API, tests). */
  readonly sessions: SessionService
  /** USERS_FILE, CLIENTS_FILE, SIGNING_KEYS_FILE kept in force; `reload()` is what SIGHUP does. */
  readonly files: ConfigFiles
}

declare module 'fastify' {
  interface FastifyInstance {
    latchkey: GatewayInfo
  }
}

export function familyLimits (config: GatewayConfig): FamilyLimits {
  return {
    idleTtlMs: config.refreshIdleTtlS * 1000,
    maxTtlMs: config.sessionMaxTtlS * 1000,
    graceMs: config.refreshReuseGraceS * 1000
  }
}

/** REFRESH_TOKEN_KEY as the stores take it; unset, each store's own (sessions/refresh-token.ts, "K"). */
function refreshTokenKey (config: GatewayConfig): { tokenKey?: RefreshTokenKey } {
  return config.refreshTokenKey === undefined ? {} : { tokenKey: new RefreshTokenKey(Buffer.from(config.refreshTokenKey, 'base64url')) }
}

/** How long a replica remembers a revoked sid: one access-token lifetime, plus the verifier's slack. */
export function revocationTtlMs (config: GatewayConfig): number {
  return config.accessTokenTtlS * 1000 + REVOCATION_SLACK_MS
}
/** `service.name` of the gateway's spans. */
export const GATEWAY_SERVICE_NAME = 'latchkey-gateway'

export async function buildGatewayApp (config: GatewayConfig, options: BuildGatewayOptions = {}): Promise<FastifyInstance> {
  const tracing = await startTracing({ endpoint: config.otlpEndpoint, serviceName: GATEWAY_SERVICE_NAME })
  // The proxy's fast lane sits in front of Fastify's router, in the server's own request
  // listener: requests whose token is already verified are admitted and forwarded without
  // Fastify's lifecycle (no app hooks run for them), everything else is routed as usual.
  // The trade-offs are written in proxy/fast-lane.ts.
  const lane = new FastLane()
  const app = Fastify({
    serverFactory: lane.serverFactory,
    logger: {
      level: config.logLevel,
      // The trace id on every line of a traced request (only when tracing is on: no cost otherwise).
      ...(tracing.enabled ? { mixin: traceLogMixin } : {}),
      ...(options.logStream === undefined ? {} : { stream: options.logStream }),
      // Belt and braces: no route logs these, but a future debug line must not either.
      redact: { paths: ['req.headers.authorization', 'req.headers.cookie', 'res.headers["set-cookie"]', '*.password', '*.refresh_token', '*.client_secret'], censor: '[redacted]' }
    },
    genReqId,
    // request.log is made when the request first writes a line (ops/request-logger.ts).
    childLoggerFactory: lazyRequestLogger,
    requestIdHeader: false,
    connectionTimeout: CONNECTION_TIMEOUT_MS,
    requestTimeout: REQUEST_TIMEOUT_MS,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    bodyLimit: BODY_LIMIT_BYTES,
    // TRUSTED_PROXIES: whose X-Forwarded-* are believed (request.ip, .protocol, .host); the
    // proxy resolves the same list for its upstream X-Forwarded-* (proxy/client-origin.ts).
    trustProxy: config.trustedProxies.length === 0 ? false : [...config.trustedProxies],
    return503OnClosing: true,
    // Pre-routing errors (a URL that does not decode) in the JSON error shape, no URL echoed.
    frameworkErrors,
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false } }
  })

  // First, so that every route and hook registered after it runs inside the request's span.
  if (tracing.fastifyPlugin !== undefined) await app.register(tracing.fastifyPlugin)
  app.addHook('onClose', async () => { await tracing.shutdown() })

  const overrides = options.deps ?? {}
  const clock = overrides.clock ?? systemClock
  const metrics = overrides.metrics ?? createGatewayMetrics()
  const events = overrides.events ?? createGatewayEvents(metrics)
  // Set below, before any reload can run (watching starts once the app is built).
  let endSessions: (userIds: readonly string[]) => Promise<void> = async () => {}
  for (const warning of config.warnings) app.log.warn(warning)
  const files = await loadConfigFiles({
    usersFile: config.usersFile,
    clientsFile: config.clientsFile,
    signingKeysFile: config.signingKeysFile,
    demoUser: config.devMode,
    log: app.log,
    counter: metrics.configReloads,
    clock,
    given: { users: overrides.users, clients: overrides.clients, keys: overrides.keys },
    onLostAccess: async (userIds) => { await endSessions(userIds) }
  })
  app.addHook('onClose', async () => { files.close() })
  const { users, clients, keys, demoPassword } = files
  let store = overrides.store
  let redis: ReturnType<typeof createRedisClient> | undefined
  if (store === undefined) {
    if (config.redis.kind === 'none') {
      app.log.warn('no REDIS_URL: sessions are kept in this process only and die with it; run one replica')
      store = new MemoryFamilyStore({ limits: familyLimits(config), clock, ...refreshTokenKey(config) })
    } else {
      redis = createRedisClient(config.redis, { keyPrefix: config.redisKeyPrefix, log: app.log })
      await connectRedis(redis)
      store = new RedisFamilyStore({ client: redis, limits: familyLimits(config), clock, keyPrefix: config.redisKeyPrefix, waitReplicas: config.redisWaitReplicas, ...refreshTokenKey(config) })
    }
  }
  const familyStore = tracing.enabled ? tracedFamilyStore(store, tracing.tracer, redis === undefined ? 'memory' : 'redis') : store
  const revokedTtlMs = revocationTtlMs(config)
  let revoked = overrides.revoked
  let edge = overrides.edge
  if (revoked === undefined || edge === undefined) {
    if (redis === undefined) {
      const local = new LocalRevokedSessions({ clock, ttlMs: revokedTtlMs })
      app.addHook('onClose', async () => { local.close() })
      revoked ??= local
      // One process: remembering the sid here is the whole broadcast.
      edge ??= { publish: async (sids) => { for (const sid of sids) local.add(sid) } }
    } else {
      const bus = new RedisRevocationBus({ client: redis, keyPrefix: config.redisKeyPrefix, clock, ttlMs: revokedTtlMs, log: app.log, waitReplicas: config.redisWaitReplicas })
      if (!(await bus.start())) app.log.warn('revoked sessions not loaded yet (Redis not answering); loading on reconnect')
      app.addHook('onClose', async () => { await bus.close() })
      revoked ??= bus
      // Awaited by every revocation; rejects (GW_STORE_UNAVAILABLE → 503) when it cannot be made durable.
      edge ??= { publish: async (sids) => { await bus.publish(sids) } }
    }
  }
  let replay = overrides.replay
  if (replay === undefined) {
    replay = redis === undefined
      ? new MemoryJtiReplayStore({ clock })
      : new RedisJtiReplayStore({ client: redis, clock, keyPrefix: config.redisKeyPrefix })
    const owned = replay
    app.addHook('onClose', async () => { await owned.close() })
  }
  const deps: GatewayDeps = { clock, store: familyStore, keys, users, clients, metrics, events, revoked, edge, replay }
  const readiness: Readiness = { draining: false, check: () => familyStore.ping() }
  // Draining: tell keep-alive clients to reconnect (to another replica) after this answer.
  // A callback hook, as every hook that runs for each request: an async one costs a promise and a microtask.
  app.addHook('onSend', (_req, reply, payload, done) => {
    if (readiness.draining) reply.header('Connection', 'close')
    done(null, payload)
  })

  const issuer = new AccessTokenIssuer({ keys, issuer: config.issuer, ttlS: config.accessTokenTtlS, clock, users })
  // The one access-token verifier: bearer routes, proxy and forward-auth (one verified-token cache).
  // ROUTES_FILE is reloaded in place on change: the proxy, forward-auth and the audiences
  // the verifier accepts follow the table in force; a bad file is refused and the old one stays.
  const routes = new RouteTable(config.routes)
  const audiencesOf = (table: readonly RouteConfig[]): string[] => [...new Set([config.audience, ...table.map(r => r.audience)])]
  let audiences = audiencesOf(routes.routes)
  routes.onReplace((table) => { audiences = audiencesOf(table) })
  if (config.routesFile !== undefined) {
    const reloader = new FileReloader({
      path: config.routesFile,
      name: 'ROUTES_FILE',
      parse: (text) => {
        const table = parseRoutes(text, config.audience, config.routesFile as string)
        assertRoutes(table) // the proxy's own checks, before anything is replaced
        return table
      },
      apply: (table) => { routes.replace(table) },
      log: app.log,
      counter: metrics.configReloads
    })
    await reloader.load()
    // Watched, and re-read on SIGHUP, with the other config files (files.watch below).
    files.add(reloader)
  }
  const verifier = createGatewayVerifier({ keys, issuer: config.issuer, audiences: () => audiences, revoked, clock })
  const parties = new ProviderRegistry({
    issuer: config.issuer,
    clock,
    ...(config.idpTokenKey === undefined ? {} : { seal: new IdpTokenSeal(config.idpTokenKey) }),
    onDiscoveryError: (party, err) => { app.log.warn({ provider: party.entry.id, err }, 'identity provider discovery failed; retried on the next sign-in') }
  })
  const sessions = new SessionService({ store: familyStore, edge, events, users, clients, issuer, audience: config.audience, log: app.log, federated: parties })
  app.decorate('latchkey', { demoPassword, readiness, deps, sessions, files })
  endSessions = async (userIds) => { await endSessionsOf(userIds, sessions, app.log) }

  installErrorHandling(app)
  await app.register(metricsPlugin, { metrics, text: options.metricsSource?.(metrics.registry) })
  let attempts: AttemptCounter
  if (redis === undefined) {
    const local = new MemoryAttemptCounter(clock, config.loginLimits.windowS * 1000)
    app.addHook('onClose', async () => { local.close() })
    attempts = local
  } else {
    attempts = new RedisAttemptCounter(redis)
  }
  const limiter = createLoginLimiter(config.loginLimits, attempts, events)
  await app.register(healthRoutes, { readiness })
  await app.register(jwksRoute, { keys })
  await app.register(authRoutes, { config, sessions, users, verifier, clock, events, limiter })
  const assertions = new ClientAssertionVerifier({ clients, issuer: config.issuer, replay, clock })
  const throttle = createClientAuthThrottle(config.clientAuthLimits, attempts, events, clock)
  const clientAuth = new ClientAuthenticator({ clients, issuer: config.issuer, assertions, throttle })
  const exchange = new TokenExchange({ keys, issuer: config.issuer, accessTokens: issuer, revoked, clock })
  const signInState = redis === undefined ? new MemorySignInStateStore(clock) : new RedisSignInStateStore(redis)
  const links = redis === undefined ? new MemoryFederatedLinks(clock) : new RedisFederatedLinks(redis)
  const native = new NativeSignIn({ clients, users, state: signInState, sessions, links, issuer: config.issuer, linkTtlMs: config.sessionMaxTtlS * 1000 })
  await app.register(oauthRoutes, { config, sessions, users, clients, issuer, events, limiter, clientAuth, exchange, native, keys, revoked, clock })
  await app.register(adminRoutes, { config, sessions, users, verifier })
  await app.register(proxyPlugin, {
    routes,
    verifier,
    metrics,
    genReqId,
    lane,
    ...(tracing.enabled ? { tracer: tracing.tracer } : {}),
    trustedProxies: config.trustedProxies,
    forwardAuth: { headerPrefix: config.forwardAuthHeaderPrefix, clock }
  })
  // PROVIDERS_FILE is reloaded on change (ops/reloader.ts): validated whole, a bad file refused.
  const providersReloader = config.providersFile === undefined
    ? undefined
    : new FileReloader({
      path: config.providersFile,
      name: 'PROVIDERS_FILE',
      parse: (text) => {
        const entries = parseProvidersText(text, 'PROVIDERS_FILE', config.providersFile)
        checkIdpTokenKey(entries, config.idpTokenKey, 'PROVIDERS_FILE')
        return entries
      },
      apply: (entries) => { parties.replace(entries) },
      log: app.log,
      counter: metrics.configReloads
    })
  // Watched, and re-read on SIGHUP, with the other files (files.watch below).
  if (providersReloader !== undefined) files.add(providersReloader)
  // Discovery starts here but nothing waits for it; a sign-in before it answers retries it.
  app.addHook('onReady', async () => {
    parties.replace(providersReloader === undefined ? config.providers : await providersReloader.load())
  })
  app.addHook('onClose', async () => { providersReloader?.close() })
  await app.register(oidcRoutes, { config, parties, sessions, state: signInState, links, native, password: { users, limiter, events }, clock })
  if (config.demoPage) await app.register(demoPagePlugin)

  app.addHook('onClose', async () => { await familyStore.close() })
  await files.watch()
  return app
}

/**
 * A users-file reload took access away (removed, disabled, new password, scope cut): end
 * every session of those users, here and at the edge of every replica. Each replica's
 * reload runs this; a family is revoked once, by whichever gets there first (the store
 * returns only the sids it revoked), so it is broadcast once.
 */
async function endSessionsOf (userIds: readonly string[], sessions: SessionService, log: FastifyInstance['log']): Promise<void> {
  for (const userId of userIds) {
    try {
      await sessions.revokeAllForUser(userId, 'user_changed')
    } catch (err) {
      log.error({ event: 'user_sessions_not_revoked', user: userId, err: { code: (err as { code?: string }).code } },
        'the users file took access from this user, but their sessions could not be revoked (store unavailable); run `latchkey sessions revoke --user`')
    }
  }
}
