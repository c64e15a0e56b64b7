/**
 * Edge revocation on a real 3-master Redis Cluster with one master killed (the others keep
 * serving their slots: cluster-require-full-coverage no): the revoked set's copies live on
 * all three masters, so a revocation published with one of them gone is still durable,
 * reaches the other replica, and is loaded by a replica that starts afterwards.
 */
import t, { type Test } from 'tap'
import { Command } from 'ioredis'
import { systemClock } from '#shared/clock.js'
import { connectRedis, createRedisClient } from '#gateway/sessions/redis-connection.js'
import { RedisRevocationBus } from '#gateway/sessions/revocation.js'
import { redisClusterForTest, redisTopologySkipReason } from '../helpers/redis-cluster.js'

const skip = redisTopologySkipReason()
if (skip !== undefined) {
  t.plan(0, skip)
} else {
  const cluster = await redisClusterForTest(t, { requireFullCoverage: false })
  const silent = { warn () {} }
  const bus = async (t: Test, start = true): Promise<RedisRevocationBus> => {
    const client = createRedisClient({ kind: 'cluster', nodes: cluster.nodes, url: undefined }, { keyPrefix: cluster.prefix, log: silent })
    await connectRedis(client)
    const b = new RedisRevocationBus({ client, keyPrefix: cluster.prefix, clock: systemClock, ttlMs: 60_000, log: silent })
    t.teardown(async () => { await b.close(); client.disconnect() })
    if (start) t.equal(await b.start(), true, 'loaded the revoked set')
    return b
  }
  /** Index of the master that serves `key`'s slot. */
  const ownerOf = async (key: string): Promise<number> => {
    const slot = new Command('exists', [key]).getSlot() ?? -1
    const ranges = await cluster.masters[0]?.cluster('SLOTS') ?? []
    const port = ranges.find(([lo, hi]) => slot >= lo && slot <= hi)?.[2]?.[1]
    return cluster.nodes.findIndex(n => n.port === port)
  }

  t.test('the master of the first copy of the revoked set is killed: publish still succeeds, B refuses, a late C loads it', async (t) => {
    const a = await bus(t)
    const b = await bus(t)
    const down = await ownerOf(`${cluster.prefix}revoked:{r0}`)
    t.ok(down >= 0, `the first copy lives on master ${down}`)
    const owners = new Set(await Promise.all(['r0', 'r1', 'r2'].map(tag => ownerOf(`${cluster.prefix}revoked:{${tag}}`))))
    t.equal(owners.size, 3, 'the three copies live on three different masters')
    await cluster.kill(down)
    const started = Date.now()
    await a.publish(['sid-master-down'])
    t.comment(`publish resolved in ${Date.now() - started} ms with one master down`)
    t.ok(a.has('sid-master-down'))
    while (!b.has('sid-master-down') && Date.now() - started < 5000) await new Promise(resolve => setTimeout(resolve, 20))
    t.ok(b.has('sid-master-down'), `B refuses it (${Date.now() - started} ms after the publish started)`)
    const c = await bus(t, false)
    await c.start()
    t.ok(c.has('sid-master-down'), 'a replica started afterwards loads it from the surviving copies')
  })
}
