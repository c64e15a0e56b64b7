/**
 * The behaviour every FamilyStore owes (docs/contract.md "Refresh-token families", the 7 rules in
 * family-store.ts), run against each implementation by its own test file. Time moves
 * by ManualClock only.
 */
import type { Test } from 'tap'
import { ManualClock } from '#shared/clock.js'
import type { FamilyLimits, FamilyStore, NewFamily, RotateResult } from '#gateway/sessions/family-store.js'
import { mintFormat1Token, newNonce, parseRefreshToken, RefreshTokenKey, type ParsedRefreshToken } from '#gateway/sessions/refresh-token.js'

/**
 * `pendingRotations`: rotations stay pending until `commitRotation` (what REDIS_WAIT_REPLICAS
 * turns on). `tokenKey`: the refresh-token key (REFRESH_TOKEN_KEY); the contract passes one it
 * knows, so that it can make the tokens a gateway made and a failover made the store forget.
 */
export interface StoreOptions { readonly pendingRotations?: boolean, readonly tokenKey?: RefreshTokenKey }
export type MakeStore = (limits: FamilyLimits, clock: ManualClock, options?: StoreOptions) => Promise<FamilyStore>

export const LIMITS: FamilyLimits = { idleTtlMs: 60_000, maxTtlMs: 300_000, graceMs: 10_000 }
const SEEN = { ip: '198.51.100.7', userAgent: 'contract-test/1.0' }

export function newFamily (userId = 'alice', extra: Partial<NewFamily> = {}): NewFamily {
  return { userId, clientId: 'browser', scope: 'notes:read notes:write', userAgent: 'Mozilla/5.0 test', ip: '203.0.113.9', ...extra }
}

function tokenOf (r: RotateResult): ParsedRefreshToken {
  if (r.kind !== 'rotated' && r.kind !== 'grace') throw new Error(`expected a token, got ${r.kind}`)
  return r.token
}

export function familyStoreContract (t: Test, name: string, make: MakeStore): void {
  const setup = async (t: Test, limits: Partial<FamilyLimits> = {}, options: StoreOptions = {}) => {
    const clock = new ManualClock()
    const key = RefreshTokenKey.random()
    const store = await make({ ...LIMITS, ...limits }, clock, { tokenKey: key, ...options })
    t.teardown(() => store.close())
    return { clock, store, key }
  }

  t.test(`${name}: create starts a family with a well-formed first token`, async (t) => {
    const { clock, store, key } = await setup(t)
    const start = clock.now()
    const { token, family } = await store.create(newFamily('alice', { userAgent: 'UA/1', ip: '192.0.2.1' }))
    t.same(key.parse(token.raw), token, 'the token parses back to itself (format 2, generation 0)')
    t.equal(token.generation, 0)
    t.equal(await store.tokenKey(), key, 'the store mints under the key it was given')
    t.same(family, {
      sid: token.sid,
      userId: 'alice',
      clientId: 'browser',
      scope: 'notes:read notes:write',
      userAgent: 'UA/1',
      ip: '192.0.2.1',
      generation: 0,
      createdAt: start,
      lastUsedAt: start,
      idleExpiresAt: start + LIMITS.idleTtlMs,
      absoluteExpiresAt: start + LIMITS.maxTtlMs
    })
    t.same(await store.listForUser('alice'), [family])
    await store.ping()
  })

  t.test(`${name}: rule 1 — each rotation kills the presented token and issues one successor`, async (t) => {
    const { clock, store, key } = await setup(t, { graceMs: 0 })
    const { token: t0 } = await store.create(newFamily())
    clock.advance(1000)
    const r1 = await store.rotate(t0, SEEN)
    t.equal(r1.kind, 'rotated')
    const t1 = tokenOf(r1)
    t.not(t1.raw, t0.raw)
    t.equal(t1.sid, t0.sid, 'same family')
    t.same(key.parse(t1.raw), t1)
    t.equal(t1.generation, 1, 'format 2, one generation on')
    if (r1.kind === 'rotated') {
      t.equal(r1.family.generation, 1)
      t.equal(r1.family.lastUsedAt, clock.now())
      t.equal(r1.family.ip, SEEN.ip, 'last-seen ip updated')
      t.equal(r1.family.userAgent, SEEN.userAgent, 'last-seen user agent updated')
    }
    clock.advance(1000)
    const r2 = await store.rotate(t1, SEEN)
    t.equal(r2.kind, 'rotated')
    t.equal(r2.kind === 'rotated' && r2.family.generation, 2)
    t.not(tokenOf(r2).raw, t1.raw)
  })

  t.test(`${name}: rule 2 — a rotated-out token after grace revokes the family, live successor included`, async (t) => {
    const { clock, store } = await setup(t)
    const { token: t0 } = await store.create(newFamily('alice'))
    const t1 = tokenOf(await store.rotate(t0, SEEN))
    clock.advance(LIMITS.graceMs + 1)
    t.same(await store.rotate(t0, SEEN), { kind: 'reuse', sid: t0.sid, userId: 'alice' })
    t.same(await store.rotate(t1, SEEN), { kind: 'invalid' }, 'the successor died with the family')
    t.same(await store.rotate(t0, SEEN), { kind: 'invalid' }, 'a second replay finds nothing')
    t.same(await store.listForUser('alice'), [])
  })

  t.test(`${name}: rule 2 — a token two generations old is reuse even inside the grace window`, async (t) => {
    const { store } = await setup(t)
    const { token: t0 } = await store.create(newFamily('alice'))
    const t1 = tokenOf(await store.rotate(t0, SEEN))
    const t2 = tokenOf(await store.rotate(t1, SEEN))
    t.same(await store.rotate(t0, SEEN), { kind: 'reuse', sid: t0.sid, userId: 'alice' })
    t.same(await store.rotate(t2, SEEN), { kind: 'invalid' })
  })

  t.test(`${name}: rule 2 — a well-formed token of the family that was never issued is reuse`, async (t) => {
    const { store, key } = await setup(t)
    const { token: t0 } = await store.create(newFamily('alice'))
    // Made from the current token as a gateway would, but under another key: read as format 1.
    const forged = key.parse(RefreshTokenKey.random().successor(t0, newNonce()).raw) as ParsedRefreshToken
    t.same(await store.rotate(forged, SEEN), { kind: 'reuse', sid: t0.sid, userId: 'alice' })
    t.same(await store.rotate(t0, SEEN), { kind: 'invalid' })
  })

  t.test(`${name}: rule 3 — the predecessor within grace gets the identical successor, again and again`, async (t) => {
    const { clock, store } = await setup(t)
    const { token: t0 } = await store.create(newFamily())
    clock.advance(5000)
    const r1 = await store.rotate(t0, SEEN)
    t.equal(r1.kind, 'rotated')
    const t1 = tokenOf(r1)
    const rotatedFamily = r1.kind === 'rotated' ? r1.family : undefined
    for (const [i, step] of [1, 4000, LIMITS.graceMs - 4001].entries()) {
      clock.advance(step)
      const retry = await store.rotate(t0, { ip: '192.0.2.99', userAgent: 'retry' })
      t.equal(retry.kind, 'grace', `retry ${i + 1} is a grace answer`)
      t.equal(tokenOf(retry).raw, t1.raw, `retry ${i + 1} gets the same successor string`)
      // No second rotation: generation, last use and idle expiry are the rotation's.
      t.same(retry.kind === 'grace' && retry.family, rotatedFamily, `retry ${i + 1} changed nothing`)
    }
    t.equal(clock.now() - (rotatedFamily?.lastUsedAt ?? 0), LIMITS.graceMs, 'the last retry was exactly at the edge')
    const r2 = await store.rotate(t1, SEEN)
    t.equal(r2.kind, 'rotated', 'the successor rotates normally')
    t.equal(r2.kind === 'rotated' && r2.family.generation, 2)
  })

  t.test(`${name}: rule 3 — the grace window ends ${LIMITS.graceMs} ms after the rotation`, async (t) => {
    const { clock, store } = await setup(t)
    const { token: t0 } = await store.create(newFamily())
    const t1 = tokenOf(await store.rotate(t0, SEEN))
    clock.advance(LIMITS.graceMs)
    t.equal((await store.rotate(t0, SEEN)).kind, 'grace')
    clock.advance(1)
    t.equal((await store.rotate(t0, SEEN)).kind, 'reuse')
    t.same(await store.rotate(t1, SEEN), { kind: 'invalid' })
  })

  t.test(`${name}: rule 3 — grace 0 disables grace`, async (t) => {
    const { store } = await setup(t, { graceMs: 0 })
    const { token: t0 } = await store.create(newFamily('alice'))
    const t1 = tokenOf(await store.rotate(t0, SEEN))
    t.same(await store.rotate(t0, SEEN), { kind: 'reuse', sid: t0.sid, userId: 'alice' }, 'an immediate retry is reuse')
    t.same(await store.rotate(t1, SEEN), { kind: 'invalid' })
  })

  t.test(`${name}: rule 4 — 50 concurrent rotations of one token make exactly one successor`, async (t) => {
    const { store, key } = await setup(t)
    const { token: t0 } = await store.create(newFamily())
    const results = await Promise.all(Array.from({ length: 50 }, () => store.rotate(t0, SEEN)))
    const kinds = results.map(r => r.kind)
    t.equal(kinds.filter(k => k === 'rotated').length, 1, 'one rotation')
    t.equal(kinds.filter(k => k === 'grace').length, 49, 'the rest are grace answers')
    const tokens = new Set(results.map(r => tokenOf(r).raw))
    t.equal(tokens.size, 1, 'every answer carries the same token string')
    const [successor] = [...tokens]
    const t1 = key.parse(successor) as ParsedRefreshToken
    const r2 = await store.rotate(t1, SEEN)
    t.equal(r2.kind, 'rotated', 'the successor then rotates normally')
    t.equal(r2.kind === 'rotated' && r2.family.generation, 2, 'after exactly one earlier rotation')
  })

  t.test(`${name}: rule 4 — with grace 0, concurrent rotations leave no two live branches`, async (t) => {
    const { store } = await setup(t, { graceMs: 0 })
    const { token: t0 } = await store.create(newFamily('alice'))
    const results = await Promise.all(Array.from({ length: 50 }, () => store.rotate(t0, SEEN)))
    const winners = results.filter(r => r.kind === 'rotated')
    t.equal(winners.length, 1, 'one rotation')
    // The first loser is a replay (grace is off) and revokes the family; the rest find nothing.
    t.equal(results.filter(r => r.kind === 'reuse').length, 1, 'one reuse detection')
    t.equal(results.filter(r => r.kind === 'invalid').length, 48, 'the others are refused')
    // Reuse revoked the family: not even the one issued successor stays alive.
    t.same(await store.rotate(tokenOf(winners[0] as RotateResult), SEEN), { kind: 'invalid' })
    t.same(await store.listForUser('alice'), [])
  })

  t.test(`${name}: rule 5 — idle expiry slides on rotation; the absolute limit never moves`, async (t) => {
    const limits = { idleTtlMs: 1000, maxTtlMs: 5000, graceMs: 100 }
    const { clock, store } = await setup(t, limits)
    const start = clock.now()
    let { token } = await store.create(newFamily())
    for (let i = 1; i <= 5; i++) {
      clock.advance(900)
      const r = await store.rotate(token, SEEN)
      t.equal(r.kind, 'rotated', `rotation ${i} at +${900 * i} ms`)
      if (r.kind !== 'rotated') return
      t.equal(r.family.absoluteExpiresAt, start + limits.maxTtlMs, 'absolute expiry unchanged')
      t.equal(r.family.idleExpiresAt, Math.min(clock.now() + limits.idleTtlMs, start + limits.maxTtlMs), 'idle expiry slid, capped')
      token = r.token
    }
    t.equal(clock.now(), start + 4500)
    clock.advance(499)
    const last = await store.rotate(token, SEEN)
    t.equal(last.kind, 'rotated', 'alive 1 ms before the absolute limit')
    // (Checked on the answer, not by listing: a Redis key with 1 ms left expires in real time.)
    t.equal(last.kind === 'rotated' && last.family.idleExpiresAt, start + limits.maxTtlMs)
    if (last.kind === 'rotated') token = last.token
    clock.advance(1)
    t.same(await store.rotate(token, SEEN), { kind: 'invalid' }, 'dead at the absolute limit despite a fresh rotation')
    t.same(await store.listForUser('alice'), [])
  })

  t.test(`${name}: rule 5 — a family not refreshed for the idle TTL dies`, async (t) => {
    const { clock, store } = await setup(t)
    const { token: a } = await store.create(newFamily())
    const { token: b } = await store.create(newFamily())
    clock.advance(LIMITS.idleTtlMs - 1)
    t.equal((await store.rotate(a, SEEN)).kind, 'rotated', 'alive 1 ms before idle expiry')
    clock.advance(1)
    t.same(await store.rotate(b, SEEN), { kind: 'invalid' }, 'dead at idle expiry')
    t.same(await store.revokeByToken(b), null, 'nothing live to revoke')
    t.same((await store.listForUser('alice')).map(f => f.sid), [a.sid])
  })

  t.test(`${name}: revocation never reopens a grace window`, async (t) => {
    const { store } = await setup(t)
    const { token: t0 } = await store.create(newFamily('alice'))
    const t1 = tokenOf(await store.rotate(t0, SEEN))
    t.same(await store.revokeByToken(t1), { sid: t0.sid, userId: 'alice' })
    t.same(await store.rotate(t0, SEEN), { kind: 'invalid' }, 'predecessor inside the old grace window: nothing')
    t.same(await store.rotate(t1, SEEN), { kind: 'invalid' })
    t.same(await store.revokeByToken(t1), null, 'revoking twice finds nothing')
    const { token: u0 } = await store.create(newFamily('alice'))
    tokenOf(await store.rotate(u0, SEEN))
    t.equal((await store.rotate(u0, SEEN)).kind, 'grace')
    t.same(await store.revokeByToken(u0), { sid: u0.sid, userId: 'alice' }, 'the predecessor may revoke (logout with a stale cookie)')
    t.same(await store.rotate(u0, SEEN), { kind: 'invalid' })
  })

  t.test(`${name}: reuse in one family leaves the user's other families working`, async (t) => {
    const { clock, store } = await setup(t)
    const { token: a0 } = await store.create(newFamily('alice'))
    const { token: b0 } = await store.create(newFamily('alice'))
    tokenOf(await store.rotate(a0, SEEN))
    clock.advance(LIMITS.graceMs + 1)
    t.equal((await store.rotate(a0, SEEN)).kind, 'reuse')
    t.equal((await store.rotate(b0, SEEN)).kind, 'rotated', 'the other family rotates')
    t.same((await store.listForUser('alice')).map(f => f.sid), [b0.sid])
  })

  t.test(`${name}: a well-formed token of an unknown family is invalid and revokes nothing`, async (t) => {
    const { store, key } = await setup(t)
    const { token } = await store.create(newFamily('alice'))
    const stranger = key.parse(RefreshTokenKey.random().mint().raw) as ParsedRefreshToken
    t.same(await store.rotate(stranger, SEEN), { kind: 'invalid' })
    const lostLogin = key.mint()
    t.same(await store.rotate(key.successor(lostLogin, newNonce()), SEEN), { kind: 'invalid' }, 'an authentic token of a family the store never held (a login lost in a failover): invalid, never rolled forward into being')
    t.same(await store.revokeByToken(stranger), null)
    t.equal((await store.rotate(token, SEEN)).kind, 'rotated', 'the real family is untouched')
  })

  t.test(`${name}: a family is bound to its client (RFC 6749 §6, RFC 7009 §2.1)`, async (t) => {
    const { clock, store } = await setup(t)
    const { token: t0 } = await store.create(newFamily('alice', { clientId: 'browser' }))
    t.same(await store.rotate(t0, { ...SEEN, clientId: 'other-app' }), { kind: 'invalid' }, 'another client: unknown token')
    const r1 = await store.rotate(t0, { ...SEEN, clientId: 'browser' })
    t.equal(r1.kind, 'rotated', 'the other client changed nothing')
    t.equal(r1.kind === 'rotated' && r1.family.generation, 1)
    t.equal((await store.rotate(t0, { ...SEEN, clientId: 'browser' })).kind, 'grace')
    clock.advance(LIMITS.graceMs + 1)
    t.same(await store.rotate(t0, { ...SEEN, clientId: 'other-app' }), { kind: 'invalid' }, 'a replay from another client is not reuse')
    t.same(await store.revokeByToken(tokenOf(r1), { clientId: 'other-app' }), null, 'another client cannot revoke')
    const r2 = await store.rotate(tokenOf(r1), { ...SEEN, clientId: 'browser' })
    t.equal(r2.kind, 'rotated', 'the family survived both')
    t.same(await store.revokeByToken(tokenOf(r2), { clientId: 'browser' }), { sid: t0.sid, userId: 'alice' })
    t.same(await store.rotate(tokenOf(r2), SEEN), { kind: 'invalid' })
  })

  t.test(`${name}: lookup finds the live family of the current token only, and changes nothing`, async (t) => {
    const { clock, store, key } = await setup(t)
    const { token: t0, family } = await store.create(newFamily('alice'))
    t.same(await store.lookup(t0), family, 'the first token: its family')
    t.same(await store.lookup(t0), family, 'asking again changes nothing (no rotation, no lifetime slide)')
    clock.advance(1000)
    const t1 = tokenOf(await store.rotate(t0, SEEN))
    t.equal(await store.lookup(t0), null, 'a rotated-out token, inside grace: not live')
    const live = await store.lookup(t1)
    t.equal(live?.sid, t0.sid)
    t.equal(live?.generation, 1)
    t.equal(live?.userId, 'alice')
    t.equal(live?.clientId, 'browser')
    t.equal((await store.rotate(t0, SEEN)).kind, 'grace', 'looking up the predecessor did not count as reuse')
    const unknown = key.successor(t1, newNonce())
    t.equal(await store.lookup(unknown), null, 'a never-issued token of the family, even an authentic one ahead of it')
    t.equal(await store.lookup(key.mint()), null, 'an unknown family')
    t.equal((await store.rotate(t1, SEEN)).kind, 'rotated', 'lookups did not disturb the family')
    const t2 = (await store.listForUser('alice'))[0]
    t.equal(t2?.generation, 2)
    clock.advance(LIMITS.idleTtlMs)
    const { token: other } = await store.create(newFamily('bob'))
    t.same((await store.lookup(other))?.userId, 'bob')
    clock.advance(LIMITS.idleTtlMs)
    t.equal(await store.lookup(other), null, 'expired by idle TTL')
    const { token: revoked } = await store.create(newFamily('carol'))
    await store.revokeByToken(revoked)
    t.equal(await store.lookup(revoked), null, 'revoked')
  })

  t.test(`${name}: revokeAllForUser revokes every family of that user only`, async (t) => {
    const { store } = await setup(t)
    const mine = await Promise.all([1, 2, 3].map(() => store.create(newFamily('alice'))))
    const { token: bobs } = await store.create(newFamily('bob'))
    const t1 = tokenOf(await store.rotate(mine[0]!.token, SEEN))
    const revoked = await store.revokeAllForUser('alice')
    t.same([...revoked].sort(), mine.map(m => m.token.sid).sort())
    t.same(await store.rotate(t1, SEEN), { kind: 'invalid' })
    for (const m of mine) t.same(await store.rotate(m.token, SEEN), { kind: 'invalid' })
    t.same(await store.listForUser('alice'), [])
    t.same(await store.revokeAllForUser('alice'), [], 'nothing left the second time')
    t.equal((await store.rotate(bobs, SEEN)).kind, 'rotated', "bob's session survives")
    t.same(await store.revokeAllForUser('nobody'), [])
  })

  t.test(`${name}: listForUser lists live families, newest first, and nobody else's`, async (t) => {
    const { clock, store } = await setup(t)
    const first = await store.create(newFamily('alice', { userAgent: 'first' }))
    clock.advance(1000)
    const second = await store.create(newFamily('alice', { userAgent: 'second' }))
    clock.advance(1000)
    const third = await store.create(newFamily('alice', { userAgent: 'third' }))
    await store.create(newFamily('bob'))
    const r = await store.rotate(first.token, { ip: '192.0.2.50', userAgent: 'first, refreshed' })
    t.same(await store.listForUser('alice'), [third.family, second.family, r.kind === 'rotated' ? r.family : null])
    await store.revokeSession('alice', second.family.sid)
    t.same((await store.listForUser('alice')).map(f => f.userAgent), ['third', 'first, refreshed'])
    t.same(await store.listForUser('carol'), [])
    t.equal((await store.listForUser('bob')).length, 1)
  })

  t.test(`${name}: revokeSession refuses another user's session`, async (t) => {
    const { store } = await setup(t)
    const { token } = await store.create(newFamily('alice'))
    t.equal(await store.revokeSession('bob', token.sid), false)
    t.equal((await store.listForUser('alice')).length, 1, 'still listed')
    const t1 = tokenOf(await store.rotate(token, SEEN))
    t.equal(await store.revokeSession('alice', token.sid), true)
    t.equal(await store.revokeSession('alice', token.sid), false, 'already gone')
    t.same(await store.rotate(t1, SEEN), { kind: 'invalid' })
    t.equal(await store.revokeSession('alice', 'not a sid {x}'), false, 'a malformed id is just unknown')
    t.equal(await store.revokeSession('alice', 'A'.repeat(22)), false)
  })

  t.test(`${name}: user agent and ip are cut to bounded lengths`, async (t) => {
    const { store } = await setup(t)
    const long = 'Mozilla/5.0 ' + 'x'.repeat(500)
    const { token, family } = await store.create(newFamily('alice', { userAgent: long, ip: '1'.repeat(100) }))
    t.equal(family.userAgent, long.slice(0, 200))
    t.equal(family.ip.length, 64)
    const r = await store.rotate(token, { ip: '192.0.2.1', userAgent: '\u00e9'.repeat(199) + '\u{1F600}' })
    t.equal(r.kind === 'rotated' && r.family.userAgent, '\u00e9'.repeat(199), 'no half surrogate pair at the cut')
    t.equal((await store.listForUser('alice'))[0]?.userAgent, '\u00e9'.repeat(199), 'stored as returned')
  })

  t.test(`${name}: user ids and free text are data, never structure`, async (t) => {
    const { store } = await setup(t)
    const odd = ['{alice}', 'a:b:c', 'üser\u0000\n*', '']
    const made = await Promise.all(odd.map(u => store.create(newFamily(u, { userAgent: '\u0000{}*', scope: '' }))))
    for (const [i, u] of odd.entries()) {
      const listed = await store.listForUser(u)
      t.same(listed.map(f => [f.sid, f.userId, f.userAgent, f.scope]), [[made[i]!.token.sid, u, '\u0000{}*', '']], JSON.stringify(u))
    }
    t.same(await store.revokeAllForUser('{alice}'), [made[0]!.token.sid])
    t.equal((await store.rotate(made[1]!.token, SEEN)).kind, 'rotated')
  })

  t.test(`${name}: the identity provider is kept, returned and listed; absent for a password login`, async (t) => {
    const { store } = await setup(t)
    const sso = await store.create(newFamily('alice', { provider: 'https://idp.example/' }))
    const password = await store.create(newFamily('alice'))
    t.equal(sso.family.provider, 'https://idp.example/')
    t.notOk('provider' in password.family, 'no provider key at all for a password login')
    const r = await store.rotate(sso.token, SEEN)
    t.equal(r.kind === 'rotated' && r.family.provider, 'https://idp.example/', 'kept across a rotation')
    const listed = await store.listForUser('alice')
    t.equal(listed.find(f => f.sid === sso.family.sid)?.provider, 'https://idp.example/', 'listed with its provider')
    t.notOk('provider' in (listed.find(f => f.sid === password.family.sid) ?? { provider: 'missing' }), 'listed without one')
    const long = await store.create(newFamily('bob', { provider: 'p'.repeat(500) }))
    t.equal(long.family.provider?.length, 64, 'cut to a bounded length')
  })

  t.test(`${name}: an IdP binding is kept, returned by rotate (grace too), replaced by bindIdp, never listed`, async (t) => {
    const { clock, store } = await setup(t)
    const idp = { sealed: 'v1.sealed-token-one', checkedAt: 1234 }
    const { token: t0, family } = await store.create(newFamily('alice', { provider: 'kc', idp }))
    t.notOk('idp' in family, 'the created Family carries no binding')
    const r1 = await store.rotate(t0, SEEN)
    t.same(r1.kind === 'rotated' && r1.idp, idp, 'rotate returns the binding')
    t.same((await store.rotate(t0, SEEN) as { idp?: unknown }).idp, idp, 'a grace answer too')
    t.ok(await store.bindIdp(t0.sid, { sealed: 'v1.sealed-token-two', checkedAt: 5678 }))
    clock.advance(1000)
    const r2 = await store.rotate(tokenOf(r1), SEEN)
    t.same(r2.kind === 'rotated' && r2.idp, { sealed: 'v1.sealed-token-two', checkedAt: 5678 })
    const [listed] = await store.listForUser('alice')
    t.notOk(listed !== undefined && 'idp' in listed, 'listings never carry it')
    const unbound = await store.create(newFamily('bob'))
    const r3 = await store.rotate(unbound.token, SEEN)
    t.equal(r3.kind === 'rotated' && r3.idp, undefined, 'an unbound family has none')
    await store.revokeSession('alice', t0.sid)
    t.notOk(await store.bindIdp(t0.sid, idp), 'a revoked family cannot be bound')
  })

  t.test(`${name}: undoRotation makes the presented token current again, only while its successor is current`, async (t) => {
    const { clock, store } = await setup(t, { graceMs: 0 })
    const { token: t0 } = await store.create(newFamily())
    const r1 = await store.rotate(t0, SEEN)
    if (r1.kind !== 'rotated') throw new Error('expected a rotation')
    t.ok(await store.undoRotation(r1.token, r1.family.generation))
    t.notOk(await store.undoRotation(r1.token, r1.family.generation), 'only once')
    clock.advance(1000)
    const again = await store.rotate(t0, SEEN)
    t.equal(again.kind, 'rotated', 'the presented token rotates normally: not reuse')
    t.equal(again.kind === 'rotated' && again.family.generation, 1)
    t.equal((await store.rotate(r1.token, SEEN)).kind, 'reuse', 'the taken-back successor is not a live token')
    const fresh = await store.create(newFamily())
    const f1 = tokenOf(await store.rotate(fresh.token, SEEN))
    const f2 = await store.rotate(f1, SEEN)
    t.notOk(await store.undoRotation(f1, 1), 'a successor that was rotated on is not taken back')
    t.equal(f2.kind, 'rotated')
  })

  t.test(`${name}: a pending rotation keeps its predecessor good past grace until it is committed; commitRotation of anything else changes nothing`, async (t) => {
    const { clock, store } = await setup(t, {}, { pendingRotations: true })
    const { token: t0 } = await store.create(newFamily())
    const r1 = await store.rotate(t0, SEEN)
    if (r1.kind !== 'rotated') throw new Error('expected a rotation')
    clock.advance(LIMITS.graceMs * 5)
    const late = await store.rotate(t0, SEEN)
    t.equal(late.kind, 'grace', 'a successor nobody was given: its predecessor is no replay, however late')
    t.equal(tokenOf(late).raw, r1.token.raw, 'the very successor that was written')
    await store.commitRotation(t0, 0)
    await store.commitRotation(r1.token, r1.family.generation + 1)
    t.equal((await store.rotate(t0, SEEN)).kind, 'grace', 'a commit of another token or generation changes nothing')
    await store.commitRotation(r1.token, r1.family.generation)
    t.equal((await store.rotate(t0, SEEN)).kind, 'reuse', 'committed: the predecessor after grace is reuse, as always')
  })

  t.test(`${name}: without pending rotations commitRotation is harmless and grace is the only window`, async (t) => {
    const { clock, store } = await setup(t)
    const { token: t0 } = await store.create(newFamily())
    const r1 = await store.rotate(t0, SEEN)
    if (r1.kind !== 'rotated') throw new Error('expected a rotation')
    await store.commitRotation(r1.token, r1.family.generation)
    clock.advance(LIMITS.graceMs + 1)
    t.equal((await store.rotate(t0, SEEN)).kind, 'reuse')
  })

  t.test(`${name}: undoRotation takes back a pending rotation (the IdP could not be asked); if the undo is lost, the retry still gets the pending successor`, async (t) => {
    const { clock, store } = await setup(t, {}, { pendingRotations: true })
    const idp = { sealed: 'v1.sealed', checkedAt: 1 }
    const { token: t0 } = await store.create(newFamily('alice', { provider: 'kc', idp }))
    const r1 = await store.rotate(t0, SEEN)
    if (r1.kind !== 'rotated') throw new Error('expected a rotation')
    t.same(r1.idp, idp, 'a pending rotation returns the binding too')
    t.ok(await store.undoRotation(r1.token, r1.family.generation), 'taken back')
    clock.advance(LIMITS.graceMs * 5)
    const retry = await store.rotate(t0, SEEN)
    t.equal(retry.kind, 'rotated', 'the client retries with the token it holds: a normal rotation, not reuse')
    t.equal(retry.kind === 'rotated' && retry.family.generation, 1)
    t.same(retry.kind === 'rotated' && retry.idp, idp)
    // The undo of this one is lost (a failover forgets it): the successor stays pending.
    t.ok(await store.bindIdp(t0.sid, { sealed: 'v1.sealed-2', checkedAt: 2 }), 'binding a pending family keeps it pending')
    clock.advance(LIMITS.graceMs * 5)
    const again = await store.rotate(t0, SEEN)
    t.equal(again.kind, 'grace', 'still not reuse')
    t.equal(tokenOf(again).raw, tokenOf(retry).raw, 'the pending successor')
    t.same((again as { idp?: unknown }).idp, { sealed: 'v1.sealed-2', checkedAt: 2 })
    await store.commitRotation(tokenOf(again), 1)
    const next = await store.rotate(tokenOf(again), SEEN)
    t.equal(next.kind, 'rotated', 'the committed successor rotates')
    t.notOk(await store.undoRotation(tokenOf(again), 1), 'a successor that was rotated on is not taken back')
  })

  /*
   * Rolling forward (RedisFamilyStore.rotate): a failover can make the store forget rotations
   * a gateway answered 200. `key.successor(token, nonce)` is such a rotation: made as a gateway
   * makes it, answered, and never written.
   */

  t.test(`${name}: a token a gateway made ahead of the family (rotations the store lost) rolls the family forward`, async (t) => {
    const { clock, store, key } = await setup(t)
    const { token: t0 } = await store.create(newFamily('alice'))
    const t1 = tokenOf(await store.rotate(t0, SEEN))
    const t2 = key.successor(t1, newNonce())
    const t3 = key.successor(t2, newNonce())
    clock.advance(LIMITS.graceMs + 1)
    const r = await store.rotate(t3, SEEN)
    t.equal(r.kind, 'rotated', 'not reuse: rotated')
    if (r.kind !== 'rotated') return
    t.equal(r.rolledForwardFrom, 1, 'the family was at generation 1')
    t.equal(r.family.generation, 4, 'and now follows the token (3) with its successor')
    t.equal(r.token.generation, 4)
    t.equal(r.family.lastUsedAt, clock.now())
    t.same(key.parse(r.token.raw), r.token)
    const next = await store.rotate(r.token, SEEN)
    t.equal(next.kind, 'rotated', 'the successor rotates normally')
    t.equal(next.kind === 'rotated' && next.rolledForwardFrom, undefined, 'an ordinary rotation')
    t.equal(next.kind === 'rotated' && next.family.generation, 5)
  })

  t.test(`${name}: rolled forward, the token gets its successor again within grace, and is reuse after it`, async (t) => {
    const { clock, store, key } = await setup(t)
    const { token: t0 } = await store.create(newFamily('alice'))
    const t1 = tokenOf(await store.rotate(t0, SEEN))
    const t2 = key.successor(t1, newNonce())
    const r = await store.rotate(t2, SEEN)
    t.equal(r.kind === 'rotated' && r.rolledForwardFrom, 1)
    clock.advance(LIMITS.graceMs)
    const retry = await store.rotate(t2, SEEN)
    t.equal(retry.kind, 'grace', 'a retry within grace')
    t.equal(tokenOf(retry).raw, tokenOf(r).raw, 'gets the same successor')
    t.equal((await store.rotate(t1, SEEN)).kind, 'reuse', 'the token the store had as current is now older than the predecessor: reuse')
    t.same(await store.rotate(tokenOf(r), SEEN), { kind: 'invalid' }, 'and it revoked the family')

    const { token: u0 } = await store.create(newFamily('alice'))
    const u1 = key.successor(u0, newNonce())
    const ru = await store.rotate(u1, SEEN)
    t.equal(ru.kind === 'rotated' && ru.rolledForwardFrom, 0)
    clock.advance(LIMITS.graceMs + 1)
    t.same(await store.rotate(u1, SEEN), { kind: 'reuse', sid: u0.sid, userId: 'alice' }, 'the rolled-forward token replayed after grace: reuse')
  })

  t.test(`${name}: only an authentic generation above the family's rolls forward; anything else is reuse`, async (t) => {
    const { store, key } = await setup(t)
    const other = RefreshTokenKey.random()
    const cases: Array<[string, (t0: ParsedRefreshToken, t1: ParsedRefreshToken, t2: ParsedRefreshToken) => ParsedRefreshToken]> = [
      ['ahead, with a mac under another key (a forgery, or a gateway with another REFRESH_TOKEN_KEY)', (_t0, _t1, t2) => key.parse(other.successor(t2, newNonce()).raw) as ParsedRefreshToken],
      ['authentic, at the family\'s generation but not its current token', (_t0, t1) => key.successor(t1, newNonce())],
      ['authentic, below the family\'s generation and never issued', (t0) => key.successor(t0, newNonce())],
      ['a format-1 token of the family (no generation)', (t0) => mintFormat1Token(t0.raw.slice(0, 22))]
    ]
    for (const [what, make] of cases) {
      const { token: t0 } = await store.create(newFamily('alice'))
      const t1 = tokenOf(await store.rotate(t0, SEEN))
      const t2 = tokenOf(await store.rotate(t1, SEEN))
      const presented = make(t0, t1, t2)
      t.equal(presented.sid, t0.sid, `${what}: of this family`)
      t.same(await store.rotate(presented, SEEN), { kind: 'reuse', sid: t0.sid, userId: 'alice' }, `${what}: reuse`)
      t.same(await store.rotate(t2, SEEN), { kind: 'invalid' }, `${what}: the family was revoked`)
    }
  })

  t.test(`${name}: 50 concurrent presentations of a token ahead of the family roll it forward once`, async (t) => {
    const { store, key } = await setup(t)
    const { token: t0 } = await store.create(newFamily())
    const t1 = key.successor(t0, newNonce())
    const results = await Promise.all(Array.from({ length: 50 }, () => store.rotate(t1, SEEN)))
    t.equal(results.filter(r => r.kind === 'rotated').length, 1, 'one roll forward')
    t.equal(results.filter(r => r.kind === 'grace').length, 49, 'the rest are grace answers')
    t.equal(new Set(results.map(r => tokenOf(r).raw)).size, 1, 'every answer carries the same token')
  })

  t.test(`${name}: a roll forward that is taken back (undo) leaves the presented token current`, async (t) => {
    const { clock, store, key } = await setup(t, {}, { pendingRotations: true })
    const { token: t0 } = await store.create(newFamily())
    const t1 = key.successor(t0, newNonce())
    const r = await store.rotate(t1, SEEN)
    if (r.kind !== 'rotated') throw new Error('expected a roll forward')
    t.ok(await store.undoRotation(r.token, r.family.generation), 'undone (its WAIT failed, or the IdP could not be asked)')
    clock.advance(LIMITS.graceMs * 5)
    const again = await store.rotate(t1, SEEN)
    t.equal(again.kind, 'rotated', 'the client retries with the token it holds: rotated')
    t.equal(again.kind === 'rotated' && again.rolledForwardFrom, undefined, 'as the current token, not rolled forward again')
    t.equal(again.kind === 'rotated' && again.family.generation, 2)
  })

  /*
   * Rolling upgrade: replicas of the previous release run beside this one on the same store.
   * They parse every token as format 1 (`parseRefreshToken` is their parser, refresh-token
   * test) and rotate it by its hash, deriving a format-1 successor: a store call with the token
   * so parsed is such a rotation.
   */

  t.test(`${name}: rolling upgrade — a format-2 token the previous release rotated gets that format-1 successor on a grace retry here`, async (t) => {
    const { clock, store, key } = await setup(t)
    const { token: t0 } = await store.create(newFamily('alice'))
    const t1 = tokenOf(await store.rotate(t0, SEEN))
    t.equal(t1.generation, 1)
    clock.advance(LIMITS.graceMs + 1)
    const old = await store.rotate(parseRefreshToken(t1.raw) as ParsedRefreshToken, SEEN)
    t.equal(old.kind, 'rotated', 'the previous release rotates a format-2 token like any other')
    const s2 = tokenOf(old)
    t.equal(s2.generation, undefined, 'into a format-1 successor')
    t.same(key.parse(s2.raw), s2, 'which this release reads as format 1')
    clock.advance(LIMITS.graceMs - 1)
    const retry = await store.rotate(t1, SEEN)
    t.equal(retry.kind, 'grace', 'the retry here, within grace')
    t.equal(tokenOf(retry).raw, s2.raw, 'gets the successor the family holds, as it was made')
    t.same(retry.kind === 'grace' && retry.family.generation, 2)
    const next = await store.rotate(s2, SEEN)
    t.equal(next.kind, 'rotated', 'and that successor rotates here')
    t.equal(tokenOf(next).generation, undefined, 'a format-1 family stays format 1')
    t.equal(next.kind === 'rotated' && next.family.generation, 3)
  })

  t.test(`${name}: a grace retry whose successor a gateway with another key made hands out nothing (underivable) and leaves the family alone`, async (t) => {
    const theirs = RefreshTokenKey.random()
    const { store, key: ours } = await setup(t, {}, { tokenKey: theirs })
    const { token: t0 } = await store.create(newFamily('alice'))
    const r1 = await store.rotate(t0, SEEN)
    if (r1.kind !== 'rotated') throw new Error('expected a rotation')
    t.equal(r1.token.generation, 1, 'made under their key: format 2')
    // Here, under our key, t0's mac does not verify: format 1, whose one candidate is not held.
    const here = ours.parse(t0.raw) as ParsedRefreshToken
    t.equal(here.generation, undefined)
    t.same(await store.rotate(here, SEEN), { kind: 'underivable', sid: t0.sid })
    t.same(await store.rotate(here, SEEN), { kind: 'underivable', sid: t0.sid }, 'again: nothing was written, nothing revoked')
    t.same((await store.listForUser('alice')).map(f => f.generation), [1], 'the family is as the rotation left it')
    const there = await store.rotate(t0, SEEN)
    t.equal(there.kind, 'grace', 'the same retry at a gateway with their key')
    t.equal(tokenOf(there).raw, r1.token.raw, 'gets the successor')
    t.equal((await store.rotate(r1.token, SEEN)).kind, 'rotated', 'which rotates on')
  })
}
