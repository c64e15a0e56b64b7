/**
 * Tracing across real processes (issue: "a request through the gateway can be followed into
 * the services behind it"): a gateway and a resource service export spans over OTLP/HTTP to an
 * in-process receiver. A caller's W3C `traceparent` becomes the parent of the gateway's span,
 * the Redis script runs in a child span, the proxied request continues the same trace in the
 * resource service, and the gateway's log lines for the request carry the trace id.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { addUser } from '#gateway/identity/users-file.js'
import { freePort, redisForTest } from '../helpers/redis.js'
import { latchkey } from '../helpers/processes.js'
import { startOtlpReceiver } from '../helpers/otlp-receiver.js'

const dir = mkdtempSync(join(tmpdir(), 'lk-trace-'))
const files = { keys: join(dir, 'keys.json'), users: join(dir, 'users.json') }
const PASSWORD = 'tracing passphrase'
// Export every 100 ms (the SDK's own setting) so the test does not wait 5 s for a batch.
const OTEL_ENV = { OTEL_BSP_SCHEDULE_DELAY: '100' }

function traceparent (): { header: string, traceId: string, spanId: string } {
  const traceId = randomBytes(16).toString('hex')
  const spanId = randomBytes(8).toString('hex')
  return { header: `00-${traceId}-${spanId}-01`, traceId, spanId }
}

t.test('one trace from the caller through the gateway, Redis and the proxy into the resource', async (t) => {
  const receiver = await startOtlpReceiver()
  t.teardown(() => receiver.close())
  await addUser(files.users, { username: 'alice', password: PASSWORD, scope: 'notes:read' })
  const gen = latchkey(t, ['keys', 'generate', '--out', files.keys])
  t.equal(await gen.exited, 0, 'keys generated')
  const redis = await redisForTest(t)
  const [gatewayPort, resourcePort] = [await freePort(), await freePort()]
  const base = `http://127.0.0.1:${gatewayPort}`
  const gateway = latchkey(t, ['gateway'], {
    ...OTEL_ENV,
    PORT: String(gatewayPort), HOST: '127.0.0.1', ISSUER: base, REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix,
    SIGNING_KEYS_FILE: files.keys, USERS_FILE: files.users, RESOURCE_URL: `http://127.0.0.1:${resourcePort}`,
    LOG_LEVEL: 'info', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint
  })
  const resource = latchkey(t, ['resource'], {
    ...OTEL_ENV,
    PORT: String(resourcePort), HOST: '127.0.0.1', ISSUER: base, JWKS_URL: `${base}/.well-known/jwks.json`,
    LOG_LEVEL: 'info', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint
  })
  await gateway.waitFor(/Server listening/)
  await resource.waitFor(/Server listening/)

  const login = traceparent()
  const res = await fetch(`${base}/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', traceparent: login.header },
    body: JSON.stringify({ username: 'alice', password: PASSWORD })
  })
  t.equal(res.status, 200, 'login')
  const { access_token: token } = await res.json() as { access_token: string }

  const loginSpan = await receiver.waitFor(s => s.service === 'latchkey-gateway' && s.name === 'POST /auth/login')
  t.equal(loginSpan.traceId, login.traceId, "the login span continues the caller's trace")
  t.equal(loginSpan.parentSpanId, login.spanId, "the caller's span is its parent")
  const create = await receiver.waitFor(s => s.name === 'sessions.create' && s.traceId === login.traceId)
  t.equal(create.attributes['db.system.name'], 'redis', 'the family was written by a Redis script, in its own span')
  const lines = gateway.stdout.split('\n').filter(l => l.includes('"login succeeded"'))
  t.ok(lines.length > 0 && lines.every(l => l.includes(`"trace_id":"${login.traceId}"`)), "the request's log lines carry its trace id")

  const api = traceparent()
  const me = await fetch(`${base}/api/me`, { headers: { authorization: `Bearer ${token}`, traceparent: api.header } })
  t.equal(me.status, 200, 'GET /api/me through the proxy')
  const hop = await receiver.waitFor(s => s.service === 'latchkey-gateway' && s.name.startsWith('proxy ') && s.traceId === api.traceId)
  const served = await receiver.waitFor(s => s.service === 'latchkey-resource' && s.name === 'GET /api/me' && s.traceId === api.traceId)
  t.equal(served.parentSpanId, hop.spanId, "the resource's span is a child of the gateway's proxy hop")
  t.equal(hop.attributes['http.response.status_code'], 200, 'the hop records the status')

  // The first request with a token goes through Fastify (its span parents the hop); the
  // next one takes the fast lane, before Fastify: it must continue the caller's trace too.
  const lane = traceparent()
  t.equal((await fetch(`${base}/api/me`, { headers: { authorization: `Bearer ${token}`, traceparent: lane.header } })).status, 200)
  const laneHop = await receiver.waitFor(s => s.name.startsWith('proxy ') && s.traceId === lane.traceId)
  t.equal(laneHop.parentSpanId, lane.spanId, "on the fast lane the hop's parent is the caller's span")
  await receiver.waitFor(s => s.service === 'latchkey-resource' && s.traceId === lane.traceId)

  // No traceparent at all: the gateway starts the trace and the resource continues it.
  const before = new Set(receiver.spans.map(s => s.traceId))
  t.equal((await fetch(`${base}/api/me`, { headers: { authorization: `Bearer ${token}` } })).status, 200)
  const started = await receiver.waitFor(s => s.name.startsWith('proxy ') && !before.has(s.traceId))
  await receiver.waitFor(s => s.service === 'latchkey-resource' && s.traceId === started.traceId)

  const health = await fetch(`${base}/healthz`)
  t.equal(health.status, 200)
  await new Promise(resolve => setTimeout(resolve, 300))
  t.notOk(receiver.spans.some(s => s.name.includes('/healthz')), 'probes are not traced')
})
