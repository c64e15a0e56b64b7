/**
 * `npm run bench:instructions`: instructions per request, counted by valgrind's callgrind:
 * a proxied GET (the default), a client_credentials token, a cookie refresh, a
 * refresh_token grant.
 *
 * CPU time per request moves by tens of percent on a shared machine (docs/performance.md);
 * an instruction count does not: callgrind counts the instructions the gateway process
 * executes (user space, every thread), whatever else the machine is doing. Use it to see
 * whether a change to the proxy hop or a token endpoint made it cheaper or dearer, beside
 * the same measurement of an older build:
 *
 *   git worktree add /tmp/base <rev> && (cd /tmp/base && npm ci && npm run build)
 *   npm run bench:instructions -- --baseline=/tmp/base
 *   npm run bench:instructions -- --request=client_credentials,refresh_cookie --baseline=/tmp/base
 *
 * Method: the gateway runs under callgrind with instrumentation off. For each kind of
 * request in turn it is warmed up with `--warmup` of them (4 connections), instrumentation
 * is switched on (callgrind_control), `--requests` more are sent, instrumentation is
 * switched off and the counts dumped; the dump's total is divided by the requests answered
 * 200. Then the gateway is counted for as long again with no requests, and "its own"
 * instructions per request leave out that idle work and the optimising compiler's (see
 * `own` below: both weigh far more per request under callgrind than natively). The kinds,
 * as in the bench's rows:
 *
 *   get                 GET /api/me through the proxy, each connection its own session's token
 *   client_credentials  POST /oauth/token grant_type=client_credentials, HTTP Basic
 *   refresh_cookie      POST /auth/refresh, each connection rotating its own session's cookie
 *   refresh_grant       POST /oauth/token grant_type=refresh_token, the same chains in the body
 *
 * The refresh chains start from sessions the measured gateway itself signs in
 * (POST /auth/login, outside the counts), so a baseline reads only families it wrote.
 * Each build is measured `--rounds` times, alternating; the minimum and median are printed
 * (JIT and GC threads add a little variation from one process to the next). About a minute
 * per kind and round.
 *
 *   --request=K,...  kinds to measure (default get)
 *   --requests=N     requests in each measured part (default 2000)
 *   --warmup=N       requests in each warm-up (default: as --requests)
 *   --rounds=N       processes measured per build (default 2)
 *   --baseline=DIR   also measure the gateway built in DIR (its bin/latchkey.js and dist/);
 *                    repeat it for several builds
 *   --keep=DIR       keep the callgrind dumps there, for callgrind_annotate: named
 *                    callgrind.<round>.<this|base|base2…>.<n>, two per kind in order (odd n
 *                    the measured part, even n the idle run after it)
 */
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'
import { ensureDebianPackage } from './lib/apt.js'
import { cookieChains, grantChains, type ChainSet } from './lib/chains.js'
import { ROOT, freePort, startChild, stopChildrenOnExit, waitForHttp } from './lib/processes.js'
import { BROWSER_USER_AGENT, connectBenchRedis, createChainFamilies } from './lib/sessions.js'
import { type Workspace, createWorkspace, gatewayEnv, startGateway, startRedis, startResource } from './lib/services.js'

/** Connections of the load: few, so that callgrind's single-threaded run keeps up. */
const CONNECTIONS = 4
/** A gateway under callgrind starts in about 30 s here; allow for slower machines. */
const START_TIMEOUT_MS = 300_000

const KINDS = ['get', 'client_credentials', 'refresh_cookie', 'refresh_grant'] as const
type Kind = typeof KINDS[number]
const WHAT: Record<Kind, string> = {
  get: 'proxied GET',
  client_credentials: 'client_credentials token',
  refresh_cookie: 'cookie refresh',
  refresh_grant: 'refresh_token grant'
}

const { values: args } = parseArgs({
  options: {
    request: { type: 'string', default: 'get' },
    requests: { type: 'string', default: '2000' },
    warmup: { type: 'string' },
    rounds: { type: 'string', default: '2' },
    baseline: { type: 'string', multiple: true },
    keep: { type: 'string' }
  },
  strict: true
})
const requests = Number(args.requests)
const warmup = Number(args.warmup ?? args.requests)
const rounds = Number(args.rounds)
if (![requests, warmup, rounds].every(n => Number.isInteger(n) && n >= 1)) throw new Error('--requests, --warmup and --rounds must be positive integers')
const kinds = args.request.split(',').map(k => k.trim()) as Kind[]
for (const k of kinds) if (!(KINDS as readonly string[]).includes(k)) throw new Error(`--request: ${k} is not one of ${KINDS.join(', ')}`)

function log (line: string): void { process.stderr.write(`[instructions] ${line}\n`) }

function revision (dir: string): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: dir, encoding: 'utf8' }).trim()
  } catch {
    return dir
  }
}

/** What one kind of request sends: a fixed request, or a chain per connection. */
interface Load {
  readonly path: string
  readonly method: 'GET' | 'POST'
  readonly headers?: Record<string, string>
  readonly body?: string
  readonly perConnection?: () => string
  /** Refresh chains: one per connection, continued from one load to the next. */
  readonly chains?: { readonly start: (tokens: readonly string[]) => ChainSet, tokens: string[] }
}

async function load (url: string, spec: Load, amount: number): Promise<number> {
  const chains = spec.chains === undefined ? undefined : spec.chains.start(spec.chains.tokens)
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    autocannon({
      url: `${url}${spec.path}`,
      method: spec.method,
      connections: CONNECTIONS,
      amount,
      timeout: 60,
      ...(spec.headers === undefined ? {} : { headers: spec.headers }),
      ...(spec.body === undefined ? {} : { body: spec.body }),
      setupClient: (client) => {
        if (spec.perConnection !== undefined) client.setHeaders({ ...spec.headers, authorization: spec.perConnection() })
        if (chains === undefined) return
        const script = chains.perConnection()
        client.setRequests([{
          method: spec.method,
          path: spec.path,
          setupRequest: (request) => {
            const next = script.next()
            return { ...request, headers: { ...spec.headers, ...next.headers }, body: next.body ?? spec.body }
          },
          onResponse: (status, body, _context, headers) => { script.answered(status, body, (headers ?? {}) as Record<string, string | string[]>) }
        }])
      }
    }, (err, res) => { if (err !== null && err !== undefined) reject(err); else resolve(res) })
  })
  if (result.non2xx > 0 || result.errors > 0) throw new Error(`${result.non2xx} non-2xx answers and ${result.errors} errors`)
  if (chains !== undefined && spec.chains !== undefined) {
    if (chains.broken() > 0) throw new Error(`${chains.broken()} refresh chains broke`)
    spec.chains.tokens = chains.currentTokens()
  }
  return result['2xx']
}

/**
 * Instructions per request: all of them; those of V8's optimising compiler among them; and
 * what the gateway ran (outside the compiler) in as long again with no requests, divided by
 * the same requests.
 */
interface Count { readonly all: number, readonly compiler: number, readonly idle: number, readonly idlePerS: number }

/**
 * A request's own instructions. Under callgrind a request takes some 50 times longer than
 * natively, so work paced by time rather than by requests weighs some 50 times more per
 * request than it does in a native run: timers (the revocation heartbeat, Redis health
 * pings, file polls), and TurboFan, which compiles on background threads whenever V8
 * finds a function hot (a few compilations more or less in the measured part move the
 * total by several percent). Both are taken out here: the compiler's functions
 * (v8::internal::compiler), and the idle run's count.
 */
const own = (c: Count): number => c.all - c.compiler - c.idle

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US')
const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor((s.length - 1) / 2)] as number }
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

/** A dump's total and its optimising compiler's share (callgrind_annotate, by function). */
function countOf (file: string): { all: number, compiler: number } {
  const totals = /^totals:\s+(\d+)/m.exec(readFileSync(file, 'utf8'))
  if (totals === null) throw new Error(`no totals in ${file}`)
  let compiler = 0
  const annotated = execFileSync('callgrind_annotate', ['--threshold=100', file], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 })
  for (const line of annotated.split('\n')) {
    const m = /^\s*([\d,]+)\s+\([ \d.]+%\)\s+(.*)$/.exec(line)
    if (m !== null && (m[2] as string).includes('v8::internal::compiler::')) compiler += Number((m[1] as string).replaceAll(',', ''))
  }
  return { all: Number(totals[1]), compiler }
}

/** Sessions signed in at the gateway under test (so that it reads families it wrote): their refresh tokens. */
async function signIn (url: string, ws: Workspace, n: number): Promise<string[]> {
  const tokens: string[] = []
  for (let i = 0; i < n; i++) {
    const res = await fetch(`${url}/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'user-agent': BROWSER_USER_AGENT },
      body: JSON.stringify({ username: ws.username, password: ws.password })
    })
    const cookie = /lk_refresh=([^;]+)/.exec(res.headers.get('set-cookie') ?? '')
    if (res.status !== 200 || cookie === null) throw new Error(`POST /auth/login answered ${res.status}`)
    tokens.push(cookie[1] as string)
  }
  return tokens
}

async function main (): Promise<void> {
  stopChildrenOnExit()
  if (!ensureDebianPackage('valgrind', 'valgrind', log)) throw new Error('valgrind is needed')
  const builds = [{ label: `this checkout (${revision(ROOT)})`, dir: ROOT, tag: 'this' }]
  for (const [i, given] of (args.baseline ?? []).entries()) {
    const dir = resolve(given)
    if (!existsSync(join(dir, 'dist'))) throw new Error(`${dir} has no dist/: build it first (npm ci && npm run build)`)
    builds.push({ label: `baseline (${revision(dir)})`, dir, tag: `base${i === 0 ? '' : i + 1}` })
  }
  const launch = { source: false, cpuProfDir: undefined }
  const ws = await createWorkspace(launch)
  const out = args.keep === undefined ? mkdtempSync(join(tmpdir(), 'latchkey-callgrind-')) : resolve(args.keep)
  mkdirSync(out, { recursive: true })
  process.once('exit', () => { ws.remove(); if (args.keep === undefined) rmSync(out, { recursive: true, force: true }) })
  const redis = await startRedis('redis')
  const r = connectBenchRedis(redis.url)
  const issuerPort = await freePort()
  const issuer = `http://127.0.0.1:${issuerPort}`
  const resource = await startResource(launch, await freePort(), issuer)
  // The issuer whose JWKS the resource reads: a gateway outside callgrind, up for the whole run.
  await startGateway('gateway (issuer)', launch, gatewayEnv(ws, issuerPort, redis.url, resource.url), false)
  // vgdb (callgrind_control) finds the process by a file named after USER and HOST, which
  // the minimal environment of the bench's children lacks: both sides get the same values.
  const vgEnv = { USER: 'latchkey-bench', LOGNAME: 'latchkey-bench', HOST: '127.0.0.1' }
  const prefix = join(out, 'vgdb')
  const basic = `Basic ${Buffer.from(`${encodeURIComponent(ws.clientId)}:${encodeURIComponent(ws.clientSecret)}`).toString('base64')}`
  const results = new Map<string, Count[]>(builds.flatMap(b => kinds.map(k => [`${k}\t${b.label}`, []])))

  async function loadOf (kind: Kind, url: string): Promise<Load> {
    switch (kind) {
      case 'get': {
        const families = await createChainFamilies(r, CONNECTIONS, ws.userId, ws.userScope)
        const bearers: string[] = []
        for (const token of families) {
          const res = await fetch(`${url}/auth/refresh`, { method: 'POST', headers: { cookie: `lk_refresh=${token}`, 'user-agent': BROWSER_USER_AGENT } })
          if (res.status !== 200) throw new Error(`POST /auth/refresh answered ${res.status}`)
          bearers.push(`Bearer ${(await res.json() as { access_token: string }).access_token}`)
        }
        let next = 0
        return { path: '/api/me', method: 'GET', headers: { 'user-agent': BROWSER_USER_AGENT }, perConnection: () => bearers[next++ % bearers.length] as string }
      }
      case 'client_credentials':
        return { path: '/oauth/token', method: 'POST', headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded', 'user-agent': 'bench-service/1.0' }, body: 'grant_type=client_credentials' }
      case 'refresh_cookie':
        return { path: '/auth/refresh', method: 'POST', chains: { start: cookieChains, tokens: await signIn(url, ws, CONNECTIONS) } }
      case 'refresh_grant':
        return { path: '/oauth/token', method: 'POST', chains: { start: grantChains, tokens: await signIn(url, ws, CONNECTIONS) } }
    }
  }

  for (let round = 0; round < rounds; round++) {
    for (const build of round % 2 === 0 ? builds : [...builds].reverse()) {
      const port = await freePort()
      const file = join(out, `callgrind.${round}.${build.tag}`)
      // Every gateway issues as the issuer's replica (same keys, same ISSUER).
      const env = { ...gatewayEnv(ws, port, redis.url, resource.url), ISSUER: issuer, ...vgEnv }
      const gw = startChild(`gateway under callgrind (${build.label})`, 'valgrind', [
        '--tool=callgrind', '--instr-atstart=no', '--vgdb=yes', `--vgdb-prefix=${prefix}`,
        // V8 rewrites its own generated code.
        '--smc-check=all-non-file', `--callgrind-out-file=${file}`,
        process.execPath, join(build.dir, 'bin/latchkey.js'), 'gateway'
      ], env)
      const url = `http://127.0.0.1:${port}`
      await waitForHttp(gw, `${url}/readyz`, START_TIMEOUT_MS)
      const control = (...a: string[]): void => { execFileSync('callgrind_control', [`--vgdb-prefix=${prefix}`, ...a, String(gw.pid)], { env: { ...process.env, ...vgEnv }, stdio: 'ignore' }) }
      let dumps = 0
      for (const kind of kinds) {
        // A warm-up and a measured part of the same chains (a refresh chain continues).
        const spec = await loadOf(kind, url)
        await load(url, spec, warmup)
        control('-i', 'on')
        const started = performance.now()
        const ok = await load(url, spec, requests)
        const ms = performance.now() - started
        control('-i', 'off')
        // Each dump holds what was counted since the previous one, and zeroes the counters.
        control('-d')
        const busy = countOf(`${file}.${++dumps}`)
        // As long again with no requests: the timers' work (heartbeats, health pings, polls).
        control('-i', 'on')
        await sleep(ms)
        control('-i', 'off')
        control('-d')
        const idle = countOf(`${file}.${++dumps}`)
        const count = { all: busy.all / ok, compiler: busy.compiler / ok, idle: (idle.all - idle.compiler) / ok, idlePerS: (idle.all - idle.compiler) / (ms / 1000) }
        results.get(`${kind}\t${build.label}`)?.push(count)
        log(`round ${round + 1}/${rounds}, ${build.label}: ${fmt(count.all)} instructions per ${WHAT[kind]}, ${fmt(own(count))} its own (${fmt(count.compiler)} in the optimising compiler, ${fmt(count.idle)} the same time idle)`)
      }
      await gw.stop()
    }
  }

  process.stdout.write('| Request | Gateway | instructions per request, min | median | its own, min | median | idle, per second | rounds |\n|---|---|---:|---:|---:|---:|---:|---:|\n')
  for (const [key, counts] of results) {
    const [kind, label] = key.split('\t') as [Kind, string]
    const all = counts.map(c => c.all)
    const owned = counts.map(own)
    process.stdout.write(`| ${WHAT[kind]} | ${label} | ${fmt(Math.min(...all))} | ${fmt(median(all))} | ${fmt(Math.min(...owned))} | ${fmt(median(owned))} | ${fmt(median(counts.map(c => c.idlePerS)))} | ${counts.length} |\n`)
  }
  process.stdout.write('\n"Its own": less what V8\'s optimising compiler ran in the measured part and less what the gateway ran in as long again with no requests (timers).\n')
  if (builds.length > 1) process.stdout.write('\n')
  for (const base of builds.slice(1)) {
    for (const kind of kinds) {
      const least = (label: string, f: (c: Count) => number): number => Math.min(...(results.get(`${kind}\t${label}`) ?? []).map(f))
      const ratio = (f: (c: Count) => number): string => (least(builds[0]?.label ?? '', f) / least(base.label, f)).toFixed(3)
      process.stdout.write(`${WHAT[kind]}: this checkout executes ${ratio(c => c.all)}× the instructions of ${base.label}, ${ratio(own)}× its own (by the minimum of each).\n`)
    }
  }
  process.exit(0)
}

await main()
