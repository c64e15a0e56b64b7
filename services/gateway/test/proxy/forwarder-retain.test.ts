/**
 * Route-table reloads and the forwarder's upstream pools (forwarder.ts `retain`): a reload
 * that keeps an upstream keeps its pool, one that drops it closes it, and a request already
 * on its way to a dropped upstream still completes.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import pino from 'pino'
import t from 'tap'
import type { RouteConfig } from '#gateway/config.js'
import { createGatewayMetrics } from '#gateway/ops/metrics.js'
import { type Exchange, Forwarder } from '#gateway/proxy/forwarder.js'
import { compileRoute, type ProxyRoute } from '#gateway/proxy/upstream.js'
import { echoUpstream, send } from './harness.js'

t.test('reloads keep the pool of a kept upstream and close the rest; a request in flight finishes', async (t) => {
  const a = await echoUpstream(t)
  let releaseSlow: (() => void) | undefined
  const b = await echoUpstream(t, (req, res) => {
    if (req.url !== '/slow') return false
    releaseSlow = () => { res.end('late') }
    return true
  })
  const forwarder = new Forwarder({ metrics: createGatewayMetrics({ defaultMetrics: false }), timeoutMs: 5000 })
  t.teardown(() => { forwarder.close(true) })
  const compile = (configs: RouteConfig[]): ProxyRoute[] => configs.map(c => compileRoute(c))
  const config = (prefix: string, upstream: string): RouteConfig => ({ prefix, upstream, audience: 'x', scopes: [] } as unknown as RouteConfig)
  let routes = compile([config('/a/', a.url), config('/b/', b.url)])
  const server = http.createServer((req, res) => {
    const route = routes.find(r => req.url?.startsWith(r.prefix) === true) ?? routes[0] as ProxyRoute
    const exchange: Exchange = { route, upstream: route.upstream as NonNullable<ProxyRoute['upstream']>, log: pino({ level: 'silent' }), requestId: 'r', startedAt: process.hrtime.bigint(), hasBody: false, answered: false, failed: false }
    req.url = req.url?.slice(route.prefix.length - 1)
    forwarder.web(exchange, req, res)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const port = (server.address() as AddressInfo).port

  t.equal((await send(port, { path: '/a/x' })).status, 200)
  t.equal((await send(port, { path: '/b/x' })).status, 200)
  t.equal(forwarder.upstreamServers, 2)
  const slow = send(port, { path: '/b/slow' })
  while (releaseSlow === undefined) await new Promise(resolve => setTimeout(resolve, 10))

  for (let i = 0; i < 20; i++) {
    routes = compile([config('/a/', a.url)]) // as the plugin's onReplace does
    forwarder.retain(routes.map(r => r.upstream))
    t.equal((await send(port, { path: '/a/y' })).status, 200)
  }
  t.equal(forwarder.upstreamServers, 1, '20 reloads keeping /a/: one pool, /b/\'s closed')
  releaseSlow()
  const late = await slow
  t.equal(late.status, 200, 'the request already sent to the dropped upstream completed')
})
