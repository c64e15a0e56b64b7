/**
 * What every JtiReplayStore owes (RFC 7523 §3 item 7: a jti is accepted once), run against
 * the in-process twin and Redis by jti-replay-store.test.ts. Time moves by ManualClock only.
 */
import type { Test } from 'tap'
import { ManualClock } from '#shared/clock.js'
import type { JtiReplayStore } from '#gateway/oauth/jti-replay-store.js'

export type MakeJtiStore = (clock: ManualClock) => Promise<JtiReplayStore>

export function jtiReplayStoreContract (t: Test, name: string, make: MakeJtiStore): void {
  const setup = async (t: Test) => {
    const clock = new ManualClock(Date.now())
    const store = await make(clock)
    t.teardown(() => store.close())
    return { clock, store }
  }

  t.test(`${name}: a jti is claimed once until its expiry, per issuer`, async (t) => {
    const { clock, store } = await setup(t)
    const until = clock.now() + 60_000
    t.equal(await store.claim('svc-a', 'j1', until), true, 'first claim')
    t.equal(await store.claim('svc-a', 'j1', until), false, 'replay')
    t.equal(await store.claim('svc-b', 'j1', until), true, 'same jti, another issuer')
    t.equal(await store.claim('svc-a', 'j2', until), true, 'another jti')
    t.equal(await store.claim('svc-a\0j1', '', until), true, 'no ambiguity between issuer and jti')
  })

  t.test(`${name}: concurrent claims of one jti: exactly one wins`, async (t) => {
    const { clock, store } = await setup(t)
    const results = await Promise.all(Array.from({ length: 20 }, async () => await store.claim('svc-a', 'race', clock.now() + 60_000)))
    t.equal(results.filter(Boolean).length, 1)
  })
}
