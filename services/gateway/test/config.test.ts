import t from 'tap'
import { availableParallelism } from 'node:os'
import { ConfigError } from '#shared/errors.js'
import { ACCESS_TTL_S, loadGatewayConfig, REFRESH_IDLE_TTL_S, REFRESH_REUSE_GRACE_S, SESSION_MAX_TTL_S } from '#gateway/config.js'

t.test('defaults match docs/contract.md and the config is frozen', async (t) => {
  const c = loadGatewayConfig({})
  t.equal(c.port, 8080)
  t.equal(c.host, '0.0.0.0')
  t.equal(c.issuer, 'http://localhost:8080')
  t.equal(c.origin, 'http://localhost:8080')
  t.equal(c.audience, 'latchkey-api')
  t.equal(c.accessTokenTtlS, ACCESS_TTL_S)
  t.equal(ACCESS_TTL_S, 300)
  t.equal(c.refreshIdleTtlS, REFRESH_IDLE_TTL_S)
  t.equal(REFRESH_IDLE_TTL_S, 14 * 86400)
  t.equal(c.sessionMaxTtlS, SESSION_MAX_TTL_S)
  t.equal(SESSION_MAX_TTL_S, 30 * 86400)
  t.equal(c.refreshReuseGraceS, REFRESH_REUSE_GRACE_S)
  t.equal(REFRESH_REUSE_GRACE_S, 10)
  t.equal(c.cookieSecure, true)
  t.same(c.corsOrigins, [])
  t.equal(c.logLevel, 'info')
  t.same(c.redis, { kind: 'none' })
  t.equal(c.refreshTokenKey, undefined, 'no REFRESH_TOKEN_KEY: the stores make their own')
  t.same(c.routes, [{ prefix: '/api/', upstream: 'http://localhost:8081', audience: 'latchkey-api', scopes: [] }])
  t.ok(Object.isFrozen(c))
  t.ok(Object.isFrozen(c.routes[0]))
  t.throws(() => { (c as { port: number }).port = 1 })
})

t.test('durations accept units', async (t) => {
  const c = loadGatewayConfig({ ACCESS_TOKEN_TTL: '5m', REFRESH_IDLE_TTL: '2h', SESSION_MAX_TTL: '1d', REFRESH_REUSE_GRACE: '0' })
  t.equal(c.accessTokenTtlS, 300)
  t.equal(c.refreshIdleTtlS, 7200)
  t.equal(c.sessionMaxTtlS, 86400)
  t.equal(c.refreshReuseGraceS, 0)
})

t.test('REFRESH_TOKEN_KEY: 32 bytes or more, base64url', async (t) => {
  const key = Buffer.alloc(32, 7).toString('base64url')
  t.equal(loadGatewayConfig({ REFRESH_TOKEN_KEY: key }).refreshTokenKey, key)
  t.equal(loadGatewayConfig({ REFRESH_TOKEN_KEY: Buffer.alloc(64, 7).toString('base64url') }).refreshTokenKey?.length, 86)
})

t.test('redis topologies', async (t) => {
  t.same(loadGatewayConfig({ REDIS_URL: 'rediss://u:p@h:6380/0' }).redis, { kind: 'url', url: 'rediss://u:p@h:6380/0' })
  t.same(loadGatewayConfig({ REDIS_SENTINELS: 'a:26379,[::1]:26380', REDIS_SENTINEL_NAME: 'mymaster' }).redis,
    { kind: 'sentinel', sentinels: [{ host: 'a', port: 26379 }, { host: '::1', port: 26380 }], name: 'mymaster', url: undefined })
  t.same(loadGatewayConfig({ REDIS_CLUSTER_NODES: 'n1:7000,n2:7001' }).redis,
    { kind: 'cluster', nodes: [{ host: 'n1', port: 7000 }, { host: 'n2', port: 7001 }], url: undefined })
})

t.test('each bad value names its variable', async (t) => {
  const bad: Array<[Record<string, string>, string]> = [
    [{ PORT: 'x' }, 'PORT'],
    [{ ISSUER: 'not a url' }, 'ISSUER'],
    [{ ISSUER: 'ftp://x' }, 'ISSUER'],
    [{ ACCESS_TOKEN_TTL: '0' }, 'ACCESS_TOKEN_TTL'],
    [{ ACCESS_TOKEN_TTL: '-5' }, 'ACCESS_TOKEN_TTL'],
    [{ REFRESH_IDLE_TTL: '14x' }, 'REFRESH_IDLE_TTL'],
    [{ SESSION_MAX_TTL: '1h', REFRESH_IDLE_TTL: '2h' }, 'SESSION_MAX_TTL'],
    [{ REFRESH_REUSE_GRACE: '1d' }, 'REFRESH_REUSE_GRACE'],
    [{ COOKIE_SECURE: 'yes please' }, 'COOKIE_SECURE'],
    [{ CORS_ORIGINS: 'https://a.example/path' }, 'CORS_ORIGINS'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    [{ REDIS_URL: 'http://x' }, 'REDIS_URL'],
    [{ REDIS_CLUSTER_NODES: 'nohost' }, 'REDIS_CLUSTER_NODES'],
    [{ REDIS_SENTINELS: 'a:1', REDIS_CLUSTER_NODES: 'b:2', REDIS_SENTINEL_NAME: 'm' }, 'REDIS_SENTINELS'],
    [{ REDIS_KEY_PREFIX: '{x}' }, 'REDIS_KEY_PREFIX'],
    [{ RESOURCE_URL: 'nope' }, 'RESOURCE_URL'],
    [{ REFRESH_TOKEN_KEY: 'A'.repeat(42) }, 'REFRESH_TOKEN_KEY'],
    [{ REFRESH_TOKEN_KEY: `${'A'.repeat(42)}+/=` }, 'REFRESH_TOKEN_KEY'],
    [{ WORKERS: '0' }, 'WORKERS'],
    [{ WORKERS: 'many' }, 'WORKERS'],
    [{ WORKERS: '65' }, 'WORKERS'],
    // A pool must share sessions (Redis) and keys (a file): each worker alone would split them.
    [{ WORKERS: '2', SIGNING_KEYS_FILE: '/k.json' }, 'WORKERS'],
    [{ WORKERS: '2', REDIS_URL: 'redis://r:6379' }, 'WORKERS']
  ]
  for (const [env, name] of bad) {
    const err = t.throws(() => loadGatewayConfig(env)) as unknown as ConfigError
    t.ok(err instanceof ConfigError, JSON.stringify(env))
    t.equal(err.variable, name)
    t.ok(err.message.startsWith(`${name}: `))
    t.notOk(err.message.includes('\n'), 'one line')
  }
})

t.test('a REDIS_URL password never appears in an error', async (t) => {
  const err = t.throws(() => loadGatewayConfig({ REDIS_URL: 'http://user:hunter2@host' })) as unknown as Error
  t.notMatch(err.message, /hunter2/)
})

t.test('WORKERS: 1 by default, a number, or auto (one per CPU); more than one needs Redis and a key file', async (t) => {
  t.equal(loadGatewayConfig({}).workers, 1)
  const shared = { REDIS_URL: 'redis://r:6379', SIGNING_KEYS_FILE: '/k.json' }
  t.equal(loadGatewayConfig({ ...shared, WORKERS: '3' }).workers, 3)
  t.equal(loadGatewayConfig({ ...shared, WORKERS: 'auto' }).workers, Math.min(availableParallelism(), 64))
  const dev = t.throws(() => loadGatewayConfig({ ...shared, WORKERS: '2' }, { devMode: true })) as unknown as ConfigError
  t.equal(dev.variable, 'WORKERS', '`latchkey dev` is one process')
})
