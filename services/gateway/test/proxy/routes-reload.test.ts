/**
 * ROUTES_FILE reloaded without a restart (ops/reloader.ts): a new table takes effect within
 * seconds, in both lanes and in forward-auth; a bad file is refused and the old one stays.
 */
import { mkdtempSync, renameSync, writeFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { buildTestGateway, login } from '../helpers/gateway.js'
import { echoUpstream, send } from './harness.js'

async function eventually (check: () => Promise<boolean>, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check()) return true
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  return false
}

t.test('a changed ROUTES_FILE is in force without a restart; a bad one is refused', async (t) => {
  const upstream = await echoUpstream(t)
  const dir = mkdtempSync(join(tmpdir(), 'lk-routes-'))
  const file = join(dir, 'routes.json')
  // Written as editors and kubelet do: a new file renamed over the old one.
  const write = (content: string): void => { writeFileSync(`${file}.tmp`, content); renameSync(`${file}.tmp`, file) }
  write(JSON.stringify([{ prefix: '/api/', upstream: upstream.url }]))
  const gw = await buildTestGateway(t, { ROUTES_FILE: file })
  await gw.app.listen({ port: 0, host: '127.0.0.1' })
  const port = (gw.app.server.address() as AddressInfo).port
  const authorization = `Bearer ${(await login(gw.app)).body.access_token as string}`
  const status = async (path: string): Promise<number> => (await send(port, { path, headers: { authorization } })).status

  t.equal(await status('/api/x'), 200)
  t.equal(await status('/api/x'), 200, 'and through the fast lane')
  t.equal(await status('/v2/x'), 404)

  write(JSON.stringify([{ prefix: '/api/', upstream: upstream.url, scopes: ['admin'] }, { prefix: '/v2/', upstream: upstream.url }]))
  t.ok(await eventually(async () => await status('/api/x') === 403), 'the new scope is required (a cached token, the lane declines)')
  t.equal(await status('/v2/x'), 200, 'a new route is served')
  const verify = await gw.app.inject({ method: 'GET', url: '/auth/verify', headers: { authorization, 'x-forwarded-uri': '/api/x' } })
  t.equal(verify.statusCode, 403, 'forward-auth follows the same table')

  write('[{"prefix": "/auth/", "upstream": "http://127.0.0.1:1"}]')
  t.ok(await eventually(async () => /latchkey_config_reload_total\{file="ROUTES_FILE",result="failure"\} 1/.test((await gw.app.inject({ method: 'GET', url: '/metrics' })).body)), 'the bad file is counted as refused')
  t.equal(await status('/v2/x'), 200, 'and the table in force stays')
  t.equal(gw.logs.filter(l => l.level === 50 && JSON.stringify(l).includes('ROUTES_FILE')).length, 1, 'one error line names the file')
})
