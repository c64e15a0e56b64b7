/**
 * Sessions in the bench's Redis, written with the gateway's own store code and Lua
 * scripts (so the bytes are the product's, not a model of them):
 *
 * - chain families: real refresh tokens (RedisFamilyStore.create), one per autocannon
 *   connection, for the refresh rows; revoked after each run so the live count stays put;
 * - background sessions: 1,000 or 1,000,000 families that nobody presents, two per user,
 *   each refreshed once (so it holds a previous hash and a nonce, as a live session
 *   does): the first 2,000 through the scripts in pipelines, the rest encoded by the
 *   family codec from script-written values with fresh ids and hashes (see `populate`);
 * - memory: MEMORY USAGE over sampled family keys plus each sampled user index divided
 *   by its members, and INFO used_memory before/after as a cross-check.
 */
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { REFRESH_IDLE_TTL_S, REFRESH_REUSE_GRACE_S, REDIS_KEY_PREFIX, SESSION_MAX_TTL_S } from '#gateway/config.js'
import { decodeFamily, encodeFamily, type StoredFamily } from '#gateway/sessions/family-codec.js'
import { RedisFamilyStore } from '#gateway/sessions/redis-family-store.js'
import { createScriptArgs, defineFamilyScripts, rotateScriptArgs, type FamilyRecord } from '#gateway/sessions/redis-scripts.js'
import { parseRefreshToken } from '#gateway/sessions/refresh-token.js'
import { systemClock } from '#shared/clock.js'
import { RawPipe, command } from './resp.js'

/** The client id of cookie (browser) sessions; refreshable without client authentication. */
export const BROWSER_CLIENT_ID = 'latchkey-browser'
/** A current desktop browser's user agent: what a real session stores. */
export const BROWSER_USER_AGENT = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36'
const BACKGROUND_USER_AGENTS = [
  BROWSER_USER_AGENT,
  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15',
  'Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0'
]
export const SESSIONS_PER_USER = 2
const BATCH = 500
const PIPELINES_IN_FLIGHT = 4
const COPY_BATCH = 2000
const SAMPLE_SIZE = 2000
/** Same length for every background session, so copies of one family are byte-for-byte alike in size. */
const BACKGROUND_IP = '198.51.100.23'

export const LIMITS = { idleTtlMs: REFRESH_IDLE_TTL_S * 1000, maxTtlMs: SESSION_MAX_TTL_S * 1000, graceMs: REFRESH_REUSE_GRACE_S * 1000 }

export interface BenchRedis {
  readonly client: Redis
  readonly store: RedisFamilyStore
  /** Sampled background sessions (for memory), filled by `populate`. */
  readonly sample: { sids: string[], users: string[] }
  close (): Promise<void>
}

export function connectBenchRedis (url: string): BenchRedis {
  const client = new Redis(url, { enableAutoPipelining: true, maxRetriesPerRequest: 1 })
  // Failures surface where a command is awaited; a connection lost while the bench stops is no news.
  client.on('error', () => {})
  const store = new RedisFamilyStore({ client, limits: LIMITS, clock: systemClock, keyPrefix: REDIS_KEY_PREFIX, closeClient: false })
  return { client, store, sample: { sids: [], users: [] }, close: async () => { await client.quit() } }
}

/** `n` new cookie-session families of `userId`; their first refresh tokens. */
export async function createChainFamilies (r: BenchRedis, n: number, userId: string, scope: string): Promise<string[]> {
  const created = await Promise.all(Array.from({ length: n }, async () =>
    await r.store.create({ userId, clientId: BROWSER_CLIENT_ID, scope, userAgent: BROWSER_USER_AGENT, ip: '127.0.0.1' })))
  return created.map(c => c.token.raw)
}

/** Revoke the families whose current tokens are `tokens` (after a run: they are not live sessions any more). */
export async function revokeFamilies (r: BenchRedis, tokens: readonly string[]): Promise<void> {
  await Promise.all(tokens.map(async (raw) => {
    const parsed = parseRefreshToken(raw)
    if (parsed !== null) await r.store.revokeByToken(parsed)
  }))
}

type Pipeline = ReturnType<Redis['pipeline']> & Record<'lkIndexAdd' | 'lkFamilyCreate' | 'lkFamilyRotate', (key: string, ...args: Array<string | number | Buffer>) => unknown>

/** Sessions written through the product's scripts before the rest are copied from them. */
const SCRIPTED_SESSIONS = 2000
const USER_ID_BYTES = 12

function b64 (bytes: Buffer): string {
  return bytes.toString('base64url')
}

interface Times { readonly now: number, readonly idleExpiresAt: number, readonly absoluteExpiresAt: number }

interface Progress { written: number, nextReport: number, readonly count: number, readonly report: (done: number) => void }

function advance (p: Progress, n: number): void {
  p.written += n
  while (p.written >= p.nextReport) { p.report(Math.min(p.written, p.count)); p.nextReport += p.count / 10 }
}

/** Run `batch(start, size)` over [from, to) in slices, a few pipelines in flight. */
async function inBatches (from: number, to: number, batch: (start: number, size: number) => Promise<void>): Promise<void> {
  let next = from
  const worker = async (): Promise<void> => {
    while (next < to) {
      const start = next
      const size = Math.min(BATCH, to - start)
      next += size
      await batch(start, size)
    }
  }
  await Promise.all(Array.from({ length: PIPELINES_IN_FLIGHT }, worker))
}

function sampleAt (r: BenchRedis, i: number, every: number, sid: string, userId: string): void {
  if (i % every !== 0 || r.sample.sids.length >= SAMPLE_SIZE) return
  r.sample.sids.push(sid)
  if ((i % SESSIONS_PER_USER) === 0) r.sample.users.push(userId)
}

/** A background session as the store would create it (token hashes are full SHA-256 sized random bytes). */
function backgroundFamily (userId: string, firstHash: Buffer, userAgent: string, t: Times): FamilyRecord {
  return { userId, clientId: BROWSER_CLIENT_ID, scope: 'notes:read notes:write', tokenHash: firstHash, now: t.now, idleExpiresAt: t.idleExpiresAt, absoluteExpiresAt: t.absoluteExpiresAt, userAgent, ip: BACKGROUND_IP }
}

function backgroundRotation (presentedHash: Buffer, successorHash: Buffer, nonce: Buffer, userAgent: string, t: Times): ReturnType<typeof rotateScriptArgs> {
  return rotateScriptArgs({ presentedHash, successorHash, nonce, now: t.now + 1, limits: LIMITS, ip: BACKGROUND_IP, userAgent, clientId: BROWSER_CLIENT_ID })
}

/** Sessions [from, to) through the gateway's own Lua scripts: index add, create, one rotation. */
async function scripted (r: BenchRedis, from: number, to: number, t: Times, every: number, p: Progress): Promise<void> {
  defineFamilyScripts(r.client)
  await inBatches(from, to, async (start, size) => {
    const pipeline = r.client.pipeline() as Pipeline
    let userId = ''
    for (let i = start; i < start + size; i++) {
      if ((i % SESSIONS_PER_USER) === 0 || userId === '') userId = `usr_${b64(randomBytes(USER_ID_BYTES))}`
      const rnd = randomBytes(16 + 32 * 3)
      const sid = b64(rnd.subarray(0, 16))
      const [first, second, nonce] = [rnd.subarray(16, 48), rnd.subarray(48, 80), rnd.subarray(80, 112)]
      const ua = BACKGROUND_USER_AGENTS[i % BACKGROUND_USER_AGENTS.length] as string
      const familyKey = r.store.familyKey(sid)
      pipeline.lkIndexAdd(r.store.userIndexKey(userId), sid, t.absoluteExpiresAt - t.now, t.now)
      pipeline.lkFamilyCreate(familyKey, ...createScriptArgs(backgroundFamily(userId, first, ua, t)))
      pipeline.lkFamilyRotate(familyKey, ...backgroundRotation(first, second, nonce, ua, t))
      sampleAt(r, i, every, sid, userId)
    }
    const replies = await pipeline.exec()
    for (const [err, reply] of replies ?? []) {
      if (err !== null) throw err
      if (Array.isArray(reply) && reply[0] !== 'rotated') throw new Error(`background session not rotated: ${String(reply[0])}`)
    }
    advance(p, size)
  })
}

/**
 * A family value the scripts wrote, decoded: copies with another user id, hashes and nonce
 * are what the scripts would write for other sessions created at the same instant (the
 * same length, so the same memory).
 */
interface Template { readonly family: StoredFamily, readonly ttlMs: number }

async function makeTemplate (r: BenchRedis, ua: string, t: Times): Promise<Template | undefined> {
  defineFamilyScripts(r.client)
  const userId = `usr_${b64(randomBytes(USER_ID_BYTES))}`
  const sid = b64(randomBytes(16))
  const [first, second, nonce] = [randomBytes(32), randomBytes(32), randomBytes(32)]
  const key = r.store.familyKey(sid)
  const pipeline = r.client.pipeline() as Pipeline
  pipeline.lkFamilyCreate(key, ...createScriptArgs(backgroundFamily(userId, first, ua, t)))
  pipeline.lkFamilyRotate(key, ...backgroundRotation(first, second, nonce, ua, t))
  await pipeline.exec()
  const [type, blob, ttlMs] = await Promise.all([r.client.type(key), r.client.getBuffer(key), r.client.pttl(key)])
  await r.client.del(key)
  if (type !== 'string' || blob === null || ttlMs <= 0) return undefined
  const family = decodeFamily(blob)
  // The codec no longer writes what the scripts write: copy nothing.
  if (!encodeFamily(family).equals(blob)) return undefined
  return { family, ttlMs }
}

/** Sessions [from, to) as codec-encoded copies of templates: SET PX per family, ZADD + PEXPIRE per user (raw RESP). */
async function copied (r: BenchRedis, from: number, to: number, templates: readonly Template[], t: Times, every: number, p: Progress): Promise<void> {
  const pipe = await RawPipe.open(r.client.options.host ?? '127.0.0.1', r.client.options.port ?? 6379)
  const indexTtl = String(t.absoluteExpiresAt - t.now)
  const score = String(t.absoluteExpiresAt)
  try {
    for (let start = from; start < to; start += COPY_BATCH) {
      const end = Math.min(to, start + COPY_BATCH)
      const out: Buffer[] = []
      let replies = 0
      const rnd = randomBytes((end - start) * (16 + 32 * 3 + USER_ID_BYTES))
      let at = 0
      let userId = ''
      let members: string[] = []
      const flush = (): void => {
        if (members.length === 0) return
        const key = r.store.userIndexKey(userId)
        out.push(...command('ZADD', key, ...members), ...command('PEXPIRE', key, indexTtl))
        replies += 2
        members = []
      }
      for (let i = start; i < end; i++) {
        if ((i % SESSIONS_PER_USER) === 0 || userId === '') { flush(); userId = `usr_${b64(rnd.subarray(at, at + USER_ID_BYTES))}` }
        at += USER_ID_BYTES
        const template = templates[i % templates.length] as Template
        const sid = b64(rnd.subarray(at, at + 16))
        const f = template.family
        const blob = encodeFamily({
          ...f,
          userId,
          prev: rnd.subarray(at + 16, at + 16 + f.prev.length),
          hash: rnd.subarray(at + 48, at + 48 + f.hash.length),
          nonce: rnd.subarray(at + 80, at + 112)
        })
        at += 112
        out.push(...command('SET', r.store.familyKey(sid), blob, 'PX', String(template.ttlMs)))
        replies++
        members.push(score, sid)
        sampleAt(r, i, every, sid, userId)
      }
      flush()
      await pipe.send(out, replies)
      advance(p, end - start)
    }
    await pipe.flush()
  } finally {
    pipe.close()
  }
}

/**
 * Write `count` background sessions; `progress` is told every 10%. The first ones go
 * through the gateway's scripts (a few thousand sessions/s: three scripts each); past
 * that, copies of script-written families are written as plain SET/ZADD in raw RESP,
 * many times faster, unless the stored format no longer allows it (then everything is
 * scripted, and a 1,000,000-session run takes minutes longer).
 */
export async function populate (r: BenchRedis, count: number, progress: (done: number) => void = () => {}): Promise<{ scripted: number, copied: number }> {
  const now = Date.now()
  const absoluteExpiresAt = now + LIMITS.maxTtlMs
  const t: Times = { now, absoluteExpiresAt, idleExpiresAt: Math.min(now + LIMITS.idleTtlMs, absoluteExpiresAt) }
  const every = Math.max(1, Math.floor(count / SAMPLE_SIZE))
  const p: Progress = { written: 0, nextReport: count / 10, count, report: progress }
  const head = Math.min(count, SCRIPTED_SESSIONS)
  await scripted(r, 0, head, t, every, p)
  if (head === count) return { scripted: count, copied: 0 }
  const templates = await Promise.all(BACKGROUND_USER_AGENTS.map(async ua => await makeTemplate(r, ua, t)))
  if (templates.some(x => x === undefined)) {
    await scripted(r, head, count, t, every, p)
    return { scripted: count, copied: 0 }
  }
  await copied(r, head, count, templates as Template[], t, every, p)
  return { scripted: head, copied: count - head }
}

export async function usedMemory (r: BenchRedis): Promise<number> {
  const info = await r.client.info('memory')
  const m = /^used_memory:(\d+)/m.exec(info)
  if (m === null) throw new Error('INFO memory without used_memory')
  return Number(m[1])
}

export async function liveFamilies (r: BenchRedis): Promise<number> {
  let cursor = '0'
  let n = 0
  do {
    const [next, keys] = await r.client.scan(cursor, 'MATCH', `${REDIS_KEY_PREFIX}f:*`, 'COUNT', 10_000)
    cursor = next
    n += keys.length
  } while (cursor !== '0')
  return n
}

export interface SessionMemory {
  /** Mean MEMORY USAGE of a family key (key, value, and Redis' per-key overhead). */
  readonly family_bytes: number
  /** Mean MEMORY USAGE of a user's index divided by the sessions it lists. */
  readonly index_bytes_per_session: number
  /** family_bytes + index_bytes_per_session. */
  readonly bytes_per_session: number
  readonly sampled_families: number
  readonly sampled_indexes: number
  readonly sessions_per_user: number
}

export async function measureSessionMemory (r: BenchRedis): Promise<SessionMemory> {
  const familyBytes: number[] = []
  for (const sid of r.sample.sids) {
    const bytes = await r.client.call('MEMORY', 'USAGE', r.store.familyKey(sid), 'SAMPLES', '0') as number | null
    if (bytes !== null) familyBytes.push(bytes)
  }
  const perSession: number[] = []
  for (const user of r.sample.users) {
    const key = r.store.userIndexKey(user)
    const [bytes, members] = await Promise.all([r.client.call('MEMORY', 'USAGE', key, 'SAMPLES', '0') as Promise<number | null>, r.client.zcard(key)])
    if (bytes !== null && members > 0) perSession.push(bytes / members)
  }
  const mean = (xs: number[]): number => xs.length === 0 ? NaN : xs.reduce((s, x) => s + x, 0) / xs.length
  const family = mean(familyBytes)
  const index = mean(perSession)
  return {
    family_bytes: Math.round(family),
    index_bytes_per_session: Math.round(index),
    bytes_per_session: Math.round(family + index),
    sampled_families: familyBytes.length,
    sampled_indexes: perSession.length,
    sessions_per_user: SESSIONS_PER_USER
  }
}
