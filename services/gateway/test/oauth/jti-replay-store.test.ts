/**
 * Both JtiReplayStores pass the one contract; what only each has: the memory twin's bound
 * and expiry, and the Redis twin's key shape and TTL.
 */
import t from 'tap'
import { Redis } from 'ioredis'
import { ManualClock } from '#shared/clock.js'
import { MemoryJtiReplayStore } from '#gateway/oauth/jti-replay-store.js'
import { RedisJtiReplayStore } from '#gateway/oauth/redis-jti-replay-store.js'
import { redisForTest } from '../../../../test/helpers/redis.js'
import { jtiReplayStoreContract } from './jti-replay-store.contract.js'

const redis = await redisForTest(t)
const client = new Redis(redis.url, { lazyConnect: false })
t.teardown(() => { client.disconnect() })

jtiReplayStoreContract(t, 'memory', async (clock) => new MemoryJtiReplayStore({ clock }))
let n = 0
jtiReplayStoreContract(t, 'redis', async (clock) => new RedisJtiReplayStore({ client, clock, keyPrefix: `${redis.prefix}${n++}:` }))

t.test('memory: a claim is free again once past its expiry, and the bound refuses rather than forgets', async (t) => {
  const clock = new ManualClock()
  const store = new MemoryJtiReplayStore({ clock, maxEntries: 2 })
  t.teardown(() => store.close())
  t.equal(await store.claim('a', '1', clock.now() + 1000), true)
  clock.advance(999)
  t.equal(await store.claim('a', '1', clock.now() + 1000), false, 'still held 1 ms before expiry')
  clock.advance(1)
  t.equal(await store.claim('a', '1', clock.now() + 1000), true, 'the assertion itself is expired by now; the slot is free')
  t.equal(await store.claim('a', '2', clock.now() + 1000), true)
  await t.rejects(store.claim('a', '3', clock.now() + 1000), { code: 'GW_STORE_UNAVAILABLE' }, 'full of live claims: refused, none forgotten')
  t.equal(await store.claim('a', '2', clock.now() + 1000), false, 'the held claims are still held')
  clock.advance(1000)
  t.equal(await store.claim('a', '3', clock.now() + 1000), true, 'expired ones are swept to make room')
})

t.test('redis: one hash-tagged key under the prefix, with a TTL up to the expiry', async (t) => {
  const clock = new ManualClock(Date.now())
  const prefix = `${redis.prefix}ttl:`
  const store = new RedisJtiReplayStore({ client, clock, keyPrefix: prefix })
  t.equal(await store.claim('svc-a', 'abc', clock.now() + 90_000), true)
  const key = store.key('svc-a', 'abc')
  t.match(key, new RegExp(`^${prefix}jti:\\{[A-Za-z0-9_-]{32}\\}$`))
  t.notOk(key.includes('abc'), 'the jti itself is not in the key name')
  const ttl = await client.pttl(key)
  t.ok(ttl > 85_000 && ttl <= 90_000, `TTL ${ttl} ms`)
  const down = new Redis({ port: 1, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null })
  t.teardown(() => { down.disconnect() })
  const dead = new RedisJtiReplayStore({ client: down, clock, keyPrefix: prefix })
  await t.rejects(dead.claim('svc-a', 'x', clock.now() + 1000), { code: 'GW_STORE_UNAVAILABLE' }, 'no Redis: refused, never "first use"')
})
