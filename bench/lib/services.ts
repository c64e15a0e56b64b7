/**
 * Starting what is measured: redis-server, the latchkey gateway and resource (the built
 * `bin/latchkey.js`, or the sources with `--source`), and the peers in bench/peers.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { type Child, ROOT, freePort, runToEnd, startChild, waitForHttp } from './processes.js'

export interface LaunchOptions {
  /** Run the services from TypeScript sources (tsx) instead of the build in dist/. */
  readonly source: boolean
  /** Directory for `--cpu-prof` profiles of the main gateway; undefined: no profiling. */
  readonly cpuProfDir: string | undefined
}

const TSX = ['--import=tsx', '--conditions=latchkey-source']

function latchkeyArgs (launch: LaunchOptions, args: readonly string[]): string[] {
  return launch.source ? [...TSX, join(ROOT, 'test/helpers/cli-entry.ts'), ...args] : [join(ROOT, 'bin/latchkey.js'), ...args]
}

export interface Workspace {
  readonly dir: string
  readonly keysFile: string
  readonly usersFile: string
  readonly clientsFile: string
  readonly username: string
  readonly password: string
  readonly userId: string
  readonly userScope: string
  readonly clientId: string
  readonly clientSecret: string
  /** The argon2id parameters of the bench user's stored hash (what logins pay). */
  readonly argon2: { readonly m: number, readonly t: number, readonly p: number }
  remove (): void
}

export const BENCH_USER_SCOPE = 'notes:read notes:write'
export const BENCH_CLIENT_SCOPE = 'internal:read'
export const AUDIENCE = 'latchkey-api'

/** Keys, one user and one confidential client, written with latchkey's own CLI. */
export async function createWorkspace (launch: LaunchOptions): Promise<Workspace> {
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-bench-'))
  const keysFile = join(dir, 'keys.json')
  const usersFile = join(dir, 'users.json')
  const clientsFile = join(dir, 'clients.json')
  const username = 'bench'
  const password = randomBytes(18).toString('base64url')
  const clientId = 'bench-service'
  await runToEnd('keys generate', process.execPath, latchkeyArgs(launch, ['keys', 'generate', '--alg', 'ES256', '--out', keysFile]), {})
  await runToEnd('users add', process.execPath, latchkeyArgs(launch, ['users', 'add', username, '--scope', BENCH_USER_SCOPE, '--file', usersFile]), {}, `${password}\n`)
  const printed = await runToEnd('clients add', process.execPath,
    latchkeyArgs(launch, ['clients', 'add', clientId, '--scope', BENCH_CLIENT_SCOPE, '--audience', AUDIENCE, '--file', clientsFile]), {})
  const secret = /^client_secret:\s*(\S+)/m.exec(printed)?.[1]
  if (secret === undefined) throw new Error('`latchkey clients add` printed no client_secret')
  const users = JSON.parse(readFileSync(usersFile, 'utf8')) as { users: Array<{ id: string, username: string, password: string, scope: string }> }
  const user = users.users.find(u => u.username === username)
  if (user === undefined) throw new Error('the bench user is missing from the users file')
  const params = /^\$argon2id\$v=\d+\$m=(\d+),t=(\d+),p=(\d+)\$/.exec(user.password)
  if (params === null) throw new Error('the bench user\'s hash is not argon2id')
  return {
    dir,
    keysFile,
    usersFile,
    clientsFile,
    username,
    password,
    userId: user.id,
    userScope: user.scope,
    clientId,
    clientSecret: secret,
    argon2: { m: Number(params[1]), t: Number(params[2]), p: Number(params[3]) },
    remove: () => { rmSync(dir, { recursive: true, force: true }) }
  }
}

export interface Service {
  readonly child: Child
  readonly url: string
}

export async function startRedis (name: string): Promise<Service & { readonly port: number }> {
  const port = await freePort()
  // No persistence: nothing measured should wait on a disk.
  const child = startChild(name, 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no'], {})
  const deadline = Date.now() + 10_000
  for (;;) {
    if (child.proc.exitCode !== null) throw new Error(`redis-server exited:\n${child.output()}`)
    if (/Ready to accept connections/.test(child.output())) break
    if (Date.now() > deadline) throw new Error(`redis-server did not start:\n${child.output()}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  return { child, url: `redis://127.0.0.1:${port}`, port }
}

/** Gateway environment for the bench: loopback, quiet logs, login limits out of the way. */
export function gatewayEnv (ws: Workspace, port: number, redisUrl: string, resourceUrl: string): Record<string, string> {
  return {
    PORT: String(port),
    HOST: '127.0.0.1',
    ISSUER: `http://127.0.0.1:${port}`,
    REDIS_URL: redisUrl,
    SIGNING_KEYS_FILE: ws.keysFile,
    USERS_FILE: ws.usersFile,
    CLIENTS_FILE: ws.clientsFile,
    RESOURCE_URL: resourceUrl,
    LOG_LEVEL: 'warn',
    // Every request comes from one IP and most from one user: the brute-force limits would
    // measure themselves. A full run outlasts the default access-token lifetime.
    LOGIN_MAX_ATTEMPTS_PER_USER: '1000000',
    LOGIN_MAX_ATTEMPTS_PER_IP: '1000000',
    ACCESS_TOKEN_TTL: '3600',
    COOKIE_SECURE: 'false'
  }
}

/**
 * A gateway from this checkout, or with `builtCheckout` from another one's build (its
 * `bin/latchkey.js` and `dist/`): the `--baseline` row, an older revision measured in the same run.
 */
export async function startGateway (name: string, launch: LaunchOptions, env: Record<string, string>, profile: boolean, builtCheckout?: string): Promise<Service> {
  const flags = profile && launch.cpuProfDir !== undefined ? ['--cpu-prof', '--cpu-prof-dir', launch.cpuProfDir] : []
  const args = builtCheckout === undefined ? latchkeyArgs(launch, ['gateway']) : [join(builtCheckout, 'bin/latchkey.js'), 'gateway']
  const child = startChild(name, process.execPath, [...flags, ...args], env)
  const url = `http://127.0.0.1:${env.PORT ?? ''}`
  await waitForHttp(child, `${url}/readyz`)
  return { child, url }
}

export async function startResource (launch: LaunchOptions, port: number, issuer: string): Promise<Service> {
  const env = { PORT: String(port), HOST: '127.0.0.1', JWKS_URL: `${issuer}/.well-known/jwks.json`, ISSUER: issuer, AUDIENCE, LOG_LEVEL: 'warn' }
  const child = startChild('resource', process.execPath, latchkeyArgs(launch, ['resource']), env)
  const url = `http://127.0.0.1:${port}`
  await waitForHttp(child, `${url}/healthz`)
  return { child, url }
}

/** A peer from bench/peers (always from source: it is bench code, not the product). */
export async function startPeer (name: string, file: string, env: Record<string, string>, readyPath = '/healthz'): Promise<Service> {
  const port = await freePort()
  const child = startChild(name, process.execPath, [...TSX, join(ROOT, 'bench/peers', file)], { ...env, PORT: String(port), HOST: '127.0.0.1' })
  const url = `http://127.0.0.1:${port}`
  await waitForHttp(child, `${url}${readyPath}`)
  return { child, url }
}
