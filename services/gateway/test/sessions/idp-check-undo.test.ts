/**
 * SessionService.refresh of a family bound to its IdP when the IdP cannot be asked, with
 * pending rotations (what REDIS_WAIT_REPLICAS turns on): the refresh fails with
 * GW_OIDC_UNAVAILABLE (503), the rotation is taken back (`undoRotation`), and the client's
 * retry with the token it holds works and is not reuse — also when that undo is lost (a
 * failover forgets it), because the service commits a rotation only once it answers it.
 * The store is the memory twin (same contract as Redis); time is a ManualClock.
 */
import t, { type Test } from 'tap'
import { ManualClock } from '#shared/clock.js'
import { isLatchkeyError } from '#shared/errors.js'
import { gatewayError } from '#gateway/errors.js'
import type { AccessTokenIssuer } from '#gateway/keys/access-token.js'
import type { GatewayEvents } from '#gateway/ops/events.js'
import { MemoryFamilyStore } from '#gateway/sessions/memory-family-store.js'
import type { ParsedRefreshToken } from '#gateway/sessions/refresh-token.js'
import { BROWSER_CLIENT_ID, SessionService, type IdpCheck } from '#gateway/sessions/service.js'
import { LIMITS, newFamily } from './family-store.contract.js'

/** The memory store whose undo can be lost, as an undo sent to a master a failover then discards. */
class LossyStore extends MemoryFamilyStore {
  loseUndo = false
  override async undoRotation (successor: ParsedRefreshToken, generation: number): Promise<boolean> {
    return this.loseUndo ? false : await super.undoRotation(successor, generation)
  }
}

const quiet = { log: { info () {}, warn () {}, error () {} } }
const noEvents: GatewayEvents = {
  loginSucceeded () {}, loginFailed () {}, refreshed () {}, tokenIssued () {}, rateLimited () {}, reuseDetected () {}, rolledForward () {}, graceSuccessorUnderivable () {}, sessionsRevoked () {}
}

async function setup (t: Test, loseUndo: boolean) {
  const clock = new ManualClock()
  const store = new LossyStore({ limits: LIMITS, clock, pendingRotations: true })
  store.loseUndo = loseUndo
  t.teardown(() => store.close())
  const idp = { down: false, asked: 0 }
  const sessions = new SessionService({
    store,
    edge: { publish: async () => {} },
    events: noEvents,
    log: quiet.log,
    users: { getById: () => undefined },
    clients: { get: () => undefined },
    issuer: { issue: async () => ({ token: 'access-token', expiresIn: 300 }) } as unknown as AccessTokenIssuer,
    audience: 'api',
    federated: {
      providerOf: () => 'kc',
      checkAtIdp: async (): Promise<IdpCheck> => {
        idp.asked += 1
        if (idp.down) throw gatewayError('GW_OIDC_UNAVAILABLE')
        return { kind: 'vouched', binding: { sealed: `v1.sealed-${idp.asked}`, checkedAt: clock.now() } }
      }
    }
  })
  const { token } = await store.create(newFamily('alice', { clientId: BROWSER_CLIENT_ID, provider: 'kc', idp: { sealed: 'v1.sealed-0', checkedAt: 0 } }))
  const refresh = async (raw: string) => await sessions.refresh(quiet, raw, { clientId: BROWSER_CLIENT_ID, seen: { ip: '192.0.2.1', userAgent: 'test' } })
  return { clock, idp, token, refresh }
}

for (const loseUndo of [false, true]) {
  t.test(`IdP unreachable on a pending rotation, the undo ${loseUndo ? 'lost' : 'applied'}: 503, then the retry with the same token works; once answered, the old token is reuse after grace`, async (t) => {
    const { clock, idp, token, refresh } = await setup(t, loseUndo)
    idp.down = true
    const down = await refresh(token.raw).then(() => undefined, (err: unknown) => err)
    t.ok(isLatchkeyError(down) && down.code === 'GW_OIDC_UNAVAILABLE', '503: the IdP could not be asked')
    idp.down = false
    clock.advance(LIMITS.graceMs * 5)
    const retry = await refresh(token.raw)
    t.equal(retry.ok, true, 'past grace, the retry with the token the client holds is answered, not reuse')
    if (!retry.ok) return
    // Applied: a fresh rotation, asked at the IdP. Lost: the pending successor handed back
    // (a grace answer does not spend the IdP token again; the next rotation asks).
    t.equal(idp.asked, loseUndo ? 1 : 2)
    clock.advance(LIMITS.graceMs + 1)
    t.equal((await refresh(token.raw)).ok, false, 'answered 200, so committed: the old token after grace is reuse')
  })
}
