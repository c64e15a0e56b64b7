import t from 'tap'
import { ConfigError } from '#shared/errors.js'
import { AUDIENCE, ISSUER, JWKS_URL, PORT, loadResourceConfig } from '../src/config.js'

t.test('defaults', async (t) => {
  const config = loadResourceConfig({})
  t.same(config, { port: PORT, host: '0.0.0.0', jwksUrl: JWKS_URL, issuer: ISSUER, audience: AUDIENCE, logLevel: 'info' })
  t.equal(config.port, 8081)
  t.equal(config.jwksUrl, 'http://localhost:8080/.well-known/jwks.json')
  t.equal(config.audience, 'latchkey-api')
  t.ok(Object.isFrozen(config))
})

t.test('overrides', async (t) => {
  const config = loadResourceConfig({ PORT: '9000', HOST: '127.0.0.1', JWKS_URL: 'https://gw.example/.well-known/jwks.json', ISSUER: 'https://gw.example/', AUDIENCE: 'notes', LOG_LEVEL: 'warn' })
  t.same(config, { port: 9000, host: '127.0.0.1', jwksUrl: 'https://gw.example/.well-known/jwks.json', issuer: 'https://gw.example', audience: 'notes', logLevel: 'warn' })
})

t.test('invalid values name the variable', async (t) => {
  for (const [name, value] of [['PORT', '80a'], ['PORT', '70000'], ['JWKS_URL', 'not a url'], ['JWKS_URL', 'ftp://x/jwks'], ['ISSUER', '/relative'], ['LOG_LEVEL', 'loud']]) {
    t.throws(() => loadResourceConfig({ [name as string]: value }), ConfigError, `${name}=${value}`)
    try {
      loadResourceConfig({ [name as string]: value })
    } catch (err) {
      t.ok(err instanceof ConfigError && err.variable === name && err.message.startsWith(`${name}: `), `${name}=${value}: one line naming the variable`)
    }
  }
})

t.test('introspection: off unless INTROSPECTION_URL is set; then the client credentials are required', async (t) => {
  t.equal(loadResourceConfig({}).introspection, undefined, 'off by default')
  const on = { INTROSPECTION_URL: 'http://gw:8080/oauth/introspect', INTROSPECTION_CLIENT_ID: 'notes', INTROSPECTION_CLIENT_SECRET: 's3cret-value' }
  t.same(loadResourceConfig(on).introspection, { url: 'http://gw:8080/oauth/introspect', clientId: 'notes', clientSecret: 's3cret-value', cacheMs: 1000 })
  t.equal(loadResourceConfig({ ...on, INTROSPECTION_CACHE_MS: '0' }).introspection?.cacheMs, 0)
  for (const [name, env] of [
    ['INTROSPECTION_CLIENT_ID', { ...on, INTROSPECTION_CLIENT_ID: '' }],
    ['INTROSPECTION_CLIENT_SECRET', { ...on, INTROSPECTION_CLIENT_SECRET: undefined }],
    ['INTROSPECTION_CACHE_MS', { ...on, INTROSPECTION_CACHE_MS: '120000' }],
    ['INTROSPECTION_URL', { ...on, INTROSPECTION_URL: 'gw/introspect' }]
  ] as const) {
    try {
      loadResourceConfig(env)
      t.fail(`${name}: accepted`)
    } catch (err) {
      t.ok(err instanceof ConfigError && err.variable === name, `${name}: refused naming the variable`)
      t.notOk(String((err as Error).message).includes('s3cret-value'), 'never echoes the secret')
    }
  }
})
