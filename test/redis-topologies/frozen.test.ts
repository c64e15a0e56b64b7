/**
 * A refresh that was not answered 200 never turns the client's token into reuse: Redis
 * frozen (SIGSTOP) past the command timeout and past the grace window while sessions
 * refresh, and a replica missing under REDIS_WAIT_REPLICAS=1 for longer than the grace
 * window. Each client then retries with the token it holds; the test counts sessions lost
 * and reuse verdicts (both must be 0). The stores read time from Redis, as the gateway does.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { Redis } from 'ioredis'
import { systemClock } from '#shared/clock.js'
import { isLatchkeyError } from '#shared/errors.js'
import type { FamilyLimits, RotateResult } from '#gateway/sessions/family-store.js'
import { connectRedis, createRedisClient } from '#gateway/sessions/redis-connection.js'
import { RedisFamilyStore } from '#gateway/sessions/redis-family-store.js'
import { RedisRevocationBus } from '#gateway/sessions/revocation.js'
import type { ParsedRefreshToken } from '#gateway/sessions/refresh-token.js'
import { decodeFamily } from '#gateway/sessions/family-codec.js'
import { freePort, redisForTest, spawnRedisServer, waitForRedis } from '../helpers/redis.js'
import { until } from '../helpers/redis-cluster.js'

const SESSIONS = 8
const COMMAND_TIMEOUT_MS = 300
const LIMITS: FamilyLimits = { idleTtlMs: 60_000, maxTtlMs: 120_000, graceMs: 1000 }
const SEEN = { ip: '198.51.100.7', userAgent: 'frozen-test/1.0' }
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

async function storeOn (t: Test, url: string, prefix: string, waitReplicas = 0): Promise<RedisFamilyStore> {
  const client = createRedisClient({ kind: 'url', url }, { commandTimeoutMs: COMMAND_TIMEOUT_MS, log: { warn: () => {} } })
  await connectRedis(client)
  const store = new RedisFamilyStore({ client, limits: LIMITS, keyPrefix: prefix, waitReplicas })
  t.teardown(() => store.close())
  return store
}

/** Rotate, mapping GW_STORE_UNAVAILABLE (the 503) to 'unavailable'. */
async function attempt (store: RedisFamilyStore, token: ParsedRefreshToken): Promise<RotateResult | { kind: 'unavailable' }> {
  try {
    return await store.rotate(token, SEEN)
  } catch (err) {
    if (isLatchkeyError(err) && err.code === 'GW_STORE_UNAVAILABLE') return { kind: 'unavailable' }
    throw err
  }
}

/**
 * Each client retries with the token it holds until answered; counts what a user would see.
 * An answered rotation is committed, as SessionService does once it answers 200.
 */
async function retryAll (store: RedisFamilyStore, tokens: ParsedRefreshToken[]): Promise<{ lost: number, reuse: number, next: ParsedRefreshToken[] }> {
  let lost = 0
  let reuse = 0
  const next: ParsedRefreshToken[] = []
  for (const token of tokens) {
    const r = await attempt(store, token)
    if (r.kind === 'rotated' || r.kind === 'grace') {
      await store.commitRotation(r.token, r.family.generation)
      next.push(r.token)
    } else { lost++; if (r.kind === 'reuse') reuse++ }
  }
  return { lost, reuse, next }
}

t.test(`Redis frozen past the command timeout and the grace window under ${SESSIONS} sessions: no session lost, no reuse`, async (t) => {
  const redis = await redisForTest(t, { own: true })
  const store = await storeOn(t, redis.url, redis.prefix)
  const tokens = await Promise.all(Array.from({ length: SESSIONS }, async (_, i) => (await store.create({ userId: `u${i}`, clientId: 'browser', scope: '', userAgent: 'ua', ip: '203.0.113.1' })).token))
  redis.signal('SIGSTOP')
  try {
    // Every refresh is sent to the frozen server and answered 503 after the command timeout;
    // the rotations stay queued in Redis' socket buffers.
    const during = await Promise.all(tokens.map(token => attempt(store, token)))
    t.same([...new Set(during.map(r => r.kind))], ['unavailable'], 'every refresh during the freeze is a 503')
    await sleep(LIMITS.graceMs + 500) // frozen for longer than the grace window
  } finally {
    redis.signal('SIGCONT')
  }
  await waitForRedis(redis.url)
  const { lost, reuse, next } = await retryAll(store, tokens)
  t.comment(`after the freeze: ${lost} of ${SESSIONS} sessions lost, ${reuse} reuse verdicts`)
  t.equal(lost, 0, 'no session lost')
  t.equal(reuse, 0, 'no false reuse')
  const after = await retryAll(store, next)
  t.equal(after.lost, 0, 'every session refreshes on from the token it got')
})

t.test('a replica missing under REDIS_WAIT_REPLICAS=1 for longer than the grace window: every refresh is a 503, none becomes reuse', async (t) => {
  const master = await redisForTest(t, { own: true })
  const replicaPort = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'lk-replica-'))
  const replica = spawnRedisServer(replicaPort, dir, ['--replicaof', '127.0.0.1', String(master.port)])
  t.teardown(() => { replica.kill('SIGKILL'); rmSync(dir, { recursive: true, force: true }) })
  await waitForRedis(`redis://127.0.0.1:${replicaPort}`)
  const admin = new Redis(master.url)
  t.teardown(() => { admin.disconnect() })
  const replicated = async (what: string): Promise<void> => {
    for (let i = 0; ; i++) {
      await admin.set(`${master.prefix}probe`, String(i), 'PX', 10_000)
      if ((await admin.wait(1, 100)) >= 1) return
      if (i > 100) throw new Error(`the replica never ${what}`)
      await sleep(50)
    }
  }
  await replicated('connected')
  const store = await storeOn(t, master.url, master.prefix, 1)
  const tokens = await Promise.all(Array.from({ length: SESSIONS }, async (_, i) => (await store.create({ userId: `u${i}`, clientId: 'browser', scope: '', userAgent: 'ua', ip: '203.0.113.1' })).token))
  const loggingOut = await store.create({ userId: 'leaver', clientId: 'browser', scope: '', userAgent: 'ua', ip: '203.0.113.1' })
  await store.create({ userId: 'leaver-all', clientId: 'browser', scope: '', userAgent: 'ua', ip: '203.0.113.1' })
  const deleted = await store.create({ userId: 'leaver-one', clientId: 'browser', scope: '', userAgent: 'ua', ip: '203.0.113.1' })
  const busClient = createRedisClient({ kind: 'url', url: master.url }, { keyPrefix: master.prefix, commandTimeoutMs: COMMAND_TIMEOUT_MS })
  await connectRedis(busClient)
  const bus = new RedisRevocationBus({ client: busClient, keyPrefix: master.prefix, clock: systemClock, ttlMs: 60_000, log: { warn: () => {} }, waitReplicas: 1 })
  t.teardown(async () => { await bus.close(); busClient.disconnect() })
  replica.kill('SIGSTOP')
  try {
    const during = await Promise.all(tokens.map(token => attempt(store, token)))
    t.same([...new Set(during.map(r => r.kind))], ['unavailable'], 'no replica acknowledges: 503')
    // Revocations are not acknowledged either while they exist on the master alone.
    await t.rejects(store.revokeByToken(loggingOut.token), { code: 'GW_STORE_UNAVAILABLE' }, 'logout: 503 until a replica holds it')
    await t.rejects(store.revokeAllForUser('leaver-all'), { code: 'GW_STORE_UNAVAILABLE' }, 'logout-all: 503')
    await t.rejects(store.revokeSession('leaver-one', deleted.family.sid), { code: 'GW_STORE_UNAVAILABLE' }, 'session delete: 503')
    await t.rejects(bus.publish([loggingOut.token.sid]), { code: 'GW_STORE_UNAVAILABLE' }, 'the edge broadcast: 503 until a replica holds it')
    await sleep(LIMITS.graceMs + 300)
    // Retried while the replica is still away and after the grace window: still 503, never reuse.
    const again = await Promise.all(tokens.map(token => attempt(store, token)))
    t.same([...new Set(again.map(r => r.kind))], ['unavailable'], 'still 503 after the grace window, never reuse')
  } finally {
    replica.kill('SIGCONT')
  }
  await replicated('caught up')
  const { lost, reuse, next } = await retryAll(store, tokens)
  t.comment(`after the replica came back: ${lost} of ${SESSIONS} sessions lost, ${reuse} reuse verdicts`)
  t.equal(lost, 0, 'no session lost')
  t.equal(reuse, 0, 'no false reuse')
  // A successor answered 200 is committed (no longer pending), so its predecessor keeps
  // only the grace window and reuse detection is exact again.
  await until('every answered successor to be committed', 2000, async () => {
    const stored = await Promise.all(next.map(token => admin.getBuffer(store.familyKey(token.sid))))
    return stored.every(blob => blob !== null && decodeFamily(blob).pending === 0)
  })
  t.pass('every answered successor is committed (not pending)')
  t.equal((await retryAll(store, next)).lost, 0, 'every session refreshes on')
})
