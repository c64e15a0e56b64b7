/**
 * Edge revocation between replicas: pub/sub for the live ones, the sorted set for one that
 * (re)connects or starts later, and one access TTL of memory in each.
 */
import t, { type Test } from 'tap'
import { Redis } from 'ioredis'
import { ManualClock } from '#shared/clock.js'
import { Command } from 'ioredis'
import { LocalRevokedSessions, RedisRevocationBus, REVOKED_SET_COPIES } from '#gateway/sessions/revocation.js'
import { connectRedis, createRedisClient } from '#gateway/sessions/redis-connection.js'
import { redisForTest } from '../../../../test/helpers/redis.js'

const redis = await redisForTest(t)
const TTL_MS = 300_000
const silent = { warn () {} }

async function bus (t: Test, clock = new ManualClock(Date.now())): Promise<RedisRevocationBus> {
  const client = createRedisClient({ kind: 'url', url: redis.url }, { keyPrefix: redis.prefix })
  await connectRedis(client)
  const b = new RedisRevocationBus({ client, keyPrefix: redis.prefix, clock, ttlMs: TTL_MS, log: silent })
  t.teardown(async () => { await b.close(); client.disconnect() })
  t.equal(await b.start(), true, 'loaded the revoked set before serving')
  return b
}

function keySlot (key: string): number {
  return new Command('exists', [key]).getSlot() ?? -1
}

async function until (check: () => boolean, timeoutMs: number): Promise<number> {
  const started = Date.now()
  while (!check()) {
    if (Date.now() - started > timeoutMs) return -1
    await new Promise(resolve => setTimeout(resolve, 5))
  }
  return Date.now() - started
}

t.test('a revocation at A is known at B within a second, and at a late C from the set', async (t) => {
  const a = await bus(t)
  const b = await bus(t)
  await a.publish(['sid-one', 'sid-two'])
  t.ok(a.has('sid-one'), 'the revoking replica knows at once')
  const took = await until(() => b.has('sid-one') && b.has('sid-two'), 1000)
  t.ok(took >= 0, `B learned within 1 s (${took} ms)`)
  t.notOk(b.has('sid-three'))

  const c = await bus(t)
  t.ok(c.has('sid-one') && c.has('sid-two'), 'a replica started after the revocation knows it once start() resolves')

  const raw = new Redis(redis.url)
  t.teardown(() => raw.quit())
  const copies = (await raw.keys(`${redis.prefix}revoked:*`)).sort()
  t.equal(copies.length, REVOKED_SET_COPIES, `${REVOKED_SET_COPIES} copies of the set`)
  t.equal(new Set(copies.map(k => Math.floor(keySlot(k) / (16384 / REVOKED_SET_COPIES)))).size, REVOKED_SET_COPIES, 'in different thirds of the slot space')
  for (const key of copies) {
    const ttl = await raw.pttl(key)
    t.ok(ttl > 0 && ttl <= TTL_MS, `${key} has a TTL (${ttl} ms)`)
    t.same((await raw.zrange(key, 0, -1)).sort(), ['sid-one', 'sid-two'])
  }
})

t.test('a set written by an earlier version (one key) is still loaded', async (t) => {
  const raw = new Redis(redis.url)
  t.teardown(() => raw.quit())
  await raw.zadd(`${redis.prefix}revoked`, Date.now() + 60_000, 'sid-legacy')
  await raw.pexpire(`${redis.prefix}revoked`, 60_000)
  const late = await bus(t)
  t.ok(late.has('sid-legacy'))
})

t.test('a revoked sid is forgotten after one access TTL', async (t) => {
  const clock = new ManualClock(Date.now())
  const local = new LocalRevokedSessions({ clock, ttlMs: 1000 })
  t.teardown(() => { local.close() })
  local.add('x')
  t.ok(local.has('x'))
  clock.advance(999)
  t.ok(local.has('x'))
  clock.advance(2)
  t.notOk(local.has('x'))
  local.add('y')
  clock.advance(5000)
  local.sweep()
  t.equal(local.size, 0, 'swept')
})

t.test('a broadcast that cannot reach Redis still revokes locally and rejects with GW_STORE_UNAVAILABLE', async (t) => {
  const own = await redisForTest(t, { own: true })
  const client = createRedisClient({ kind: 'url', url: own.url }, { keyPrefix: own.prefix })
  await connectRedis(client)
  const warnings: string[] = []
  const b = new RedisRevocationBus({ client, keyPrefix: own.prefix, clock: new ManualClock(Date.now()), ttlMs: TTL_MS, log: { warn: (_o, m) => { warnings.push(m) } } })
  t.teardown(async () => { await b.close(); client.disconnect() })
  await b.start()
  await own.kill()
  await t.rejects(b.publish(['sid-x']), { code: 'GW_STORE_UNAVAILABLE' }, 'the caller learns the broadcast failed (503)')
  t.ok(b.has('sid-x'), 'revoked here anyway')
  t.same(warnings, ['revocation broadcast failed'])
})

t.test('a broadcast to a Redis that neither answers nor fails rejects by the deadline (503), not after every timeout', async (t) => {
  const own = await redisForTest(t, { own: true })
  const client = createRedisClient({ kind: 'url', url: own.url }, { keyPrefix: own.prefix, log: { warn () {} } })
  await connectRedis(client)
  const DEADLINE_MS = 400
  const b = new RedisRevocationBus({ client, keyPrefix: own.prefix, clock: new ManualClock(Date.now()), ttlMs: TTL_MS, log: silent, publishDeadlineMs: DEADLINE_MS })
  t.teardown(async () => { await b.close(); client.disconnect() })
  await b.start()
  own.signal('SIGSTOP')
  t.teardown(() => { own.signal('SIGCONT') })
  const started = performance.now()
  await t.rejects(b.publish(['sid-frozen']), { code: 'GW_STORE_UNAVAILABLE' }, '503')
  const took = performance.now() - started
  // The command timeout (1 s) would hold it at least 1 s, twice with the retry.
  t.ok(took >= DEADLINE_MS - 20 && took < DEADLINE_MS + 300, `rejected at the deadline (${Math.round(took)} ms, deadline ${DEADLINE_MS} ms)`)
  t.ok(b.has('sid-frozen'), 'revoked here anyway')
})
