/**
 * The in-process family store: the shared contract, plus its own bounds (sweeping and
 * the family cap) that keep a long-running single replica from growing without limit.
 */
import t from 'tap'
import { ManualClock } from '#shared/clock.js'
import { MemoryFamilyStore } from '#gateway/sessions/memory-family-store.js'
import { familyStoreContract, LIMITS, newFamily } from './family-store.contract.js'

familyStoreContract(t, 'memory', async (limits, clock, options) => new MemoryFamilyStore({ limits, clock, ...options }))

t.test('expired families are swept without being touched', async (t) => {
  const clock = new ManualClock()
  const store = new MemoryFamilyStore({ limits: LIMITS, clock })
  t.teardown(() => store.close())
  await store.create(newFamily('alice'))
  const { token } = await store.create(newFamily('bob'))
  clock.advance(LIMITS.idleTtlMs - 1)
  t.equal((await store.rotate(token, { ip: '', userAgent: '' })).kind, 'rotated')
  clock.advance(1)
  store.sweep()
  t.equal(store.size, 1, "alice's idle family is gone, bob's refreshed one stays")
  clock.advance(LIMITS.maxTtlMs)
  store.sweep()
  t.equal(store.size, 0)
})

t.test('the sweep timer runs on its own and never holds the process open', async (t) => {
  const clock = new ManualClock()
  const store = new MemoryFamilyStore({ limits: LIMITS, clock, sweepIntervalMs: 5 })
  t.teardown(() => store.close())
  await store.create(newFamily('alice'))
  clock.advance(LIMITS.idleTtlMs)
  // Waiting on the sweep timer itself (5 ms), not on a TTL: the clock already moved.
  await new Promise(resolve => setTimeout(resolve, 30))
  t.equal(store.size, 0)
})

t.test('past maxFamilies the oldest login is dropped', async (t) => {
  const clock = new ManualClock()
  const store = new MemoryFamilyStore({ limits: LIMITS, clock, maxFamilies: 3 })
  t.teardown(() => store.close())
  const made = []
  for (let i = 0; i < 5; i++) {
    made.push(await store.create(newFamily('alice')))
    clock.advance(1)
  }
  t.equal(store.size, 3)
  t.same((await store.listForUser('alice')).map(f => f.sid), made.slice(2).reverse().map(m => m.family.sid))
  t.same(await store.rotate(made[0]!.token, { ip: '', userAgent: '' }), { kind: 'invalid' })
})

t.test('limits are validated', async (t) => {
  const clock = new ManualClock()
  t.throws(() => new MemoryFamilyStore({ limits: { ...LIMITS, idleTtlMs: 0 }, clock }), RangeError)
  t.throws(() => new MemoryFamilyStore({ limits: { ...LIMITS, graceMs: -1 }, clock }), RangeError)
  t.throws(() => new MemoryFamilyStore({ limits: { ...LIMITS, maxTtlMs: 1.5 }, clock }), RangeError)
})
