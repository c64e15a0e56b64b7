/**
 * Two gateway replicas on one Redis (docs/contract.md "Refresh-token families" 2 and 3 across
 * processes): the family lives in Redis, not in a replica, so a token rotated at A and
 * replayed at B after grace is reuse, and a retry at B inside grace gets A's successor.
 */
import t, { type Test } from 'tap'
import { ManualClock } from '#shared/clock.js'
import { parseRefreshToken } from '#gateway/sessions/refresh-token.js'
import { redisForTest } from '../helpers/redis.js'
import { buildTestGateway, login, refresh, type TestGateway } from '../../services/gateway/test/helpers/gateway.js'
import { claimsOf } from '../../services/gateway/test/helpers/listening.js'

const redis = await redisForTest(t)

/** Replicas A and B: same Redis, same key prefix, same signing keys, one clock the test moves. */
async function twoReplicas (t: Test): Promise<{ a: TestGateway, b: TestGateway, clock: ManualClock }> {
  const clock = new ManualClock(Date.now())
  const env = { REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix, LOG_LEVEL: 'warn' }
  const a = await buildTestGateway(t, env, { clock })
  const b = await buildTestGateway(t, env, { clock, keys: a.app.latchkey.deps.keys })
  return { a, b, clock }
}

t.test('a refresh at A and a replay at B after grace is reuse: both tokens die, B logs it', async (t) => {
  const { a, b, clock } = await twoReplicas(t)
  const first = await login(a.app)
  t.equal(first.res.statusCode, 200)
  const t0 = first.refresh as string
  const sid = parseRefreshToken(t0)?.sid
  const user = claimsOf(first.body.access_token as string).sub

  const atA = await refresh(a.app, t0)
  t.equal(atA.res.statusCode, 200, 'A rotates')
  const t1 = atA.refresh as string
  t.not(t1, t0)

  clock.advance(a.config.refreshReuseGraceS * 1000 + 1)
  const atB = await refresh(b.app, t0)
  t.equal(atB.res.statusCode, 401, 'B sees the replay')
  t.same(atB.body, { error: 'invalid_grant', error_description: 'The refresh token is invalid, expired or revoked.' })
  t.equal(atB.cookie?.value, '', 'B clears the cookie')

  t.equal((await refresh(a.app, t1)).res.statusCode, 401, 'the successor A issued died with the family (at A)')
  t.equal((await refresh(b.app, t1)).res.statusCode, 401, '… and at B')

  const reuse = b.logs.filter(l => l.event === 'refresh_reuse_detected')
  t.same(reuse.map(l => [l.level, l.sid, l.user]), [[40, sid, user]], 'B logged refresh_reuse_detected (warn) with the family and the user')
  t.same(a.logs.filter(l => l.event === 'refresh_reuse_detected'), [], 'A logged nothing: it never saw the replay')
  const logged = [...a.rawLogs, ...b.rawLogs].join('\n')
  t.notOk(logged.includes(t0) || logged.includes(t1), 'no token in any log line')

  // The revocation is broadcast: A refuses the session's access tokens at the edge too.
  const deadline = Date.now() + 1000
  while (!a.app.latchkey.deps.revoked.has(sid as string) && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 20))
  t.ok(a.app.latchkey.deps.revoked.has(sid as string), 'A learned of the revocation within 1 s')
})

t.test('a retry at B inside grace gets the successor A issued', async (t) => {
  const { a, b, clock } = await twoReplicas(t)
  const first = await login(a.app)
  const t0 = first.refresh as string

  const atA = await refresh(a.app, t0)
  t.equal(atA.res.statusCode, 200)
  const t1 = atA.refresh as string

  clock.advance(a.config.refreshReuseGraceS * 1000 - 1)
  const atB = await refresh(b.app, t0)
  t.equal(atB.res.statusCode, 200, 'B answers the predecessor inside grace')
  t.equal(atB.refresh, t1, 'with the very successor A issued, not a new branch')
  t.equal(claimsOf(atB.body.access_token as string).sid, claimsOf(atA.body.access_token as string).sid, 'same session')

  const next = await refresh(b.app, t1)
  t.equal(next.res.statusCode, 200, 'the successor rotates at B')
  t.not(next.refresh, t1)
  t.same([...a.logs, ...b.logs].filter(l => l.event === 'refresh_reuse_detected'), [], 'no reuse anywhere')
})
