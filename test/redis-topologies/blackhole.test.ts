/**
 * Redis connections that die without FIN or RST (a TCP proxy that stops forwarding but
 * keeps the sockets open, while new connections get through): the store's connection and
 * the revocation subscriber are found dead by their health checks and rebuilt within a
 * few seconds, and a revocation published meanwhile reaches the replica behind the hole.
 */
import t, { type Test } from 'tap'
import { ManualClock } from '#shared/clock.js'
import { isLatchkeyError } from '#shared/errors.js'
import { connectRedis, createRedisClient } from '#gateway/sessions/redis-connection.js'
import { RedisFamilyStore } from '#gateway/sessions/redis-family-store.js'
import { RedisRevocationBus } from '#gateway/sessions/revocation.js'
import { redisForTest } from '../helpers/redis.js'
import { blackHoleProxy } from '../helpers/redis-proxy.js'

const COMMAND_TIMEOUT_MS = 300
/** What the test waits at most; recovery is expected in about three health intervals. */
const RECOVERY_BUDGET_MS = 6000
const LIMITS = { idleTtlMs: 60_000, maxTtlMs: 120_000, graceMs: 1000 }
const SEEN = { ip: '198.51.100.7', userAgent: 'blackhole-test/1.0' }
const silent = { warn () {} }
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

const redis = await redisForTest(t, { own: true })
const target = { host: '127.0.0.1', port: redis.port }

function client (t: Test, url: string, keyPrefix?: string) {
  const c = createRedisClient({ kind: 'url', url }, { commandTimeoutMs: COMMAND_TIMEOUT_MS, log: silent, ...(keyPrefix === undefined ? {} : { keyPrefix }) })
  t.teardown(() => { c.disconnect() })
  return c
}

t.test('the store\'s connection is black-holed: 503 at once, then recovered within seconds on a new connection; the refresh sent into the hole is not reuse', async (t) => {
  const proxy = await blackHoleProxy(t, target)
  const c = client(t, proxy.url)
  await connectRedis(c)
  const store = new RedisFamilyStore({ client: c, limits: LIMITS, keyPrefix: redis.prefix, closeClient: false })
  const { token } = await store.create({ userId: 'alice', clientId: 'browser', scope: '', userAgent: 'ua', ip: '203.0.113.1' })
  proxy.blackHole()
  const started = Date.now()
  await t.rejects(store.rotate(token, SEEN), { code: 'GW_STORE_UNAVAILABLE' }, 'a refresh into the hole is a 503')
  let recoveredMs = -1
  while (Date.now() - started < RECOVERY_BUDGET_MS) {
    try {
      await store.ping()
      recoveredMs = Date.now() - started
      break
    } catch (err) {
      if (!isLatchkeyError(err)) throw err
      await sleep(100)
    }
  }
  t.comment(`recovered after ${recoveredMs} ms (${proxy.accepted} connections accepted by the proxy)`)
  t.ok(recoveredMs >= 0, `the store answers again within ${RECOVERY_BUDGET_MS} ms`)
  t.ok(proxy.accepted >= 2, 'on a new connection')
  const retry = await store.rotate(token, SEEN)
  t.ok(retry.kind === 'rotated' || retry.kind === 'grace', `the client's retry with the token it holds is answered (${retry.kind})`)
})

t.test('replica B\'s subscriber is black-holed: a session revoked at A is refused at B once it recovers', async (t) => {
  const clock = new ManualClock(Date.now())
  const direct = client(t, redis.url, redis.prefix)
  await connectRedis(direct)
  const a = new RedisRevocationBus({ client: direct, keyPrefix: redis.prefix, clock, ttlMs: 60_000, log: silent })
  t.teardown(() => a.close())
  t.equal(await a.start(), true)
  const proxy = await blackHoleProxy(t, target)
  const viaProxy = client(t, proxy.url, redis.prefix)
  await connectRedis(viaProxy)
  const b = new RedisRevocationBus({ client: viaProxy, keyPrefix: redis.prefix, clock, ttlMs: 60_000, log: silent })
  t.teardown(() => b.close())
  t.equal(await b.start(), true)
  t.ok(b.live, 'B is live')
  proxy.blackHole() // B's connections (main and subscriber) go silent; new ones get through
  await a.publish(['sid-revoked-at-a'])
  const started = Date.now()
  while (!b.has('sid-revoked-at-a') && Date.now() - started < RECOVERY_BUDGET_MS) await sleep(20)
  const took = Date.now() - started
  t.comment(`B refused the revoked session ${took} ms after A published it`)
  t.ok(b.has('sid-revoked-at-a'), `B knows the revocation within ${RECOVERY_BUDGET_MS} ms`)
  while (!b.live && Date.now() - started < RECOVERY_BUDGET_MS) await sleep(20)
  t.ok(b.live, 'B is live again (re-subscribed)')
  await a.publish(['sid-after-recovery'])
  const again = Date.now()
  while (!b.has('sid-after-recovery') && Date.now() - again < 1000) await sleep(5)
  t.ok(b.has('sid-after-recovery'), `and hears the next one over pub/sub (${Date.now() - again} ms)`)
})

/** docs/contract.md "Proxy": a revoked session is refused at every replica within 1 s. */
const REVOKED_EVERYWHERE_WITHIN_MS = 1000

t.test('only replica B\'s subscriber goes silent: B stops trusting pub/sub when its heartbeats stop coming back and reads the set, within 1 s', async (t) => {
  const clock = new ManualClock(Date.now())
  const direct = client(t, redis.url, redis.prefix)
  await connectRedis(direct)
  const a = new RedisRevocationBus({ client: direct, keyPrefix: redis.prefix, clock, ttlMs: 60_000, log: silent })
  t.teardown(() => a.close())
  const proxy = await blackHoleProxy(t, target)
  const viaProxy = client(t, proxy.url, redis.prefix)
  await connectRedis(viaProxy)
  const b = new RedisRevocationBus({ client: viaProxy, keyPrefix: redis.prefix, clock, ttlMs: 60_000, log: silent })
  t.teardown(() => b.close())
  t.equal(await a.start(), true)
  t.equal(await b.start(), true)
  proxy.blackHole({ subscribersOnly: true })
  // publish() resolves just before a logout answers 204: the clock starts there.
  await a.publish(['sid-subscriber-silent'])
  const started = performance.now()
  while (!b.has('sid-subscriber-silent') && performance.now() - started < RECOVERY_BUDGET_MS) await sleep(5)
  const took = performance.now() - started
  const connections = proxy.accepted
  t.comment(`B refused the revoked session ${took.toFixed(0)} ms after A's publish resolved`)
  t.ok(b.has('sid-subscriber-silent'), 'B knows it')
  t.ok(took <= REVOKED_EVERYWHERE_WITHIN_MS, `within ${REVOKED_EVERYWHERE_WITHIN_MS} ms (${took.toFixed(0)} ms)`)
  t.equal(connections, 2, 'before its subscriber was rebuilt: from the set, read over the main connection')
})
