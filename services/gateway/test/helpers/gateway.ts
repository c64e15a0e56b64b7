/**
 * Build a gateway for a test from environment-style settings, with its log lines captured,
 * and close it in teardown.
 */
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import type { Test } from 'tap'
import { ManualClock, type Clock } from '#shared/clock.js'
import { buildGatewayApp, type GatewayDeps } from '#gateway/app.js'
import { loadGatewayConfig, type GatewayConfig } from '#gateway/config.js'
import { UserDirectory } from '#gateway/identity/user-directory.js'

export interface TestGateway {
  readonly app: FastifyInstance
  readonly config: GatewayConfig
  readonly logs: Array<Record<string, unknown>>
  /** Every raw log line, to search for secrets. */
  readonly rawLogs: string[]
  readonly password: string
}

export const TEST_USER = 'alice'
export const TEST_PASSWORD = 'correct horse battery staple'

let usersCache: Promise<UserDirectory> | undefined

/** One directory with alice and bob, hashed once per test file (argon2 is deliberately slow). */
export async function testUsers (): Promise<UserDirectory> {
  usersCache ??= (async () => {
    const { mkdtempSync } = await import('node:fs')
    const { tmpdir } = await import('node:os')
    const { join } = await import('node:path')
    const { addUser } = await import('#gateway/identity/users-file.js')
    const file = join(mkdtempSync(join(tmpdir(), 'lk-users-')), 'users.json')
    await addUser(file, { username: TEST_USER, password: TEST_PASSWORD, scope: 'notes:read notes:write' })
    await addUser(file, { username: 'bob', password: TEST_PASSWORD, scope: 'notes:read' })
    return (await UserDirectory.load(file)).directory
  })()
  return usersCache
}

export async function buildTestGateway (
  t: Test,
  env: Record<string, string> = {},
  deps: Partial<GatewayDeps> = {}
): Promise<TestGateway> {
  const config = loadGatewayConfig({ LOG_LEVEL: 'info', ...env })
  const logs: Array<Record<string, unknown>> = []
  const rawLogs: string[] = []
  const logStream = {
    write (line: string) {
      rawLogs.push(line)
      try { logs.push(JSON.parse(line) as Record<string, unknown>) } catch { /* not JSON */ }
    }
  }
  const app = await buildGatewayApp(config, { logStream, deps: { users: await testUsers(), ...deps } })
  t.teardown(() => app.close())
  await app.ready()
  return { app, config, logs, rawLogs, password: TEST_PASSWORD }
}

export function manualClock (): ManualClock {
  return new ManualClock(Date.now())
}

export type { Clock }

/** The `lk_refresh` value a response set, or undefined. */
export function refreshCookieOf (res: LightMyRequestResponse): { value: string, attributes: string } | undefined {
  const raw = res.headers['set-cookie']
  const list = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw]
  const line = list.find(c => c.startsWith('lk_refresh='))
  if (line === undefined) return undefined
  const [pair, ...attrs] = line.split(';')
  return { value: (pair as string).slice('lk_refresh='.length), attributes: attrs.map(a => a.trim()).join('; ') }
}

export async function login (app: FastifyInstance, username = TEST_USER, password = TEST_PASSWORD, headers: Record<string, string> = {}) {
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { username, password }, headers })
  const cookie = refreshCookieOf(res)
  return { res, body: res.json() as Record<string, unknown>, refresh: cookie?.value }
}

export async function refresh (app: FastifyInstance, token: string | undefined, headers: Record<string, string> = {}) {
  const res = await app.inject({
    method: 'POST',
    url: '/auth/refresh',
    headers: token === undefined ? headers : { cookie: `lk_refresh=${token}`, ...headers }
  })
  return { res, body: res.json() as Record<string, unknown>, refresh: refreshCookieOf(res)?.value, cookie: refreshCookieOf(res) }
}
