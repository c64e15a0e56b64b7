/**
 * docs/contract.md "Refresh-token families" 6 against a real 3-master Redis Cluster: the family
 * contract suite on ioredis' Cluster client, the HTTP flow through a gateway configured
 * with REDIS_CLUSTER_NODES, families spread over every master, a TTL on every key on every
 * master, the login limiter and the revocation bus on the cluster, and REDIS_WAIT_REPLICAS
 * sending WAIT to the node that owns the family's slot.
 */
import t, { type Test } from 'tap'
import { ManualClock } from '#shared/clock.js'
import { isLatchkeyError } from '#shared/errors.js'
import { connectRedis, createRedisClient } from '#gateway/sessions/redis-connection.js'
import { RedisFamilyStore, STORE_CALL_DEADLINE_MS } from '#gateway/sessions/redis-family-store.js'
import { REDIS_WAIT_TIMEOUT_MS } from '#gateway/sessions/replica-wait.js'
import { parseRefreshToken } from '#gateway/sessions/refresh-token.js'
import type { Redis } from 'ioredis'
import { familyStoreContract, LIMITS, newFamily } from '../../services/gateway/test/sessions/family-store.contract.js'
import { buildTestGateway, login, refresh } from '../../services/gateway/test/helpers/gateway.js'
import { claimsOf } from '../../services/gateway/test/helpers/listening.js'
import { redisClusterForTest, redisTopologySkipReason, scanNode, until } from '../helpers/redis-cluster.js'

const SEEN = { ip: '198.51.100.7', userAgent: 'cluster-test/1.0' }

const skip = redisTopologySkipReason()
if (skip !== undefined) {
  t.plan(0, skip)
} else {
  const cluster = await redisClusterForTest(t)
  const client = createRedisClient({ kind: 'cluster', nodes: cluster.nodes, url: undefined })
  t.ok(await connectRedis(client), 'the Cluster client connects')
  t.teardown(() => { client.disconnect() })

  let stores = 0
  /** A store on the shared Cluster client, with its own key prefix. */
  const storeOn = (options: { waitReplicas?: number, keyPrefix?: string } = {}): { store: RedisFamilyStore, keyPrefix: string } => {
    const keyPrefix = options.keyPrefix ?? `${cluster.prefix}s${++stores}:`
    const store = new RedisFamilyStore({ client, limits: LIMITS, clock: new ManualClock(), keyPrefix, closeClient: false, ...options })
    return { store, keyPrefix }
  }

  /** Which master (index into cluster.masters) holds each key. */
  const ownerOf = async (keys: string[], prefix: string): Promise<number[]> => {
    const perMaster = await Promise.all(cluster.masters.map(m => scanNode(m, prefix)))
    return keys.map((k) => {
      const owners = perMaster.flatMap((held, m) => held.includes(k) ? [m] : [])
      if (owners.length !== 1) throw new Error(`${k} is on ${owners.length} masters`)
      return owners[0] as number
    })
  }

  /** WAIT calls each master has run (INFO commandstats). */
  const waitCalls = async (): Promise<number[]> => Promise.all(cluster.masters.map(async (m) => {
    const info = await m.info('commandstats')
    return Number(/^cmdstat_wait:calls=(\d+)/m.exec(info)?.[1] ?? 0)
  }))

  const assertEveryKeyHasTtl = async (t: Test, prefix: string): Promise<string[][]> => {
    const perMaster = await Promise.all(cluster.masters.map(m => scanNode(m, prefix)))
    for (const [i, keys] of perMaster.entries()) {
      const ttls = await Promise.all(keys.map(k => (cluster.masters[i] as Redis).pttl(k)))
      const without = keys.filter((_k, j) => (ttls[j] as number) <= 0)
      t.same(without, [], `master ${cluster.nodes[i]?.port}: all ${keys.length} keys under ${prefix} have a TTL`)
    }
    return perMaster
  }

  familyStoreContract(t, 'redis cluster', async (limits, clock, options) =>
    new RedisFamilyStore({ client, limits, clock, keyPrefix: `${cluster.prefix}c${++stores}:`, closeClient: false, ...options }))

  t.test('30 families of 30 users spread over all three masters, every key with a TTL', async (t) => {
    const { store, keyPrefix } = storeOn()
    const made = await Promise.all(Array.from({ length: 30 }, (_v, i) => store.create(newFamily(`user-${i}`))))
    const rotated = await Promise.all(made.map(m => store.rotate(m.token, SEEN)))
    t.same(rotated.map(r => r.kind), made.map(() => 'rotated'), 'every family rotates, whichever node holds it')

    const perMaster = await assertEveryKeyHasTtl(t, keyPrefix)
    const families = perMaster.map(keys => keys.filter(k => k.startsWith(`${keyPrefix}f:`)))
    const indexes = perMaster.map(keys => keys.filter(k => k.startsWith(`${keyPrefix}u:`)))
    for (const [i, f] of families.entries()) {
      t.ok(f.length > 0, `master ${cluster.nodes[i]?.port} holds ${f.length} of the 30 families and ${indexes[i]?.length} user indexes`)
    }
    t.same(families.flat().sort(), made.map(m => store.familyKey(m.token.sid)).sort(), 'exactly the 30 families, each on one master')
    t.same(indexes.flat().sort(), made.map((_m, i) => store.userIndexKey(`user-${i}`)).sort(), 'one index per user')
    t.same(perMaster.flat().filter(k => !k.startsWith(`${keyPrefix}f:`) && !k.startsWith(`${keyPrefix}u:`)), [store.tokenKeyKey()], 'nothing else was written but the refresh-token key')

    const lists = await Promise.all(made.map((_m, i) => store.listForUser(`user-${i}`)))
    t.same(lists.map(l => l.map(f => f.generation)), made.map(() => [1]), 'each user lists their family across slots')
  })

  t.test('REDIS_WAIT_REPLICAS: WAIT runs on the node that owns the family, and too few replicas answer GW_STORE_UNAVAILABLE', async (t) => {
    // This cluster has no replicas, so every WAIT 1 times out: what is proven here is where
    // the WAIT goes and what a shortfall does. A satisfied WAIT is proven with Sentinel.
    const plain = storeOn()
    const waiting = storeOn({ waitReplicas: 1, keyPrefix: plain.keyPrefix })
    const made = await Promise.all(Array.from({ length: 24 }, (_v, i) => plain.store.create(newFamily(`waiter-${i}`))))
    const owners = await ownerOf(made.map(m => plain.store.familyKey(m.token.sid)), plain.keyPrefix)
    // One family per master, rotated one at a time: each WAIT is counted on exactly one node.
    for (const [master, node] of cluster.nodes.entries()) {
      const i = owners.indexOf(master)
      t.not(i, -1, `some family lives on master ${node.port}`)
      const before = await waitCalls()
      const started = performance.now()
      await t.rejects(waiting.store.rotate(made[i]!.token, SEEN), { code: 'GW_STORE_UNAVAILABLE' })
      const ms = performance.now() - started
      t.ok(ms >= REDIS_WAIT_TIMEOUT_MS - 50 && ms < 2000, `503 after the WAIT timeout (${ms.toFixed(0)} ms)`)
      const after = await waitCalls()
      t.same(after.map((n, m) => n - (before[m] as number)), cluster.nodes.map((_n, m) => m === master ? 1 : 0),
        `the WAIT went to master ${node.port} only`)
      // The rotation was taken back on the master (it was never acknowledged): the client's
      // retry with the token it holds rotates it (here through a store that does not wait).
      t.equal((await plain.store.rotate(made[i]!.token, SEEN)).kind, 'rotated', 'a retry rotates the token the client still holds')
    }

    // Concurrent rotations share WAITs (one outstanding per connection), so they do not
    // queue end to end behind each other's timeouts.
    const rest = made.filter((_m, i) => !cluster.nodes.some((_n, master) => owners.indexOf(master) === i))
    const before = await waitCalls()
    const started = performance.now()
    const results = await Promise.allSettled(rest.map(m => waiting.store.rotate(m.token, SEEN)))
    const ms = performance.now() - started
    t.ok(results.every(r => r.status === 'rejected' && isLatchkeyError(r.reason) && r.reason.code === 'GW_STORE_UNAVAILABLE'),
      `all ${rest.length} concurrent rotations: GW_STORE_UNAVAILABLE`)
    t.ok(ms < STORE_CALL_DEADLINE_MS + 200, `all answered in ${ms.toFixed(0)} ms`)
    const sent = (await waitCalls()).reduce((sum, n, m) => sum + n - (before[m] as number), 0)
    t.ok(sent <= 2 * cluster.nodes.length, `${rest.length} rotations needed only ${sent} WAITs (at most two per node)`)

    await t.rejects(waiting.store.create(newFamily('waiter-login')), { code: 'GW_STORE_UNAVAILABLE' }, 'a login waits too')
    t.ok(await client.ping(), 'the cluster connections are usable at once afterwards')
  })

  t.test('HTTP: login → refresh → grace → reuse → logout through a gateway on REDIS_CLUSTER_NODES', async (t) => {
    const clock = new ManualClock(Date.now())
    const prefix = `${cluster.prefix}gw:`
    const env = { REDIS_CLUSTER_NODES: cluster.nodesEnv, REDIS_KEY_PREFIX: prefix, LOG_LEVEL: 'warn' }
    const a = await buildTestGateway(t, env, { clock })
    // A second replica on the same cluster, to see the revocation arrive over pub/sub.
    const b = await buildTestGateway(t, env, { clock, keys: a.app.latchkey.deps.keys })

    const first = await login(a.app)
    t.equal(first.res.statusCode, 200, 'login (the rate limiter counted it in the cluster)')
    const t0 = first.refresh as string
    const sid = parseRefreshToken(t0)?.sid
    t.equal(claimsOf(first.body.access_token as string).sid, sid, 'the access token names the family')

    const r1 = await refresh(a.app, t0)
    t.equal(r1.res.statusCode, 200, 'refresh rotates')
    const t1 = r1.refresh as string
    t.not(t1, t0)
    const retry = await refresh(b.app, t0)
    t.equal(retry.res.statusCode, 200, 'the predecessor inside grace, at the other replica')
    t.equal(retry.refresh, t1, 'gets the same successor')

    clock.advance(a.config.refreshReuseGraceS * 1000 + 1)
    const replay = await refresh(a.app, t0)
    t.equal(replay.res.statusCode, 401, 'the predecessor after grace is reuse')
    t.equal(replay.body.error, 'invalid_grant')
    t.equal((await refresh(a.app, t1)).res.statusCode, 401, 'the live successor died with the family')
    const reuse = a.logs.filter(l => l.event === 'refresh_reuse_detected')
    t.same(reuse.map(l => [l.sid, l.user]), [[sid, claimsOf(first.body.access_token as string).sub]], 'one refresh_reuse_detected line with family and user')

    // Logout: the family is revoked and the revocation reaches the other replica over
    // pub/sub (PUBLISH inside a script on a cluster reaches every node's subscribers).
    await until('both replicas to subscribe to the revocation channel', 5000, async () => {
      const counts = await Promise.all(cluster.masters.map(m => m.pubsub('NUMSUB', `${prefix}revoked`) as Promise<[string, number]>))
      return counts.reduce((sum, [, n]) => sum + Number(n), 0) >= 2
    })
    const second = await login(a.app)
    t.equal(second.res.statusCode, 200)
    const s0 = second.refresh as string
    const sid2 = parseRefreshToken(s0)?.sid as string
    t.notOk(b.app.latchkey.deps.revoked.has(sid2))
    const out = await a.app.inject({ method: 'POST', url: '/auth/logout', headers: { cookie: `lk_refresh=${s0}` } })
    t.equal(out.statusCode, 204, 'logout')
    t.equal((await refresh(a.app, s0)).res.statusCode, 401, 'the logged-out family is gone')
    t.ok(a.app.latchkey.deps.revoked.has(sid2), 'revoked at once at this replica')
    const published = performance.now()
    await until('the other replica to hear of the revocation', 1000, async () => b.app.latchkey.deps.revoked.has(sid2))
    t.pass(`the other replica refused the session ${(performance.now() - published).toFixed(0)} ms after logout`)
    const warnings = [...a.logs, ...b.logs].filter(l => l.level as number >= 40 && l.event !== 'refresh_reuse_detected' &&
      !String(l.msg).startsWith('SIGNING_KEYS_FILE is not set'))
    t.same(warnings.map(l => l.msg), [], 'no other warnings (no failed broadcast, no Redis errors)')

    const perMaster = await assertEveryKeyHasTtl(t, prefix)
    const all = perMaster.flat()
    t.ok(all.some(k => k.startsWith(`${prefix}rl:`)), 'the login limiter keeps its counters in the cluster')
    t.equal(perMaster.filter(keys => keys.some(k => k.startsWith(`${prefix}revoked:{`))).length, 3, 'a copy of the revoked-session set on each master')
  })
}
