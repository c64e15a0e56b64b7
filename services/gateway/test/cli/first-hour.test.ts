/**
 * What a new user meets in the first hour (issue 17): `dev` exits on a taken port, listens
 * on loopback while it prints a password, and logs for people at a terminal; `gateway`
 * never invents a demo user; PORT without ISSUER is called out; tokens carry the user's
 * name.
 */
import t, { type Test } from 'tap'
import { createServer, type Server } from 'node:net'
import { networkInterfaces } from 'node:os'
import { decodeJwt } from 'jose'
import { buildGatewayApp } from '#gateway/app.js'
import { loadGatewayConfig } from '#gateway/config.js'
import { DEV_HOST, devEnvironments } from '#gateway/cli/main.js'
import { devLogStream } from '#gateway/cli/dev-log.js'
import { buildTestGateway, TEST_USER } from '../helpers/gateway.js'
import { freePort } from '../../../../test/helpers/redis.js'
import { latchkey } from '../../../../test/helpers/processes.js'

/** Exit well within tap's timeout if the process lingers: the bug was that it never exited. */
const EXIT_WAIT_MS = 15_000

async function occupy (t: Test, host: string): Promise<number> {
  const server: Server = createServer()
  await new Promise<void>((resolve) => { server.listen(0, host, resolve) })
  t.teardown(() => new Promise<void>((resolve) => { server.close(() => { resolve() }) }))
  return (server.address() as { port: number }).port
}

async function exitCode (t: Test, proc: ReturnType<typeof latchkey>): Promise<number | null | 'still running'> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<'still running'>((resolve) => { timer = setTimeout(() => { resolve('still running') }, EXIT_WAIT_MS) })
  t.teardown(() => { clearTimeout(timer) })
  return await Promise.race([proc.exited, timeout])
}

function captureLogs (): { stream: { write (line: string): void }, lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  return { lines, stream: { write (line: string) { lines.push(JSON.parse(line) as Record<string, unknown>) } } }
}

t.test('dev on a taken port exits 2 with one line, the resource service closed too', async (t) => {
  const taken = await occupy(t, '127.0.0.1')
  const resourcePort = await freePort()
  const dev = latchkey(t, ['dev'], { PORT: String(taken), RESOURCE_PORT: String(resourcePort) })
  t.equal(await exitCode(t, dev), 2, 'exits 2, like `gateway` and `resource`')
  t.match(dev.stderr, /^latchkey: port already in use: 127\.0\.0\.1:\d+\n$/)
  const after = await fetch(`http://127.0.0.1:${resourcePort}/healthz`).then(r => r.status, () => 'refused')
  t.equal(after, 'refused', 'the resource service is not left listening')

  const takenResource = await occupy(t, '127.0.0.1')
  const dev2 = latchkey(t, ['dev'], { PORT: String(await freePort()), RESOURCE_PORT: String(takenResource) })
  t.equal(await exitCode(t, dev2), 2, 'a taken RESOURCE_PORT too')
  t.match(dev2.stderr, /port already in use/)
})

t.test('dev listens on loopback unless HOST says otherwise', async (t) => {
  t.equal(DEV_HOST, '127.0.0.1')
  t.equal(devEnvironments({}).gatewayEnv.HOST, '127.0.0.1')
  t.equal(devEnvironments({}).resourceEnv.HOST, '127.0.0.1')
  t.equal(devEnvironments({ HOST: '' }).gatewayEnv.HOST, '127.0.0.1', 'an empty HOST is unset')
  t.equal(devEnvironments({ HOST: '0.0.0.0' }).gatewayEnv.HOST, '0.0.0.0', 'HOST still overrides')
  t.equal(devEnvironments({ HOST: '0.0.0.0' }).resourceEnv.HOST, '0.0.0.0')

  const exposed = loadGatewayConfig(devEnvironments({ HOST: '0.0.0.0' }).gatewayEnv, { devMode: true })
  t.match(exposed.warnings, [/^HOST is 0\.0\.0\.0: the generated demo user's password works from any machine/], 'and then warns')
  t.same(loadGatewayConfig(devEnvironments({}).gatewayEnv, { devMode: true }).warnings, [], 'no warning on loopback')

  const port = await freePort()
  const dev = latchkey(t, ['dev'], { PORT: String(port), RESOURCE_PORT: String(await freePort()) })
  await dev.waitFor(/Demo user: demo \/ \S+/)
  t.match(dev.stdout, `(listening on 127.0.0.1:${port})`)
  t.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200)
  // Reachable from this machine only: any other address of this host is refused.
  const external = Object.values(networkInterfaces()).flat().find(i => i !== undefined && i.family === 'IPv4' && !i.internal)
  if (external !== undefined) {
    const status = await fetch(`http://${external.address}:${port}/healthz`).then(r => r.status, () => 'refused')
    t.equal(status, 'refused', `not reachable on ${external.address}`)
  }
  t.equal(await dev.stop(), 0)
})

t.test('gateway without USERS_FILE: no demo user, and it says so', async (t) => {
  const logs = captureLogs()
  const app = await buildGatewayApp(loadGatewayConfig({ LOG_LEVEL: 'info' }), { logStream: logs.stream })
  t.teardown(() => app.close())
  t.equal(app.latchkey.demoPassword, undefined, 'no password was generated')
  t.equal(app.latchkey.deps.users.size, 0, 'no user at all')
  const warning = logs.lines.find(l => l.level === 40 && /no USERS_FILE/.test(String(l.msg)))
  t.match(warning?.msg, /no user can sign in with a password.*latchkey users add.*USERS_FILE.*only in `latchkey dev`/)
  const login = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'demo', password: 'anything-at-all' } })
  t.equal(login.statusCode, 401)

  const dev = await buildGatewayApp(loadGatewayConfig({ LOG_LEVEL: 'silent' }, { devMode: true }))
  t.teardown(() => dev.close())
  t.type(dev.latchkey.demoPassword, 'string', '`dev` still has its demo user')
})

t.test('PORT without ISSUER is called out at start', async (t) => {
  t.match(loadGatewayConfig({ PORT: '9090' }).warnings, [/^PORT is 9090 but ISSUER is not set: tokens and \/\.well-known metadata name http:\/\/localhost:8080; set ISSUER/])
  t.same(loadGatewayConfig({ PORT: '9090', ISSUER: 'http://localhost:9090' }).warnings, [])
  t.same(loadGatewayConfig({ PORT: '8080' }).warnings, [])
  t.same(loadGatewayConfig({}).warnings, [])
  t.same(loadGatewayConfig(devEnvironments({ PORT: '9090' }).gatewayEnv, { devMode: true }).warnings, [], '`dev` follows PORT with its issuer')

  const logs = captureLogs()
  const app = await buildGatewayApp(loadGatewayConfig({ PORT: '9090', USERS_FILE: '', LOG_LEVEL: 'warn' }), { logStream: logs.stream })
  t.teardown(() => app.close())
  t.ok(logs.lines.some(l => l.level === 40 && /^PORT is 9090 but ISSUER is not set/.test(String(l.msg))), 'logged as a warning')
})

t.test('user access tokens name the user (preferred_username)', async (t) => {
  const gw = await buildTestGateway(t)
  const login = await gw.app.inject({ method: 'POST', url: '/auth/login', payload: { username: TEST_USER, password: gw.password } })
  t.equal(login.statusCode, 200)
  const claims = decodeJwt((login.json() as { access_token: string }).access_token)
  t.equal(claims.preferred_username, TEST_USER)
  t.match(claims.sub, /^usr_/)
})

t.test('dev logs for a terminal: one pretty line per request, JSON lines elsewhere', async (t) => {
  const out: string[] = []
  const stream = devLogStream({ write: (s: string) => out.push(s) }, 'gateway', { colorize: false })
  const time = Date.UTC(2026, 0, 1, 12, 0, 0)
  stream.write(`${JSON.stringify({ level: 30, time, pid: 1, hostname: 'h', reqId: 'r1', req: { method: 'GET', url: '/api/me' }, msg: 'incoming request' })}\n`)
  stream.write(`${JSON.stringify({ level: 30, time, pid: 1, hostname: 'h', reqId: 'r2', req: { method: 'POST', url: '/auth/refresh' }, msg: 'incoming request' })}\n`)
  stream.write(`${JSON.stringify({ level: 30, time, pid: 1, hostname: 'h', reqId: 'r1', res: { statusCode: 200 }, responseTime: 3.4, msg: 'request completed' })}\n`)
  stream.write(`${JSON.stringify({ level: 40, time, pid: 1, hostname: 'h', msg: 'no REDIS_URL: sessions are kept in this process only' })}\n`)
  t.equal(out.length, 2, 'an unanswered request prints nothing yet; an answered one prints once')
  t.match(out[0], /^\[\d\d:\d\d:\d\d\] INFO: gateway GET \/api\/me → 200 \(3 ms\)\n$/)
  t.match(out[1], /^\[\d\d:\d\d:\d\d\] WARN: gateway no REDIS_URL/)
  t.notMatch(out.join(''), /"pid"|hostname|reqId/, 'no JSON noise')

  // Piped (not a terminal), `dev` writes JSON lines: the browser tests parse them.
  const port = await freePort()
  const dev = latchkey(t, ['dev'], { PORT: String(port), RESOURCE_PORT: String(await freePort()), LOG_LEVEL: 'info' })
  await dev.waitFor(/Demo user/)
  const jsonLine = dev.stdout.split('\n').find(l => l.startsWith('{'))
  t.ok(jsonLine !== undefined && typeof (JSON.parse(jsonLine) as { level?: unknown }).level === 'number', 'JSON log lines when piped')
  await dev.stop()
})
