/**
 * The Redis family store: the shared contract against a real Redis, plus what only Redis
 * has — TTLs on every key, script caching, one round trip per refresh, hash slots,
 * memory per session, and behaviour while Redis is stalled, down, or absent at boot.
 */
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { Redis } from 'ioredis'
import { ManualClock, systemClock, type Clock } from '#shared/clock.js'
import { isLatchkeyError } from '#shared/errors.js'
import type { FamilyLimits } from '#gateway/sessions/family-store.js'
import { connectRedis, createRedisClient, REDIS_COMMAND_TIMEOUT_MS, type RedisClient } from '#gateway/sessions/redis-connection.js'
import { RedisFamilyStore, TOKEN_KEY_RENEW_MS } from '#gateway/sessions/redis-family-store.js'
import { createScriptArgs, defineFamilyScripts, FAMILY_SCRIPTS, rotateScriptArgs } from '#gateway/sessions/redis-scripts.js'
import { decodeFamily, encodeFamily, FAMILY_FORMAT_VERSION, storedHash } from '#gateway/sessions/family-codec.js'
import { mintFormat1Token, newNonce, RefreshTokenKey, type ParsedRefreshToken } from '#gateway/sessions/refresh-token.js'
import { freePort, hasRedisServerBinary, redisForTest, spawnRedisServer, waitForRedis } from '../../../../test/helpers/redis.js'
import { familyStoreContract, LIMITS, newFamily, type StoreOptions } from './family-store.contract.js'

const SEEN = { ip: '198.51.100.7', userAgent: 'redis-test/1.0' }
const CHROME_UA = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36'

const redis = await redisForTest(t)
const admin = new Redis(redis.url)
t.teardown(() => { admin.disconnect() })

let stores = 0
/** A store on its own connection and its own key prefix (under this file's prefix). */
async function makeStore (t: Test, limits: FamilyLimits = LIMITS, clock: Clock = new ManualClock(), url = redis.url, options: StoreOptions = {}) {
  stores += 1
  const keyPrefix = `${redis.prefix}${stores}:`
  const client = createRedisClient({ kind: 'url', url })
  await connectRedis(client)
  const store = new RedisFamilyStore({ client, limits, clock, keyPrefix, ...options })
  t.teardown(() => store.close())
  return { store, client, keyPrefix }
}

async function scanKeys (client: Redis, match: string): Promise<string[]> {
  const keys: string[] = []
  let cursor = '0'
  do {
    const [next, batch] = await client.scan(cursor, 'MATCH', `${match}*`, 'COUNT', 1000)
    cursor = next
    keys.push(...batch)
  } while (cursor !== '0')
  return keys.sort()
}

function expectUnavailable (t: Test, err: unknown, what: string): void {
  t.ok(isLatchkeyError(err) && err.code === 'GW_STORE_UNAVAILABLE', `${what}: GW_STORE_UNAVAILABLE (got ${String((err as Error)?.message)})`)
}

/** Time a call that must fail; returns ms. */
async function failsWithin (t: Test, what: string, call: () => Promise<unknown>, budgetMs = 2000): Promise<number> {
  const started = performance.now()
  try {
    await call()
    t.fail(`${what} should have failed`)
  } catch (err) {
    expectUnavailable(t, err, what)
  }
  const ms = performance.now() - started
  t.ok(ms < budgetMs, `${what} failed in ${ms.toFixed(0)} ms (< ${budgetMs} ms)`)
  return ms
}

/** CRC16/XMODEM mod 16384, the Redis Cluster key slot (cluster spec, "Keys distribution model"). */
function keySlot (key: string): number {
  const open = key.indexOf('{')
  const close = open === -1 ? -1 : key.indexOf('}', open + 1)
  const tagged = open !== -1 && close > open + 1 ? key.slice(open + 1, close) : key
  let crc = 0
  for (const byte of Buffer.from(tagged)) {
    crc ^= byte << 8
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
  }
  return crc % 16384
}

familyStoreContract(t, 'redis', async (limits, clock, options) => (await makeStore(t, limits, clock, redis.url, options)).store)

t.test('every key the store writes has a TTL, bounded by the family lifetimes', async (t) => {
  const clock = new ManualClock()
  const { store, keyPrefix } = await makeStore(t, LIMITS, clock)
  const a = await store.create(newFamily('alice'))
  const b = await store.create(newFamily('alice'))
  const bob = await store.create(newFamily('bob'))
  const a1 = await store.rotate(a.token, SEEN)
  await store.rotate(a.token, SEEN) // grace
  clock.advance(1000)
  const c = await store.create(newFamily('carol'))
  await store.rotate(c.token, SEEN)
  clock.advance(LIMITS.graceMs + 1)
  t.equal((await store.rotate(c.token, SEEN)).kind, 'reuse')
  await store.listForUser('alice')
  t.equal(a1.kind, 'rotated')
  const keys = await scanKeys(admin, keyPrefix)
  t.same(keys, [
    store.familyKey(a.token.sid), store.familyKey(b.token.sid), store.familyKey(bob.token.sid),
    store.userIndexKey('alice'), store.userIndexKey('bob'), store.tokenKeyKey()
  ].sort(), "exactly the live families, their users' indexes (carol's revoked family and emptied index are gone) and the refresh-token key")
  for (const key of keys) {
    const ttl = await admin.pttl(key)
    t.ok(ttl > 0, `${key} has a TTL (${ttl} ms)`)
    // The refresh-token key outlives every family it may vouch for (see RedisFamilyStore).
    const limit = key === store.tokenKeyKey() ? LIMITS.maxTtlMs + TOKEN_KEY_RENEW_MS : key.includes(':u:{') ? LIMITS.maxTtlMs : LIMITS.idleTtlMs
    t.ok(ttl <= limit, `${key} TTL ${ttl} <= ${limit}`)
  }
  t.ok(await admin.pttl(store.userIndexKey('alice')) > LIMITS.maxTtlMs - 5000, 'the index lives as long as its longest member')
})

t.test('the family key stays a compact string; a live session fits in 400 bytes of Redis', async (t) => {
  const { store } = await makeStore(t)
  const userId = 'a5c8e2f0-1b2c-4d5e-8f90-123456789abc'
  const { token, family } = await store.create(newFamily(userId, { userAgent: CHROME_UA }))
  const key = store.familyKey(family.sid)
  t.equal(await admin.type(key), 'string')
  // A live session has been refreshed: it holds a previous hash and a nonce too.
  t.equal((await store.rotate(token, { ...SEEN, userAgent: CHROME_UA })).kind, 'rotated')
  await store.create(newFamily(userId, { userAgent: CHROME_UA }))
  const typical = await admin.memory('USAGE', key) as number
  const index = await admin.memory('USAGE', store.userIndexKey(userId)) as number
  const { family: long } = await store.create(newFamily('alice', { userAgent: 'x'.repeat(400) }))
  const worst = await admin.memory('USAGE', store.familyKey(long.sid)) as number
  t.comment(`MEMORY USAGE: refreshed family with a ${CHROME_UA.length}-char UA ${typical} B, index of 2 ${index} B; new family with a 200-char UA ${worst} B`)
  t.ok(typical + index / 2 <= 400, `family ${typical} B + index share ${index / 2} B <= 400 B`)
  t.ok(worst <= 512, `family with the longest kept UA ${worst} B <= 512 B`)
  const [listed] = await store.listForUser(userId)
  t.equal(listed?.userAgent, CHROME_UA, 'the sessions list shows the user agent as sent')
})

t.test('families stored in format 1 with full 32-byte hashes (before the provider field and 16-byte hashes) still rotate, keep their grace and list', async (t) => {
  const clock = new ManualClock()
  const { store, client } = await makeStore(t, LIMITS, clock)
  const first = mintFormat1Token()
  const now = clock.now()
  // What create wrote then: 15 fields, the whole SHA-256 of the token, the user agent as sent.
  const key = store.familyKey(first.sid)
  await client.eval("redis.call('SET', KEYS[1], cmsgpack.pack({1, ARGV[1], ARGV[2], ARGV[3], ARGV[4], '', '', 0, 0, tonumber(ARGV[5]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8], ARGV[9]}), 'PX', ARGV[6] - ARGV[5])", 1, key,
    'alice', 'browser', 'notes:read', Buffer.from(first.hash, 'base64url'), now, now + LIMITS.idleTtlMs, now + LIMITS.maxTtlMs, 'Mozilla/5.0 old', '203.0.113.9')
  await client.zadd(store.userIndexKey('alice'), now + LIMITS.maxTtlMs, first.sid)
  const old = decodeFamily(await client.getBuffer(key) as Buffer)
  t.equal(old.version, 1)
  t.equal(old.provider, '', 'the codec reads format 1: no provider')
  const [listed] = await store.listForUser('alice')
  t.equal(listed?.userAgent, 'Mozilla/5.0 old')
  t.notOk(listed !== undefined && 'provider' in listed, 'listed without a provider')
  const rotated = await store.rotate(first, SEEN)
  t.equal(rotated.kind, 'rotated', 'the old-format current hash matches')
  if (rotated.kind !== 'rotated') return
  t.equal(rotated.family.userAgent, SEEN.userAgent)
  t.equal(decodeFamily(await client.getBuffer(key) as Buffer).version, FAMILY_FORMAT_VERSION, 'upgraded on rotation')
  const retried = await store.rotate(first, SEEN)
  t.equal(retried.kind, 'grace', 'the old-format previous hash matches inside grace')
  t.equal(retried.kind === 'grace' ? retried.token.raw : '', rotated.token.raw, 'the same successor')
  t.equal((await store.rotate(rotated.token, SEEN)).kind, 'rotated', 'the successor (stored in the new form) rotates')
})

/** Save a family's stored value, and later put it back: what a failover to a replica that missed the writes between does. */
async function lostWrites (client: RedisClient, key: string): Promise<() => Promise<void>> {
  const [value, ttl] = await Promise.all([client.getBuffer(key), client.pttl(key)])
  if (value === null) throw new Error(`no family at ${key}`)
  return async () => { await client.set(key, value, 'PX', ttl) }
}

t.test('without REFRESH_TOKEN_KEY, stores on one Redis share one key: a rotation lost in a failover rolls forward at another gateway; a key Redis lost comes back unchanged', async (t) => {
  const clock = new ManualClock()
  const a = await makeStore(t, LIMITS, clock)
  const b = new RedisFamilyStore({ client: a.client, limits: LIMITS, clock, keyPrefix: a.keyPrefix, closeClient: false })
  const { token: t0 } = await a.store.create(newFamily('alice'))
  const t1 = (await a.store.rotate(t0, SEEN) as { token: ParsedRefreshToken }).token
  const failover = await lostWrites(a.client, a.store.familyKey(t0.sid))
  const t2 = (await a.store.rotate(t1, SEEN) as { token: ParsedRefreshToken }).token
  await failover()
  clock.advance(LIMITS.graceMs + 1)
  const atB = (await b.tokenKey()).recognise(t2)
  t.equal(atB.generation, 2, "b holds a's key: the token is format 2 there too")
  const r = await b.rotate(atB, SEEN)
  t.equal(r.kind, 'rotated', 'the token the failover forgot is rotated at the other gateway, not reuse')
  t.equal(r.kind === 'rotated' && r.rolledForwardFrom, 1)
  t.equal(r.kind === 'rotated' && r.family.generation, 3)

  const keyKey = a.store.tokenKeyKey()
  const stored = async (): Promise<Buffer | null> => await a.client.getBuffer(keyKey)
  const k = await stored()
  t.equal(k?.length, 32, 'one 32-byte key in Redis')
  t.ok(await a.client.pttl(keyKey) > LIMITS.maxTtlMs, 'it outlives every family')
  await a.client.del(keyKey)
  await a.store.create(newFamily('alice'))
  t.equal(await stored(), null, 'renewed at most every TOKEN_KEY_RENEW_MS: not yet')
  clock.advance(TOKEN_KEY_RENEW_MS)
  await a.store.create(newFamily('alice'))
  t.same(await stored(), k, 'a login after that puts the key back as it was (sent ahead of the login on the same connection)')
  await a.client.set(keyKey, 'short')
  clock.advance(TOKEN_KEY_RENEW_MS)
  await a.store.rotate((r as { token: ParsedRefreshToken }).token, SEEN)
  t.same(await stored(), k, 'a value that is no key of ours is replaced, by a refresh too')
  t.ok(await a.client.pttl(keyKey) > LIMITS.maxTtlMs, 'with its TTL')
})

t.test('two gateways with different keys (REFRESH_TOKEN_KEY changed on one): never reuse nor a token the family does not hold; a grace retry they cannot derive is underivable; no roll forward across them', async (t) => {
  const clock = new ManualClock()
  const a = await makeStore(t, LIMITS, clock, redis.url, { tokenKey: RefreshTokenKey.random() })
  const b = new RedisFamilyStore({ client: a.client, limits: LIMITS, clock, keyPrefix: a.keyPrefix, closeClient: false, tokenKey: RefreshTokenKey.random() })
  const atA = async (token: ParsedRefreshToken): Promise<ParsedRefreshToken> => (await a.store.tokenKey()).recognise(token)
  const atB = async (token: ParsedRefreshToken): Promise<ParsedRefreshToken> => (await b.tokenKey()).recognise(token)
  const { token: t0 } = await a.store.create(newFamily('alice'))
  const r1 = await a.store.rotate(await atA(t0), SEEN)
  if (r1.kind !== 'rotated') throw new Error('expected a rotation')
  t.same(await b.rotate(await atB(t0), SEEN), { kind: 'underivable', sid: t0.sid }, "a's format-2 successor of a token b reads as format 1: b cannot derive it and hands out nothing")
  const retry = await a.store.rotate(await atA(t0), SEEN)
  t.equal(retry.kind === 'grace' && retry.token.raw, r1.token.raw, 'the family is untouched: the retry at a gets it')
  const r2 = await b.rotate(await atB(r1.token), SEEN)
  if (r2.kind !== 'rotated') throw new Error('expected a rotation at b')
  t.equal(r2.token.generation, undefined, "b rotates a's token as format 1")
  const again = await a.store.rotate(await atA(r1.token), SEEN)
  t.equal(again.kind === 'grace' && again.token.raw, r2.token.raw, "a grace retry at a gets b's format-1 successor")
  t.equal((await a.store.rotate(await atA(r2.token), SEEN)).kind, 'rotated', 'which rotates at a')
  const { token: u0 } = await a.store.create(newFamily('alice'))
  const failover = await lostWrites(a.client, a.store.familyKey(u0.sid))
  const u1 = (await a.store.rotate(await atA(u0), SEEN) as { token: ParsedRefreshToken }).token
  await failover()
  t.equal((await b.rotate(await atB(u1), SEEN)).kind, 'reuse', "a token a's key vouches for is not rolled forward at b (the limit of a key that differs)")
})

t.test('a session from before format 2 keeps format-1 tokens, which are never rolled forward', async (t) => {
  const clock = new ManualClock()
  const { store, client } = await makeStore(t, LIMITS, clock)
  const t0 = mintFormat1Token()
  const key = store.familyKey(t0.sid)
  const now = clock.now()
  await defineFamilyScripts(client).lkFamilyCreate(key, ...createScriptArgs({
    userId: 'alice', clientId: 'browser', scope: '', tokenHash: Buffer.from(t0.hash, 'base64url'), now, idleExpiresAt: now + LIMITS.idleTtlMs, absoluteExpiresAt: now + LIMITS.maxTtlMs, userAgent: '', ip: ''
  }))
  const r1 = await store.rotate(t0, SEEN)
  if (r1.kind !== 'rotated') throw new Error('expected a rotation')
  t.equal(r1.token.generation, undefined, 'the successor is format 1 too')
  t.equal((await store.tokenKey()).recognise(r1.token).generation, undefined, 'and read as such')
  const failover = await lostWrites(client, key)
  const t2 = (await store.rotate(r1.token, SEEN) as { token: ParsedRefreshToken }).token
  await failover()
  clock.advance(LIMITS.graceMs + 1)
  t.equal((await store.rotate(t2, SEEN)).kind, 'reuse', 'a format-1 token the failover forgot is reuse (README: the limit for sessions from before the upgrade)')
})

t.test('the codec writes the bytes the scripts write, and reads them back (pending, bound to an IdP or not)', async (t) => {
  const clock = new ManualClock()
  const { store, client } = await makeStore(t, LIMITS, clock, redis.url, { pendingRotations: true })
  for (const [provider, idp] of [[undefined, undefined], ['https://idp.example/', { sealed: 'v1.sealed-idp-token', checkedAt: 1234 }]] as const) {
    const { token, family } = await store.create(newFamily('alice', { userAgent: CHROME_UA, provider, ...(idp === undefined ? {} : { idp }) }))
    clock.advance(1000)
    await store.rotate(token, SEEN)
    const blob = await client.getBuffer(store.familyKey(family.sid)) as Buffer
    const decoded = decodeFamily(blob)
    t.same([decoded.version, decoded.userId, decoded.generation, decoded.createdAt, decoded.rotatedAt, decoded.provider, decoded.hash.length, decoded.nonce.length, decoded.pending, decoded.idpToken, decoded.idpCheckedAt],
      [FAMILY_FORMAT_VERSION, 'alice', 1, family.createdAt, family.createdAt + 1000, provider ?? '', 16, 32, 1, idp?.sealed ?? '', idp?.checkedAt ?? 0])
    t.ok(encodeFamily(decoded).equals(blob), `encodeFamily(decodeFamily(x)) is x, byte for byte (provider ${provider ?? 'none'})`)
  }
})

/** A family as format `version` stored it after one rotation (t0 -> t1), written with Lua's cmsgpack as the scripts of that version did. */
async function storeOldFormat (client: RedisClient, key: string, version: 2 | 3, t0: ParsedRefreshToken, t1: ParsedRefreshToken, nonce: string, now: number, pending: 0 | 1): Promise<void> {
  const h = (token: ParsedRefreshToken): Buffer => storedHash(Buffer.from(token.hash, 'base64url'))
  const tail = version === 3 ? ', tonumber(ARGV[11])' : ''
  await client.eval(`redis.call('SET', KEYS[1], cmsgpack.pack({${version}, 'alice', 'browser', 'notes:read', ARGV[1], ARGV[2], ARGV[3], 1, tonumber(ARGV[4]), tonumber(ARGV[4]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[8], ARGV[9]${tail}}), 'PX', ARGV[10])`, 1, key,
    h(t1), h(t0), Buffer.from(nonce, 'base64url'), now, now + LIMITS.idleTtlMs, now + LIMITS.maxTtlMs, 'Mozilla/5.0 old', '203.0.113.9', 'kc', LIMITS.idleTtlMs, pending)
}

t.test('families stored in formats 2 and 3 (before the IdP binding; 3 with the pending mark) still decode, rotate and keep a pending successor', async (t) => {
  const clock = new ManualClock()
  const { store, client } = await makeStore(t, LIMITS, clock)
  for (const [version, pending] of [[2, 0], [3, 0], [3, 1]] as const) {
    const t0 = mintFormat1Token()
    const nonce = newNonce()
    const t1 = RefreshTokenKey.random().successor(t0, nonce) // format 1 from format 1, whatever the key
    const key = store.familyKey(t0.sid)
    await storeOldFormat(client, key, version, t0, t1, nonce, clock.now(), pending)
    const blob = await client.getBuffer(key) as Buffer
    const old = decodeFamily(blob)
    t.same([old.version, old.provider, old.generation, old.pending, old.idpToken, old.idpCheckedAt], [version, 'kc', 1, pending, '', 0], `format ${version} decodes (pending ${pending})`)
    clock.advance(LIMITS.graceMs * 2)
    const back = await store.rotate(t0, SEEN)
    t.equal(back.kind, pending === 1 ? 'grace' : 'reuse', `format ${version}: the predecessor after grace is ${pending === 1 ? 'given its pending successor' : 'reuse'}`)
    if (back.kind !== 'grace') continue
    t.equal(back.token.raw, t1.raw)
    t.equal(back.idp, undefined, 'no IdP binding in an older format')
    const next = await store.rotate(t1, SEEN)
    t.equal(next.kind, 'rotated', 'the successor rotates')
    const upgraded = decodeFamily(await client.getBuffer(key) as Buffer)
    t.same([upgraded.version, upgraded.provider, upgraded.pending], [FAMILY_FORMAT_VERSION, 'kc', 0], 'upgraded on rotation')
  }
})

t.test('a pending successor (REDIS_WAIT_REPLICAS, not yet answered 200) keeps its predecessor good past grace; once committed, the predecessor after grace is reuse', async (t) => {
  const clock = new ManualClock()
  const tokenKey = RefreshTokenKey.random()
  const { store, client } = await makeStore(t, LIMITS, clock, redis.url, { tokenKey })
  const scripts = defineFamilyScripts(client)
  const { token: t0 } = await store.create(newFamily('alice'))
  const key = store.familyKey(t0.sid)
  // What the store sends with waitReplicas: the rotation is written pending.
  const nonce = newNonce()
  const t1 = tokenKey.successor(t0, nonce)
  const raw = (token: ParsedRefreshToken): Buffer => Buffer.from(token.hash, 'base64url')
  const reply = await scripts.lkFamilyRotateBuffer(key, ...rotateScriptArgs({
    presentedHash: raw(t0), successorHash: raw(t1), nonce: Buffer.from(nonce, 'base64url'), now: clock.now(), limits: LIMITS, ...SEEN, pending: true
  }))
  t.equal(String(reply[0]), 'rotated')
  const stored = async (): Promise<number> => decodeFamily(await client.getBuffer(key) as Buffer).pending
  t.equal(await stored(), 1, 'stored pending')
  // Its WAIT failed and the undo went elsewhere (a failover): the client comes back with t0 after grace.
  clock.advance(LIMITS.graceMs * 5)
  const back = await store.rotate(t0, SEEN)
  t.equal(back.kind, 'grace', 'the predecessor of a pending successor is not reuse, however late')
  t.equal(back.kind === 'grace' ? back.token.raw : '', t1.raw, 'it gets the very successor that was written')
  t.equal(await scripts.lkFamilyCommit(key, storedHash(raw(t0)), 1), 0, 'a commit of another token changes nothing')
  t.equal(await scripts.lkFamilyCommit(key, storedHash(raw(t1)), 1), 1, 'answered 200: committed')
  t.equal(await stored(), 0, 'no longer pending')
  t.equal((await store.rotate(t0, SEEN)).kind, 'reuse', 'now the predecessor after grace is reuse, as always')
})

t.test('SCRIPT FLUSH between refreshes: EVALSHA falls back to EVAL and nothing is lost', async (t) => {
  const { store } = await makeStore(t)
  const { token: t0 } = await store.create(newFamily())
  const r1 = await store.rotate(t0, SEEN)
  t.equal(r1.kind, 'rotated')
  const sha = createHash('sha1').update(FAMILY_SCRIPTS.lkFamilyRotate.lua).digest('hex')
  t.same(await admin.script('EXISTS', sha), [1])
  await admin.script('FLUSH')
  t.same(await admin.script('EXISTS', sha), [0], 'the script cache is empty')
  const grace = await store.rotate(t0, SEEN)
  t.equal(grace.kind, 'grace', 'grace answer after the flush')
  t.equal(grace.kind === 'grace' && grace.token.raw, r1.kind === 'rotated' && r1.token.raw)
  await admin.script('FLUSH')
  const r2 = await store.rotate((r1 as { token: ParsedRefreshToken }).token, SEEN)
  t.equal(r2.kind, 'rotated', 'rotation after the flush')
  t.same(await admin.script('EXISTS', sha), [1], 'reloaded')
})

t.test('one round trip per refresh: exactly one EVALSHA per rotate, nothing else', async (t) => {
  const { store, client } = await makeStore(t)
  // Only this store's connection counts (REDIS_URL may be shared with other test files).
  const addr = /addr=(\S+)/.exec(String(await client.client('INFO')))?.[1]
  t.ok(addr, `store connection ${addr}`)
  const { token } = await store.create(newFamily())
  let current = token
  const first = await store.rotate(current, SEEN) // loads the script on this connection (EVAL)
  current = (first as { token: ParsedRefreshToken }).token
  const sha = createHash('sha1').update(FAMILY_SCRIPTS.lkFamilyRotate.lua).digest('hex')
  const monitor = await admin.monitor()
  t.teardown(() => { monitor.disconnect() })
  const seen: Array<{ args: string[], source: string }> = []
  monitor.on('monitor', (_time: string, args: string[], source: string) => { seen.push({ args, source }) })
  const before = await admin.info('commandstats')
  const N = 20
  const previous = current
  for (let i = 0; i < N; i++) {
    const r = await store.rotate(current, SEEN)
    t.equal(r.kind, 'rotated')
    current = (r as { token: ParsedRefreshToken }).token
  }
  const r = await store.rotate(previous, SEEN)
  t.equal(r.kind, 'reuse', 'a replay is one script call too (plus the index cleanup)')
  // Wait until MONITOR has shown a marker sent after everything else.
  const marker = `marker-${Date.now()}`
  await admin.echo(marker)
  for (let i = 0; i < 100 && !seen.some(s => s.args[1] === marker); i++) await new Promise(resolve => setTimeout(resolve, 10))
  const after = await admin.info('commandstats')
  const topLevel = seen.filter(s => s.source === addr)
  const rotates = topLevel.filter(s => s.args[0] === 'evalsha' && s.args[1] === sha)
  t.equal(rotates.length, N + 1, `${N} rotations + 1 replay = ${N + 1} EVALSHA of the rotate script`)
  t.same(topLevel.slice(0, N).map(s => s.args[0]), Array(N).fill('evalsha'), 'no other command during the rotations')
  t.same(topLevel.slice(N + 1).map(s => s.args[0]), ['zrem'], 'the reuse path adds one index cleanup')
  const calls = (info: string): number => Number(/cmdstat_evalsha:calls=(\d+)/.exec(info)?.[1] ?? 0)
  t.equal(calls(after) - calls(before), N + 1, 'INFO commandstats agrees')
  t.ok(seen.some(s => s.source === 'lua' && s.args[0]?.toLowerCase() === 'set'), 'the writes happen inside the script')
})

t.test('well-formed tokens of unknown families write nothing', async (t) => {
  const { store, keyPrefix } = await makeStore(t)
  const { token } = await store.create(newFamily('alice'))
  const snapshot = async () => {
    const keys = await scanKeys(admin, keyPrefix)
    const values = await Promise.all(keys.map(async k => (await admin.type(k)) === 'string' ? admin.getBuffer(k) : admin.zrange(k, 0, -1, 'WITHSCORES')))
    return { keys, values: values.map(v => Buffer.isBuffer(v) ? v.toString('hex') : v) }
  }
  const before = await snapshot()
  const stranger = RefreshTokenKey.random().mint()
  t.same(await store.rotate(stranger, SEEN), { kind: 'invalid' })
  t.same(await store.revokeByToken(stranger), null)
  t.equal(await store.revokeSession('alice', stranger.sid), false)
  t.equal(await store.revokeSession('bob', token.sid), false)
  t.same(await store.revokeAllForUser('nobody'), [])
  t.same(await store.listForUser('nobody'), [])
  t.same(await snapshot(), before, 'same keys, same values')
  t.same(await scanKeys(admin, `${keyPrefix}f:{${stranger.sid}}`), [])
})

t.test('garbage at a family key is a store error, never invalid or reuse', async (t) => {
  const { store } = await makeStore(t)
  const { token } = await store.create(newFamily('alice'))
  await admin.set(store.familyKey(token.sid), 'not a family', 'PX', 60_000)
  await t.rejects(store.rotate(token, SEEN), { code: 'GW_STORE_UNAVAILABLE' })
  await admin.del(store.familyKey(token.sid))
  await admin.hset(store.familyKey(token.sid), 'h', 'x')
  await admin.pexpire(store.familyKey(token.sid), 60_000)
  await t.rejects(store.rotate(token, SEEN), { code: 'GW_STORE_UNAVAILABLE' }, 'WRONGTYPE')
  await t.rejects(store.listForUser('alice'), { code: 'GW_STORE_UNAVAILABLE' })
})

t.test('hash slots: one key per script, each family and index in its own tagged slot', async (t) => {
  t.equal(keySlot('123456789'), 12739, 'CRC16/XMODEM check value')
  t.equal(keySlot('{user1000}.following'), keySlot('{user1000}.followers'))
  for (const [name, def] of Object.entries(FAMILY_SCRIPTS)) t.equal(def.numberOfKeys, 1, `${name} takes one key`)
  const { store } = await makeStore(t)
  const slots = new Set<number>()
  for (let i = 0; i < 200; i++) {
    const { sid } = RefreshTokenKey.random().mint()
    const key = store.familyKey(sid)
    t.match(key, new RegExp(`^${redis.prefix}\\d+:f:\\{${sid}\\}$`))
    t.equal(keySlot(key), keySlot(sid), 'the family key hashes by its sid alone')
    slots.add(keySlot(key))
  }
  t.ok(slots.size > 150, `200 families spread over ${slots.size} slots (the prefix is not the tag)`)
  t.match(store.userIndexKey('{evil}'), /u:\{[A-Za-z0-9_-]{22}\}$/, 'user ids never shape the tag')
  t.equal(keySlot(store.tokenKeyKey()), keySlot('refresh-key'), 'the refresh-token key is tagged too')
  t.throws(() => new RedisFamilyStore({ client: admin, limits: LIMITS, clock: systemClock, keyPrefix: '{lk}:' }), RangeError)
})

t.test('a client keyPrefix equal to the store prefix is not applied twice', async (t) => {
  const keyPrefix = `${redis.prefix}kp:`
  const client = createRedisClient({ kind: 'url', url: redis.url }, { keyPrefix })
  await connectRedis(client)
  const store = new RedisFamilyStore({ client, limits: LIMITS, clock: new ManualClock(), keyPrefix })
  t.teardown(() => store.close())
  const { token } = await store.create(newFamily('alice'))
  t.equal((await store.rotate(token, SEEN)).kind, 'rotated')
  t.same(await scanKeys(admin, keyPrefix), [`${keyPrefix}f:{${token.sid}}`, `${keyPrefix}u:{${createHash('sha256').update('alice').digest('base64url').slice(0, 22)}}`, `${keyPrefix}${store.tokenKeyKey()}`].sort())
})

t.test('throughput: 2000 sequential and 2000 concurrent rotations, all correct', async (t) => {
  const { store } = await makeStore(t, LIMITS, systemClock)
  let { token } = await store.create(newFamily('bench'))
  const N = 2000
  let started = performance.now()
  for (let i = 0; i < N; i++) {
    const r = await store.rotate(token, SEEN)
    if (r.kind !== 'rotated') { t.fail(`rotation ${i}: ${r.kind}`); return }
    token = r.token
  }
  const sequentialMs = performance.now() - started
  const families = await Promise.all(Array.from({ length: N }, (_, i) => store.create(newFamily(`bench-${i % 100}`, { userAgent: CHROME_UA }))))
  started = performance.now()
  const results = await Promise.all(families.map(f => store.rotate(f.token, SEEN)))
  const concurrentMs = performance.now() - started
  t.equal(results.filter(r => r.kind === 'rotated').length, N, 'every concurrent rotation rotated')
  t.equal((await store.listForUser('bench-7')).length, N / 100)
  t.comment(`sequential: ${N} rotations in ${sequentialMs.toFixed(0)} ms = ${Math.round(N / sequentialMs * 1000)}/s; ` +
    `concurrent: ${N} in ${concurrentMs.toFixed(0)} ms = ${Math.round(N / concurrentMs * 1000)}/s`)
})

t.test('a stalled Redis: the call fails after the command timeout; a retry inside grace loses nothing', async (t) => {
  const { store } = await makeStore(t)
  const { token: t0 } = await store.create(newFamily())
  const pauser = new Redis(redis.url)
  t.teardown(() => { pauser.disconnect() })
  await pauser.client('PAUSE', 1500, 'ALL')
  const ms = await failsWithin(t, 'rotate against a paused Redis', () => store.rotate(t0, SEEN))
  t.ok(ms >= REDIS_COMMAND_TIMEOUT_MS - 50, `waited for the command timeout (${ms.toFixed(0)} ms)`)
  await waitForRedis(redis.url)
  await new Promise(resolve => setTimeout(resolve, 600)) // the pause ends (wall clock, not a TTL)
  // The timed-out rotation did run once Redis woke up; the client's retry gets its successor.
  const retry = await store.rotate(t0, SEEN)
  t.equal(retry.kind, 'grace', 'the retry is a grace answer, not reuse')
  t.equal(retry.kind === 'grace' && retry.family.generation, 1, 'the lost rotation happened exactly once')
  t.equal((await store.rotate((retry as { token: ParsedRefreshToken }).token, SEEN)).kind, 'rotated')
})

t.test('Redis killed: every call fails fast with GW_STORE_UNAVAILABLE; after a restart the same store works', async (t) => {
  const own = await redisForTest(t, { own: true })
  const { store } = await makeStore(t, LIMITS, systemClock, own.url)
  const { token } = await store.create(newFamily('alice'))
  await own.kill()
  const fresh = RefreshTokenKey.random().mint()
  const timings = [
    await failsWithin(t, 'rotate', () => store.rotate(token, SEEN)),
    await failsWithin(t, 'create', () => store.create(newFamily('alice'))),
    await failsWithin(t, 'revokeByToken', () => store.revokeByToken(fresh)),
    await failsWithin(t, 'revokeSession', () => store.revokeSession('alice', token.sid)),
    await failsWithin(t, 'revokeAllForUser', () => store.revokeAllForUser('alice')),
    await failsWithin(t, 'listForUser', () => store.listForUser('alice')),
    await failsWithin(t, 'ping', () => store.ping())
  ]
  t.comment(`failure latency while down: max ${Math.max(...timings).toFixed(1)} ms`)
  await own.restart()
  const deadline = Date.now() + 5000
  for (;;) {
    try { await store.ping(); break } catch (err) {
      if (Date.now() > deadline) throw err
      await new Promise(resolve => setTimeout(resolve, 50))
    }
  }
  // The restarted server kept no data (no persistence in tests): the old family is gone.
  t.same(await store.rotate(token, SEEN), { kind: 'invalid' })
  const again = await store.create(newFamily('alice'))
  t.equal((await store.rotate(again.token, SEEN)).kind, 'rotated')
})

t.test('Redis absent at boot: connectRedis does not throw, calls fail fast, and the client recovers alone', { skip: !hasRedisServerBinary() && 'needs redis-server on PATH' }, async (t) => {
  const port = await freePort()
  const client = createRedisClient({ kind: 'url', url: `redis://127.0.0.1:${port}` }, { log: { warn: () => {} } })
  const store = new RedisFamilyStore({ client, limits: LIMITS, clock: systemClock, keyPrefix: redis.prefix })
  t.teardown(() => store.close())
  t.equal(await connectRedis(client), false, 'the first attempt fails, quietly')
  await failsWithin(t, 'create before Redis exists', () => store.create(newFamily()), 500)
  const dir = mkdtempSync(join(tmpdir(), 'lk-redis-boot-'))
  const child = spawnRedisServer(port, dir)
  t.teardown(() => { child.kill('SIGKILL'); rmSync(dir, { recursive: true, force: true }) })
  await waitForRedis(`redis://127.0.0.1:${port}`)
  const started = Date.now()
  for (;;) {
    try { await store.ping(); break } catch (err) {
      if (Date.now() - started > 5000) throw err
      await new Promise(resolve => setTimeout(resolve, 50))
    }
  }
  t.comment(`reconnected ${Date.now() - started} ms after Redis answered`)
  const { token } = await store.create(newFamily())
  t.equal((await store.rotate(token, SEEN)).kind, 'rotated')
})
