/**
 * The refresh flow over HTTP against a real Redis: rotation, grace, reuse, races,
 * lifetimes, garbage tokens, SCRIPT FLUSH, and a TTL on every key written.
 */
import t from 'tap'
import { Redis } from 'ioredis'
import { createHash, randomBytes } from 'node:crypto'
import { ManualClock } from '#shared/clock.js'
import { redisForTest } from '../../../../test/helpers/redis.js'
import { buildTestGateway, login, refresh, refreshCookieOf } from '../helpers/gateway.js'
import { decodeFamily, STORED_HASH_BYTES } from '#gateway/sessions/family-codec.js'

const redis = await redisForTest(t)
const raw = new Redis(redis.url)
t.teardown(() => raw.quit())
const env = { REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix }

/** A token's hash as the family stores it: the first STORED_HASH_BYTES of its SHA-256. */
function storedHashB64url (s: string): string {
  return createHash('sha256').update(s).digest().subarray(0, STORED_HASH_BYTES).toString('base64url')
}

/** Every command Redis ran, by name (INFO commandstats), less the INFO calls themselves. */
async function commandCounts (): Promise<Map<string, number>> {
  const info = await raw.info('commandstats')
  const counts = new Map<string, number>()
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    if (m[1] !== 'info') counts.set(m[1] as string, Number(m[2]))
  }
  return counts
}

async function familyKeys (prefix = redis.prefix): Promise<string[]> {
  const keys: string[] = []
  let cursor = '0'
  do {
    const [next, batch] = await raw.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500)
    cursor = next
    keys.push(...batch)
  } while (cursor !== '0')
  return keys
}

t.test('rotation, grace, then reuse revokes the whole family', async (t) => {
  const clock = new ManualClock(Date.now())
  const gw = await buildTestGateway(t, env, { clock })
  const first = await login(gw.app)
  const t0 = first.refresh as string

  const r1 = await refresh(gw.app, t0)
  t.equal(r1.res.statusCode, 200)
  t.equal(r1.res.headers['cache-control'], 'no-store')
  const t1 = r1.refresh as string
  t.not(t1, t0, 'rotated')
  t.same(Object.keys(r1.body).sort(), ['access_token', 'expires_in', 'scope', 'token_type'])

  clock.advance(gw.config.refreshReuseGraceS * 1000 - 1000)
  const retry = await refresh(gw.app, t0)
  t.equal(retry.res.statusCode, 200, 'predecessor inside grace')
  t.equal(retry.refresh, t1, 'gets the same current successor, not a new branch')

  clock.advance(2000)
  const replay = await refresh(gw.app, t0)
  t.equal(replay.res.statusCode, 401, 'predecessor after grace')
  t.same(replay.body, { error: 'invalid_grant', error_description: 'The refresh token is invalid, expired or revoked.' })
  t.match(replay.cookie?.attributes ?? '', /Max-Age=0/, 'cookie cleared')
  t.equal(replay.cookie?.value, '')

  const successor = await refresh(gw.app, t1)
  t.equal(successor.res.statusCode, 401, 'the live successor died with its family')

  const reuseLines = gw.logs.filter(l => l.event === 'refresh_reuse_detected')
  t.equal(reuseLines.length, 1, 'one refresh_reuse_detected line')
  t.equal(reuseLines[0]?.level, 40, 'at warn level')
  t.type(reuseLines[0]?.sid, 'string')
  t.type(reuseLines[0]?.user, 'string')
  const allLogs = gw.rawLogs.join('\n')
  t.notOk(allLogs.includes(t0), 'the replayed token is never logged')
  t.notOk(allLogs.includes(t1), 'the successor is never logged')
  t.notOk(allLogs.includes(t0.split('.')[1] as string), 'not even its secret part')
})

t.test('a rotation the store lost (a failover without REDIS_WAIT_REPLICAS): the client\'s token rolls the family forward at any gateway with the same REFRESH_TOKEN_KEY; a warning and a metric, never the token', async (t) => {
  const clock = new ManualClock(Date.now())
  const prefix = `${redis.prefix}rk:`
  const keyed = { ...env, REDIS_KEY_PREFIX: prefix, REFRESH_TOKEN_KEY: randomBytes(32).toString('base64url') }
  const a = await buildTestGateway(t, keyed, { clock })
  const b = await buildTestGateway(t, keyed, { clock })
  const t0 = (await login(a.app)).refresh as string
  const t1 = (await refresh(a.app, t0)).refresh as string
  const keys = await familyKeys(prefix)
  t.same(keys.filter(k => k.includes('refresh-key')), [], 'with REFRESH_TOKEN_KEY no key of it is kept in Redis')
  const saved = await Promise.all(keys.filter(k => k.includes(':f:{')).map(async k => [k, await raw.getBuffer(k), await raw.pttl(k)] as const))
  const t2 = (await refresh(a.app, t1)).refresh as string
  // The failover: the promoted replica never got the rotation t1 → t2.
  for (const [k, value, ttl] of saved) if (value !== null) await raw.set(k, value, 'PX', ttl)
  clock.advance(b.config.refreshReuseGraceS * 1000 + 1)
  const back = await refresh(b.app, t2)
  t.equal(back.res.statusCode, 200, 'the client comes back with the token it was answered: 200, not reuse')
  t.equal((await refresh(a.app, back.refresh)).res.statusCode, 200, 'and refreshes on')
  t.same([...a.logs, ...b.logs].filter(l => l.event === 'refresh_reuse_detected'), [], 'no reuse reported')
  const lines = b.logs.filter(l => l.event === 'refresh_rolled_forward')
  t.equal(lines.length, 1, 'one refresh_rolled_forward line')
  t.match(lines[0], { level: 40, generation_stored: 1, generation_presented: 2, sid: String })
  t.match((await b.app.inject({ method: 'GET', url: '/metrics' })).body, /^latchkey_refresh_rolled_forward_total 1$/m)
  const allLogs = [...a.rawLogs, ...b.rawLogs].join('\n')
  for (const token of [t0, t1, t2, back.refresh as string]) t.notOk(allLogs.includes(token.split('.')[1] as string), 'no token secret in any line')
  clock.advance(b.config.refreshReuseGraceS * 1000 + 1)
  t.equal((await refresh(b.app, t1)).res.statusCode, 401, 'the token the store had as current is reuse now')
})

t.test('gateways with different REFRESH_TOKEN_KEY: a grace retry the other one rotated is a 503 with an error line naming the cause, never a token the family does not hold, and the session lives on', async (t) => {
  const clock = new ManualClock(Date.now())
  const prefix = `${redis.prefix}mk:`
  const a = await buildTestGateway(t, { ...env, REDIS_KEY_PREFIX: prefix, REFRESH_TOKEN_KEY: randomBytes(32).toString('base64url') }, { clock })
  const b = await buildTestGateway(t, { ...env, REDIS_KEY_PREFIX: prefix, REFRESH_TOKEN_KEY: randomBytes(32).toString('base64url') }, { clock })
  const t0 = (await login(b.app)).refresh as string
  const t1 = (await refresh(b.app, t0)).refresh as string
  const retry = await refresh(a.app, t0)
  t.equal(retry.res.statusCode, 503, 'the retry at the gateway with the other key')
  t.same(retry.body, { error: 'temporarily_unavailable', error_description: 'This refresh cannot be completed here; retry shortly.' })
  t.equal(retry.refresh, undefined, 'no token handed out, the cookie left as it is')
  const lines = a.logs.filter(l => l.event === 'refresh_grace_underivable')
  t.equal(lines.length, 1, 'one refresh_grace_underivable line')
  t.match(lines[0], { level: 50, sid: String, msg: /REFRESH_TOKEN_KEY/ })
  const allLogs = a.rawLogs.join('\n')
  for (const token of [t0, t1]) t.notOk(allLogs.includes(token.split('.')[1] as string), 'no token secret in any line')
  t.same([...a.logs, ...b.logs].filter(l => l.event === 'refresh_reuse_detected'), [], 'no reuse')
  const there = await refresh(b.app, t0)
  t.equal(there.res.statusCode, 200, 'the same retry at the gateway that rotated')
  t.equal(there.refresh, t1, 'gets the successor')
  t.equal((await refresh(a.app, t1)).res.statusCode, 200, 'and the session refreshes on, at either gateway')
})

t.test('50 concurrent refreshes of one token: one successor, everyone gets it', async (t) => {
  const gw = await buildTestGateway(t, env)
  const { refresh: t0, body } = await login(gw.app)
  const results = await Promise.all(Array.from({ length: 50 }, () => refresh(gw.app, t0)))
  const statuses = results.map(r => r.res.statusCode)
  t.same([...new Set(statuses)], [200], 'all inside grace: all 200')
  const successors = new Set(results.map(r => r.refresh))
  t.equal(successors.size, 1, 'every 200 carries the same successor')
  const successor = [...successors][0] as string

  // Exactly one successor exists in Redis: the family's current hash is the successor's,
  // its previous hash is t0's, and it was rotated exactly once.
  const claims = JSON.parse(Buffer.from((body.access_token as string).split('.')[1] as string, 'base64url').toString()) as { sid: string }
  const keys = await familyKeys()
  const famKey = keys.find(k => k.includes(`{${claims.sid}}`)) as string
  t.ok(famKey, 'family key found by sid')
  const stored = decodeFamily(await raw.getBuffer(famKey) as Buffer)
  t.equal(stored.hash.toString('base64url'), storedHashB64url(successor), 'current = the successor everyone got')
  t.equal(stored.prev.toString('base64url'), storedHashB64url(t0 as string), 'previous = the presented token')
  t.equal(stored.generation, 1, 'one rotation')

  const next = await refresh(gw.app, successor)
  t.equal(next.res.statusCode, 200, 'the successor refreshes normally')
  t.not(next.refresh, successor)
})

t.test('grace 0: concurrent refreshes give one 200 and never two live branches', async (t) => {
  const gw = await buildTestGateway(t, { ...env, REFRESH_REUSE_GRACE: '0' })
  const { refresh: t0 } = await login(gw.app)
  const results = await Promise.all(Array.from({ length: 20 }, () => refresh(gw.app, t0)))
  const ok = results.filter(r => r.res.statusCode === 200)
  t.ok(ok.length <= 1, `at most one rotation succeeded (${ok.length})`)
  t.ok(results.every(r => r.res.statusCode === 200 || r.res.statusCode === 401))
  // With grace off the losers are replays: the family is revoked, so no branch survives.
  for (const r of ok) t.equal((await refresh(gw.app, r.refresh)).res.statusCode, 401)
})

t.test('garbage refresh tokens: refused before any Redis call, the real family unharmed', async (t) => {
  const gw = await buildTestGateway(t, env)
  const { refresh: real, body } = await login(gw.app)
  const realToken = real as string
  const [fid, secret, check] = realToken.split('.') as [string, string, string]
  const flipped = (fid[0] === 'A' ? 'B' : 'A') + fid.slice(1)
  const garbage = [
    '*', '{x}', 'a\r\nSet-Cookie: x=y', 'x'.repeat(10 * 1024), 'ünïcødé', `${flipped}.${secret}.${check}`,
    body.access_token as string, `${realToken} `, `${realToken}=`, '', '..', `${fid}.${secret}`
  ]
  const before = await commandCounts()
  for (const g of garbage) {
    const res = await gw.app.inject({ method: 'POST', url: '/auth/refresh', headers: { cookie: `lk_refresh=${encodeURIComponent(g)}` } })
    t.equal(res.statusCode, 401, `refused: ${JSON.stringify(g.slice(0, 20))}`)
    t.equal((res.json() as { error: string }).error, 'invalid_grant')
  }
  const after = await commandCounts()
  t.same(after, before, 'no Redis command ran for any garbage token')
  const ok = await refresh(gw.app, realToken)
  t.equal(ok.res.statusCode, 200, 'the real family still works')
})

t.test('reuse in one family leaves the same user\'s other families working', async (t) => {
  const clock = new ManualClock(Date.now())
  const gw = await buildTestGateway(t, env, { clock })
  const a = await login(gw.app)
  const b = await login(gw.app)
  const a1 = await refresh(gw.app, a.refresh)
  t.equal(a1.res.statusCode, 200)
  clock.advance((gw.config.refreshReuseGraceS + 1) * 1000)
  t.equal((await refresh(gw.app, a.refresh)).res.statusCode, 401, 'reuse in family A')
  t.equal((await refresh(gw.app, a1.refresh)).res.statusCode, 401, 'family A revoked')
  t.equal((await refresh(gw.app, b.refresh)).res.statusCode, 200, 'family B unaffected')
})

t.test('SCRIPT FLUSH between two refreshes: the next refresh still works', async (t) => {
  const gw = await buildTestGateway(t, env)
  const { refresh: t0 } = await login(gw.app)
  const r1 = await refresh(gw.app, t0)
  t.equal(r1.res.statusCode, 200)
  await raw.script('FLUSH')
  const r2 = await refresh(gw.app, r1.refresh)
  t.equal(r2.res.statusCode, 200, 'NOSCRIPT fell back to EVAL')
  const r3 = await refresh(gw.app, r2.refresh)
  t.equal(r3.res.statusCode, 200)
})

t.test('idle TTL slides; the absolute limit counts from login and never extends', async (t) => {
  const clock = new ManualClock(Date.now())
  const gw = await buildTestGateway(t, { ...env, REFRESH_IDLE_TTL: '100', SESSION_MAX_TTL: '250' }, { clock })
  let { refresh: tok } = await login(gw.app)
  const maxAges: number[] = []
  for (const step of [90, 90, 60]) {
    clock.advance(step * 1000)
    const r = await refresh(gw.app, tok)
    t.equal(r.res.statusCode, 200, `refresh after ${step}s idle`)
    maxAges.push(Number(/Max-Age=(\d+)/.exec(r.cookie?.attributes ?? '')?.[1]))
    tok = r.refresh
  }
  t.same(maxAges, [100, 70, 10], 'cookie Max-Age = remaining lifetime: idle slides, then the absolute limit caps it')
  clock.advance(11 * 1000)
  t.equal((await refresh(gw.app, tok)).res.statusCode, 401, 'past the absolute limit (250 s from login)')

  const idle = await login(gw.app)
  clock.advance(101 * 1000)
  t.equal((await refresh(gw.app, idle.refresh)).res.statusCode, 401, 'past the idle TTL')
})

t.test('every key the gateway wrote has a TTL (SCAN + PTTL)', async (t) => {
  const gw = await buildTestGateway(t, env)
  const a = await login(gw.app)
  await refresh(gw.app, a.refresh)
  await login(gw.app, 'bob')
  const keys = await familyKeys()
  t.ok(keys.length > 0, `${keys.length} keys written by this file`)
  for (const k of keys) {
    const ttl = await raw.pttl(k)
    t.ok(ttl > 0, `${k} has a TTL (${ttl} ms)`)
  }
})

t.test('the refresh cookie Max-Age follows the family after rotation', async (t) => {
  const gw = await buildTestGateway(t, env)
  const a = await login(gw.app)
  const r = await gw.app.inject({ method: 'POST', url: '/auth/refresh', headers: { cookie: `lk_refresh=${a.refresh as string}` } })
  const attrs = refreshCookieOf(r)?.attributes ?? ''
  t.match(attrs, /HttpOnly/)
  t.match(attrs, /SameSite=Strict/)
  t.match(attrs, /Path=\/auth/)
})
