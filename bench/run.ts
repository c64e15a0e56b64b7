/**
 * `npm run bench` (issue #6, docs/contract.md "Performance"): starts its own redis-server, gateway,
 * resource and peers on loopback, drives them with autocannon, prints one Markdown
 * table (req/s, p50, p99, ratios) and the targets, and writes bench/results/latest.json
 * and latest.svg.
 *
 * Fairness on a small, noisy machine: everything runs in this process tree at the same
 * time; the rows of one set alternate in rounds (the starting row rotates each round),
 * each round a warm-up run and then a fixed-duration measured run. A row's req/s is the
 * median of its rounds (each round's figure is kept in the JSON), its p50/p99 are over
 * every response of every measured round. Ratios are only taken within one set.
 *
 *   --quick         short run (~2-3 min): fewer, shorter rounds; 100,000 instead of 1,000,000 sessions
 *   --source        run the services from TypeScript sources instead of dist/ (no build needed)
 *   --cpu-prof      profile the main gateway (node --cpu-prof) and print where its time went
 *   --only=a,b      run only these sets: get, scale, tokens
 *   --rows=k1,k2    within those sets, run only the rows with these keys (as in latest.json),
 *                   e.g. --only=get --rows=gateway_proxy,http_proxy for a quick A/B of the hop
 *   --baseline=DIR  add rows: the proxied GET (get set), the client_credentials token and the
 *                   cookie refresh (tokens set) through a gateway built in another checkout
 *                   (e.g. `git worktree add /tmp/base <rev> && cd /tmp/base && npm ci && npm run build`),
 *                   beside this one's, in the same run: how a change moved their CPU
 *   --wait-proxy=S  wait up to S seconds for the gateway's /api/ proxy to answer 200 (default 30)
 *   --out=DIR       where latest.json / latest.svg go (default bench/results)
 */
import { execFileSync } from 'node:child_process'
import { mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { cookieChains, grantChains, perConnectionHeader, type ChainSet } from './lib/chains.js'
import { summariseProfile } from './lib/cpu-profile.js'
import { type LoadSpec, type Sample, runLoad, summarise } from './lib/load.js'
import { ensureDebianPackage } from './lib/apt.js'
import { haproxyUnavailable, startHaproxy } from './lib/haproxy.js'
import { startNginx } from './lib/nginx.js'
import { ROOT, freePort, rssBytes, stopAll, stopChildrenOnExit, treeCpuTimeMs, treeRssBytes, waitIdle } from './lib/processes.js'
import { type Row, type Target, atLeast, atMost, fmtRatio, markdownTable, ratio, targetsTable } from './lib/report.js'
import {
  AUDIENCE, BENCH_CLIENT_SCOPE, type LaunchOptions, type Service, createWorkspace, gatewayEnv, startGateway, startPeer, startRedis, startResource
} from './lib/services.js'
import {
  BROWSER_USER_AGENT, type BenchRedis, type SessionMemory, connectBenchRedis, createChainFamilies, liveFamilies,
  measureSessionMemory, populate, revokeFamilies, usedMemory
} from './lib/sessions.js'
import { chartSvg } from './lib/svg.js'

/**
 * The first round's warm-up is long: the gateway has far more code than a peer for V8 to
 * optimise and a heap that grows its young generation under load, and at 2 s its CPU per
 * proxied request was still falling from one round to the next (77 → 58 µs over six 3 s
 * rounds, a plain http-proxy flat at ~50 µs), so its first rounds measured its warm-up.
 */
const PLANS = {
  full: { warmupS: 8, laterWarmupS: 0.5, measureS: 4, rounds: 5, largeSessions: 1_000_000 },
  quick: { warmupS: 3, laterWarmupS: 0.5, measureS: 1.5, rounds: 3, largeSessions: 100_000 }
} as const
const SMALL_SESSIONS = 1_000
/** Concurrent connections per row: enough to saturate two cores, few enough for honest latencies. */
const CONNECTIONS = { get: 32, refresh: 32, clientCredentials: 32, login: 8 } as const
const SETS = ['get', 'scale', 'tokens'] as const
/** Workers of the pooled gateway rows: one per core of the machine. */
const POOL_WORKERS = Math.max(2, os.availableParallelism())
type SetName = typeof SETS[number]

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    source: { type: 'boolean', default: false },
    'cpu-prof': { type: 'boolean', default: false },
    only: { type: 'string' },
    rows: { type: 'string' },
    baseline: { type: 'string' },
    'wait-proxy': { type: 'string', default: '30' },
    out: { type: 'string', default: join(ROOT, 'bench/results') },
    help: { type: 'boolean', short: 'h', default: false }
  },
  strict: true
})
if (args.help === true) {
  process.stdout.write('usage: npm run bench -- [--quick] [--source] [--cpu-prof] [--only=get,scale,tokens] [--rows=KEY,...] [--baseline=DIR] [--wait-proxy=S] [--out=DIR]\n')
  process.exit(0)
}
const plan = args.quick === true ? PLANS.quick : PLANS.full
const only = new Set<SetName>(args.only === undefined ? SETS : args.only.split(',').map(s => {
  if (!(SETS as readonly string[]).includes(s)) throw new Error(`--only: unknown set ${JSON.stringify(s)} (sets: ${SETS.join(', ')})`)
  return s as SetName
}))
/** --rows: the row keys to run (every row when absent). */
const rowKeys = args.rows === undefined ? undefined : new Set(args.rows.split(','))
const outDir = resolve(args.out ?? join(ROOT, 'bench/results'))
mkdirSync(outDir, { recursive: true })
const launch: LaunchOptions = { source: args.source === true, cpuProfDir: args['cpu-prof'] === true ? outDir : undefined }
const largeLabel = plan.largeSessions.toLocaleString('en-US')

const started = Date.now()
function log (line: string): void {
  process.stderr.write(`[bench ${((Date.now() - started) / 1000).toFixed(0).padStart(4)}s] ${line}\n`)
}

/** One row of the table and how to load it; `spec` is called afresh for every run. */
interface Member {
  readonly key: string
  readonly set: SetName
  readonly name: string
  readonly group: string
  readonly kind: 'latchkey' | 'peer'
  readonly connections: number
  readonly spec?: () => Promise<LoadSpec>
  /** A request that must answer 200 before the row is measured. */
  readonly probe?: () => Promise<number>
  /** Processes whose CPU time is charged to this row's requests, the server under test first. */
  readonly cpu?: ReadonlyArray<readonly [string, number]>
  skipped?: string
  note?: string
  readonly samples: Sample[]
  chainBreaks: number
  /** CPU ms used during the measured runs, by process label. */
  readonly cpuMs: Map<string, number>
}

function member (m: Omit<Member, 'samples' | 'chainBreaks' | 'cpuMs'>): Member {
  return { ...m, samples: [], chainBreaks: 0, cpuMs: new Map() }
}

function cpuNow (m: Member): Map<string, number | undefined> {
  return new Map((m.cpu ?? []).map(([label, pid]) => [label, treeCpuTimeMs(pid)]))
}

async function status (url: string, init: RequestInit = {}): Promise<number> {
  try {
    const res = await fetch(url, { ...init, signal: AbortSignal.timeout(5000) })
    await res.arrayBuffer()
    return res.status
  } catch {
    return 0
  }
}

/** Alternate the members of one set in rounds; each round: warm-up, then the measured run. */
async function runSet (name: string, members: Member[]): Promise<void> {
  for (const m of members) {
    if (rowKeys !== undefined && !rowKeys.has(m.key)) m.skipped ??= 'not among --rows'
    if (m.skipped !== undefined || m.probe === undefined) continue
    const code = await m.probe()
    if (code !== 200) m.skipped = `answered ${code === 0 ? 'nothing' : code} to a valid request`
  }
  const live = members.filter(m => m.skipped === undefined && m.spec !== undefined)
  for (let round = 0; round < plan.rounds; round++) {
    const order = live.map((_m, i) => live[(i + round) % live.length] as Member)
    for (const m of order) {
      const spec = m.spec as () => Promise<LoadSpec>
      // The first round warms the JIT up; later ones only need their connections open.
      const warm = await spec()
      await runLoad(warm, round === 0 ? plan.warmupS : plan.laterWarmupS)
      await warm.cleanup?.()
      const ready = await spec()
      const cpuBefore = cpuNow(m)
      const sample = await runLoad(ready, plan.measureS)
      for (const [label, after] of cpuNow(m)) {
        const before = cpuBefore.get(label)
        if (before !== undefined && after !== undefined) m.cpuMs.set(label, (m.cpuMs.get(label) ?? 0) + after - before)
      }
      await ready.cleanup?.()
      m.samples.push(sample)
      const rps = sample.durationS > 0 ? sample.ok / sample.durationS : 0
      const bad = sample.non2xx + sample.errors > 0 ? ` (${sample.non2xx} non-2xx, ${sample.errors} errors)` : ''
      log(`${name} round ${round + 1}/${plan.rounds}: ${m.name}: ${Math.round(rps).toLocaleString('en-US')} req/s${bad}`)
    }
  }
}

/**
 * The cookie refresh row of another build (--baseline): its families may be stored in
 * another format, so its sessions are signed in at that gateway (POST /auth/login) and
 * signed out there afterwards, instead of being written into Redis by this checkout's code.
 */
function loginRefreshSpec (m: () => Member, url: string, username: string, password: string): () => Promise<LoadSpec> {
  const headers = { 'content-type': 'application/json', 'user-agent': BROWSER_USER_AGENT }
  const body = JSON.stringify({ username, password })
  return async () => {
    const tokens: string[] = []
    while (tokens.length < CONNECTIONS.refresh * 2) {
      await Promise.all(Array.from({ length: CONNECTIONS.login }, async () => {
        const res = await fetch(`${url}/auth/login`, { method: 'POST', headers, body })
        const cookie = /lk_refresh=([^;]+)/.exec(res.headers.get('set-cookie') ?? '')
        if (res.status !== 200 || cookie === null) throw new Error(`POST /auth/login at ${url} answered ${res.status}`)
        tokens.push(cookie[1] as string)
      }))
    }
    const set = cookieChains(tokens)
    return {
      url,
      method: 'POST',
      path: '/auth/refresh',
      connections: CONNECTIONS.refresh,
      perConnection: set.perConnection,
      cleanup: async () => {
        m().chainBreaks += set.broken()
        await Promise.all(set.currentTokens().map(async token => await status(`${url}/auth/logout`, { method: 'POST', headers: { cookie: `lk_refresh=${token}`, 'user-agent': BROWSER_USER_AGENT } })))
      }
    }
  }
}

/** A refresh row: fresh sessions per run, one chain per connection, revoked afterwards. */
function refreshSpec (m: () => Member, url: string, redis: BenchRedis, userId: string, scope: string, flavour: 'cookie' | 'grant'): () => Promise<LoadSpec> {
  return async () => {
    const tokens = await createChainFamilies(redis, CONNECTIONS.refresh * 2, userId, scope)
    const set: ChainSet = flavour === 'cookie' ? cookieChains(tokens) : grantChains(tokens)
    return {
      url,
      method: 'POST',
      path: flavour === 'cookie' ? '/auth/refresh' : '/oauth/token',
      connections: CONNECTIONS.refresh,
      perConnection: set.perConnection,
      cleanup: async () => {
        m().chainBreaks += set.broken()
        await revokeFamilies(redis, set.currentTokens())
      }
    }
  }
}

function gitRevision (cwd = ROOT): string | null {
  try {
    const rev = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd, encoding: 'utf8' }).trim()
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd, encoding: 'utf8' }).trim() !== ''
    return dirty ? `${rev}+dirty` : rev
  } catch {
    return null
  }
}

function round (n: number | undefined, digits: number): number | undefined {
  if (n === undefined || Number.isNaN(n)) return undefined
  const f = 10 ** digits
  return Math.round(n * f) / f
}

async function main (): Promise<void> {
  stopChildrenOnExit()
  log(`${args.quick === true ? 'quick' : 'full'} run: ${plan.rounds} rounds × (${plan.warmupS} s warm-up, later ${plan.laterWarmupS} s, + ${plan.measureS} s measured) per row; sets: ${[...only].join(', ')}`)
  const loadBefore = os.loadavg()
  const ws = await createWorkspace(launch)
  // Also when interrupted or failing: the workspace holds a private key and a client secret.
  process.once('exit', () => { ws.remove() })
  log(`workspace ${ws.dir}: keys, user "${ws.username}" (argon2id m=${ws.argon2.m},t=${ws.argon2.t},p=${ws.argon2.p}), client "${ws.clientId}"`)

  // The main Redis (every row but the scale pair) holds 1,000 background sessions too.
  const redisA = await startRedis('redis (main)')
  const rA = connectBenchRedis(redisA.url)
  await populate(rA, SMALL_SESSIONS)
  const gatewayPort = await freePort()
  const resourcePort = await freePort()
  const gatewayUrl = `http://127.0.0.1:${gatewayPort}`

  // The scale pair: two fresh gateways, each alone on its own Redis, identical but for the
  // number of live sessions there.
  interface ScaleSide { readonly redis: Service, readonly r: BenchRedis, gateway?: Service }
  let scale: { small: ScaleSide, large: ScaleSide } | undefined
  let memory: (SessionMemory & { used_memory_per_session: number, measured_on_sessions: number }) | undefined
  if (only.has('scale')) {
    const small = await startRedis('redis (1k sessions)')
    const large = await startRedis('redis (large)')
    scale = { small: { redis: small, r: connectBenchRedis(small.url) }, large: { redis: large, r: connectBenchRedis(large.url) } }
    await populate(scale.small.r, SMALL_SESSIONS)
    const rL = scale.large.r
    const before = await usedMemory(rL)
    const t0 = Date.now()
    log(`writing ${largeLabel} live sessions into a Redis of their own...`)
    const how = await populate(rL, plan.largeSessions, done => { log(`  ${done.toLocaleString('en-US')} sessions`) })
    const after = await usedMemory(rL)
    log(`  done in ${((Date.now() - t0) / 1000).toFixed(1)} s (${how.scripted.toLocaleString('en-US')} through the scripts, ${how.copied.toLocaleString('en-US')} copied)`)
    memory = { ...await measureSessionMemory(rL), used_memory_per_session: Math.round((after - before) / plan.largeSessions), measured_on_sessions: plan.largeSessions }
  } else {
    memory = { ...await measureSessionMemory(rA), used_memory_per_session: NaN, measured_on_sessions: SMALL_SESSIONS }
  }

  log('starting the resource, the gateways and the peers')
  const resource = await startResource(launch, resourcePort, gatewayUrl)
  const gateway = await startGateway('gateway', launch, gatewayEnv(ws, gatewayPort, redisA.url, resource.url), true)
  // The same gateway as a pool of one worker per core (WORKERS, see services/gateway/src/workers.ts)
  // on the same Redis, keys and issuer (a replica of the main one): what a 2-core host would
  // run, and how Keycloak's and Hydra's published figures are taken (all of the machine's CPUs).
  const poolPort = await freePort()
  const pool = only.has('tokens') || only.has('get')
    ? await startGateway(`gateway (WORKERS=${POOL_WORKERS})`, launch, { ...gatewayEnv(ws, poolPort, redisA.url, resource.url), ISSUER: gatewayUrl, WORKERS: String(POOL_WORKERS) }, false)
    : undefined
  // The same gateway again with tracing on (OTLP/HTTP to a sink that drops the spans): beside
  // the main gateway's row (tracing off) it shows what tracing costs when on, and that "off"
  // adds nothing (docs/performance.md "Tracing").
  const sink = only.has('get') && (rowKeys === undefined || rowKeys.has('gateway_proxy_traced'))
    ? await startPeer('peer: OTLP sink', 'otlp-sink.ts', {})
    : undefined
  const traced = sink === undefined
    ? undefined
    : await startGateway('gateway (tracing on)', launch, { ...gatewayEnv(ws, await freePort(), redisA.url, resource.url), ISSUER: gatewayUrl, OTEL_EXPORTER_OTLP_ENDPOINT: sink.url, OTEL_SERVICE_NAME: 'latchkey-bench' }, false)
  const baselineDir = args.baseline === undefined ? undefined : resolve(args.baseline)
  const baselineRev = baselineDir === undefined ? undefined : gitRevision(baselineDir)
  const baseline = baselineDir === undefined || !(only.has('get') || only.has('tokens'))
    ? undefined
    : await startGateway(`gateway (baseline ${baselineRev ?? baselineDir})`, launch, { ...gatewayEnv(ws, await freePort(), redisA.url, resource.url), ISSUER: gatewayUrl }, false, baselineDir)
  if (scale !== undefined) {
    for (const [label, side] of [['1k', scale.small], ['large', scale.large]] as const) {
      side.gateway = await startGateway(`gateway (${label})`, launch, gatewayEnv(ws, await freePort(), side.redis.url, resource.url), false)
    }
  }

  const members = new Map<string, Member>()
  const add = (m: Member): Member => { members.set(m.key, m); return m }
  const get = (key: string): Member => members.get(key) as Member

  // --- Set "get": GET /api/me, direct, without auth, through the gateway and the peers ---
  if (only.has('get')) {
    const peerEnv = { UPSTREAM: resource.url, ISSUER: gatewayUrl, AUDIENCE }
    const noauth = await startPeer('peer: resource without auth', 'resource-noauth.ts', {})
    const fastifyJwt = await startPeer('peer: @fastify/jwt', 'fastify-jwt.ts', peerEnv)
    const httpProxy = await startPeer('peer: http-proxy', 'http-proxy.ts', peerEnv)
    const fastifyProxy = await startPeer('peer: @fastify/http-proxy', 'fastify-proxy.ts', peerEnv)
    const haveNginx = ensureDebianPackage('nginx', 'nginx-light', log)
    const nginx = haveNginx ? await startNginx(ws.dir, resource.url) : undefined
    // nginx in front, latchkey deciding (forward-auth), with and without nginx's decision cache.
    const nginxAuth = haveNginx ? await startNginx(ws.dir, resource.url, { gatewayUrl, cache: false }) : undefined
    const nginxAuthCached = haveNginx ? await startNginx(ws.dir, resource.url, { gatewayUrl, cache: true }) : undefined
    const haproxyWhyNot = ensureDebianPackage('haproxy', 'haproxy', log) ? haproxyUnavailable() : 'haproxy could not be installed'
    const haproxy = haproxyWhyNot === undefined ? await startHaproxy(ws.dir, resource.url, ws.keysFile, gatewayUrl, AUDIENCE) : undefined

    // One access token per connection, each from its own session (as many browsers would hold).
    const families = await createChainFamilies(rA, CONNECTIONS.get, ws.userId, ws.userScope)
    const bearers = await Promise.all(families.map(async (token) => {
      const res = await fetch(`${gatewayUrl}/auth/refresh`, { method: 'POST', headers: { cookie: `lk_refresh=${token}`, 'user-agent': BROWSER_USER_AGENT } })
      const body = await res.json() as { access_token?: string }
      if (res.status !== 200 || typeof body.access_token !== 'string') throw new Error(`POST /auth/refresh answered ${res.status}`)
      return `Bearer ${body.access_token}`
    }))
    const getSpec = (url: string) => async (): Promise<LoadSpec> => ({
      url, method: 'GET', path: '/api/me', connections: CONNECTIONS.get,
      headers: { 'user-agent': BROWSER_USER_AGENT }, perConnection: perConnectionHeader('authorization', bearers)
    })
    const probe = (url: string) => async () => await status(`${url}/api/me`, { headers: { authorization: bearers[0] as string } })

    const waitS = Number(args['wait-proxy'])
    const deadline = Date.now() + waitS * 1000
    let proxyStatus = await probe(gatewayUrl)()
    if (proxyStatus !== 200) log(`GET /api/me through the gateway answers ${proxyStatus}; waiting up to ${waitS} s for the proxy`)
    while (proxyStatus !== 200 && Date.now() < deadline) {
      await new Promise(resolve => setTimeout(resolve, 1000))
      proxyStatus = await probe(gatewayUrl)()
    }

    const g1 = '1 · Resource GET /api/me'
    const g2 = '2 · GET /api/me through a proxy'
    const g3 = '3 · Token verification library'
    add(member({ set: 'get', key: 'resource_verified', name: 'resource, token verified (direct)', group: g1, kind: 'latchkey', connections: CONNECTIONS.get, cpu: [['resource', resource.child.pid]], spec: getSpec(resource.url), probe: probe(resource.url) }))
    add(member({ set: 'get', key: 'resource_noauth', name: 'same route, verification off (ceiling)', group: g1, kind: 'peer', connections: CONNECTIONS.get, cpu: [['server', noauth.child.pid]], spec: getSpec(noauth.url), probe: probe(noauth.url) }))
    add(member({ set: 'get', key: 'gateway_proxy', name: 'gateway: auth + proxy', group: g2, kind: 'latchkey', connections: CONNECTIONS.get, cpu: [['gateway', gateway.child.pid], ['resource', resource.child.pid]], spec: getSpec(gatewayUrl), probe: probe(gatewayUrl) }))
    if (traced !== undefined) add(member({ set: 'get', key: 'gateway_proxy_traced', name: 'gateway: auth + proxy, tracing on (OTLP)', group: g2, kind: 'latchkey', connections: CONNECTIONS.get, cpu: [['gateway', traced.child.pid], ['resource', resource.child.pid]], spec: getSpec(traced.url), probe: probe(traced.url) }))
    if (baseline !== undefined) add(member({ set: 'get', key: 'gateway_proxy_baseline', name: `gateway: auth + proxy, baseline ${baselineRev ?? ''}`, group: g2, kind: 'latchkey', connections: CONNECTIONS.get, cpu: [['gateway', baseline.child.pid], ['resource', resource.child.pid]], spec: getSpec(baseline.url), probe: probe(baseline.url) }))
    if (pool !== undefined) add(member({ set: 'get', key: 'gateway_proxy_pool', name: `gateway: auth + proxy, WORKERS=${POOL_WORKERS}`, group: g2, kind: 'latchkey', connections: CONNECTIONS.get, cpu: [['gateway', pool.child.pid], ['resource', resource.child.pid]], spec: getSpec(pool.url), probe: probe(pool.url) }))
    add(member({ set: 'get', key: 'http_proxy', name: 'http-proxy, no auth', group: g2, kind: 'peer', connections: CONNECTIONS.get, cpu: [['proxy', httpProxy.child.pid], ['resource', resource.child.pid]], spec: getSpec(httpProxy.url), probe: probe(httpProxy.url) }))
    add(member({ set: 'get', key: 'fastify_proxy', name: '@fastify/http-proxy, no auth', group: g2, kind: 'peer', connections: CONNECTIONS.get, cpu: [['proxy', fastifyProxy.child.pid], ['resource', resource.child.pid]], spec: getSpec(fastifyProxy.url), probe: probe(fastifyProxy.url) }))
    const nginxRow = add(member({ set: 'get', key: 'nginx', name: 'nginx, no auth', group: g2, kind: 'peer', connections: CONNECTIONS.get, ...(nginx === undefined ? {} : { spec: getSpec(nginx.url), probe: probe(nginx.url), cpu: [['proxy', nginx.child.pid], ['resource', resource.child.pid]] }) }))
    if (nginx === undefined) nginxRow.skipped = 'nginx is not on PATH'
    const peerRow = (key: string, name: string, svc: { child: { pid: number }, url: string } | undefined, whyNot: string): void => {
      const row = add(member({ set: 'get', key, name, group: g2, kind: key.startsWith('nginx_forward_auth') ? 'latchkey' : 'peer', connections: CONNECTIONS.get, ...(svc === undefined ? {} : { spec: getSpec(svc.url), probe: probe(svc.url), cpu: [['proxy', svc.child.pid], ['gateway', gateway.child.pid], ['resource', resource.child.pid]] }) }))
      if (svc === undefined) row.skipped = whyNot
    }
    peerRow('nginx_forward_auth', 'nginx auth_request → latchkey forward-auth', nginxAuth, 'nginx is not on PATH')
    peerRow('nginx_forward_auth_cached', 'nginx auth_request → latchkey forward-auth, 1 s decision cache', nginxAuthCached, 'nginx is not on PATH')
    peerRow('haproxy_jwt', 'HAProxy jwt_verify ES256 (no revocation)', haproxy, haproxyWhyNot ?? '')
    add(member({ set: 'get', key: 'fastify_jwt', name: '@fastify/jwt + get-jwks (same route)', group: g3, kind: 'peer', connections: CONNECTIONS.get, cpu: [['server', fastifyJwt.child.pid]], spec: getSpec(fastifyJwt.url), probe: probe(fastifyJwt.url) }))
    await runSet('get', ['resource_verified', 'resource_noauth', 'fastify_jwt', 'gateway_proxy', 'gateway_proxy_baseline', 'gateway_proxy_traced', 'gateway_proxy_pool', 'http_proxy', 'fastify_proxy', 'nginx', 'nginx_forward_auth', 'nginx_forward_auth_cached', 'haproxy_jwt'].filter(k => members.has(k)).map(get))
    if (sink !== undefined) {
      const stats = await fetch(`${sink.url}/stats`).then(async r => await r.json() as { exports: number, bytes: number }, () => undefined)
      const tracedRow = get('gateway_proxy_traced')
      if (stats !== undefined && stats.exports === 0 && tracedRow.skipped === undefined) tracedRow.note = 'the OTLP sink received no spans'
      log(`OTLP sink: ${stats?.exports ?? '?'} exports, ${stats?.bytes.toLocaleString('en-US') ?? '?'} bytes`)
    }
  }

  // --- Set "scale": refresh rotations with 1,000 and with 1,000,000 live sessions ---
  let liveCounts: { small: number, large: number } | undefined
  if (scale?.small.gateway !== undefined && scale.large.gateway !== undefined) {
    const { small, large } = scale as { small: Required<ScaleSide>, large: Required<ScaleSide> }
    liveCounts = { small: await liveFamilies(small.r), large: await liveFamilies(large.r) }
    const g5 = '5 · Sessions at scale'
    const rowFor = (key: string, name: string, side: Required<ScaleSide>): Member => {
      const m: Member = add(member({
        set: 'scale', key, name, group: g5, kind: 'latchkey', connections: CONNECTIONS.refresh,
        cpu: [['gateway', side.gateway.child.pid], ['redis', side.redis.child.pid]],
        spec: refreshSpec(() => m, side.gateway.url, side.r, ws.userId, ws.userScope, 'cookie')
      }))
      return m
    }
    await runSet('scale', [
      rowFor('refresh_1k', `refresh rotation, ${SMALL_SESSIONS.toLocaleString('en-US')} live sessions`, small),
      rowFor('refresh_1m', `refresh rotation, ${largeLabel} live sessions${args.quick === true ? ' (--quick)' : ''}`, large)
    ])
  }

  // --- Set "tokens": refresh (cookie and grant), client credentials, logins ---
  if (only.has('tokens')) {
    const g4 = '4 · Token endpoints (Redis on loopback)'
    const cookie = add(member({ set: 'tokens', key: 'refresh_cookie', name: 'refresh rotation, POST /auth/refresh (cookie)', group: g4, kind: 'latchkey', connections: CONNECTIONS.refresh, cpu: [['gateway', gateway.child.pid], ['redis', redisA.child.pid]], spec: refreshSpec(() => cookie, gatewayUrl, rA, ws.userId, ws.userScope, 'cookie') }))
    const grant = add(member({ set: 'tokens', key: 'refresh_grant', name: 'refresh rotation, refresh_token grant', group: g4, kind: 'latchkey', connections: CONNECTIONS.refresh, cpu: [['gateway', gateway.child.pid], ['redis', redisA.child.pid]], spec: refreshSpec(() => grant, gatewayUrl, rA, ws.userId, ws.userScope, 'grant') }))
    const basic = `Basic ${Buffer.from(`${encodeURIComponent(ws.clientId)}:${encodeURIComponent(ws.clientSecret)}`).toString('base64')}`
    const ccHeaders = { authorization: basic, 'content-type': 'application/x-www-form-urlencoded', 'user-agent': 'bench-service/1.0' }
    add(member({
      set: 'tokens',
      key: 'client_credentials', name: 'client_credentials token', group: g4, kind: 'latchkey', connections: CONNECTIONS.clientCredentials, cpu: [['gateway', gateway.child.pid]],
      spec: async () => ({ url: gatewayUrl, method: 'POST', path: '/oauth/token', connections: CONNECTIONS.clientCredentials, headers: ccHeaders, body: 'grant_type=client_credentials' }),
      probe: async () => await status(`${gatewayUrl}/oauth/token`, { method: 'POST', headers: ccHeaders, body: 'grant_type=client_credentials' })
    }))
    // The same client, id and secret, registered with node-oidc-provider (JWT access tokens, ES256).
    if (baseline !== undefined) {
      add(member({
        set: 'tokens',
        key: 'client_credentials_baseline', name: `client_credentials token, baseline ${baselineRev ?? ''}`, group: g4, kind: 'latchkey', connections: CONNECTIONS.clientCredentials, cpu: [['gateway', baseline.child.pid]],
        spec: async () => ({ url: baseline.url, method: 'POST', path: '/oauth/token', connections: CONNECTIONS.clientCredentials, headers: ccHeaders, body: 'grant_type=client_credentials' }),
        probe: async () => await status(`${baseline.url}/oauth/token`, { method: 'POST', headers: ccHeaders, body: 'grant_type=client_credentials' })
      }))
      const cookieBaseline = add(member({ set: 'tokens', key: 'refresh_cookie_baseline', name: `refresh rotation, POST /auth/refresh, baseline ${baselineRev ?? ''}`, group: g4, kind: 'latchkey', connections: CONNECTIONS.refresh, cpu: [['gateway', baseline.child.pid], ['redis', redisA.child.pid]], spec: loginRefreshSpec(() => cookieBaseline, baseline.url, ws.username, ws.password) }))
    }
    const oidcProvider = await startPeer('peer: oidc-provider', 'oidc-provider.ts', { CLIENT_ID: ws.clientId, CLIENT_SECRET: ws.clientSecret, AUDIENCE, SCOPE: BENCH_CLIENT_SCOPE })
    const opBody = `grant_type=client_credentials&scope=${encodeURIComponent(BENCH_CLIENT_SCOPE)}`
    add(member({
      set: 'tokens',
      key: 'oidc_provider_cc', name: 'node-oidc-provider client_credentials (JWT, ES256)', group: g4, kind: 'peer', connections: CONNECTIONS.clientCredentials, cpu: [['server', oidcProvider.child.pid]],
      spec: async () => ({ url: oidcProvider.url, method: 'POST', path: '/token', connections: CONNECTIONS.clientCredentials, headers: ccHeaders, body: opBody }),
      probe: async () => await status(`${oidcProvider.url}/token`, { method: 'POST', headers: ccHeaders, body: opBody })
    }))
    const loginHeaders = { 'content-type': 'application/json', 'user-agent': BROWSER_USER_AGENT }
    const loginBody = JSON.stringify({ username: ws.username, password: ws.password })
    add(member({
      set: 'tokens',
      key: 'login', name: `login, argon2id m=${ws.argon2.m} t=${ws.argon2.t} p=${ws.argon2.p}`, group: g4, kind: 'latchkey', connections: CONNECTIONS.login, cpu: [['gateway', gateway.child.pid], ['redis', redisA.child.pid]],
      spec: async () => ({ url: gatewayUrl, method: 'POST', path: '/auth/login', connections: CONNECTIONS.login, headers: loginHeaders, body: loginBody }),
      probe: async () => await status(`${gatewayUrl}/auth/login`, { method: 'POST', headers: loginHeaders, body: loginBody })
    }))
    const pooled: Member[] = []
    if (pool !== undefined) {
      const poolCpu: ReadonlyArray<readonly [string, number]> = [['gateway', pool.child.pid], ['redis', redisA.child.pid]]
      const w = `WORKERS=${POOL_WORKERS}`
      const cookiePool = add(member({ set: 'tokens', key: 'refresh_cookie_pool', name: `refresh rotation, /auth/refresh, ${w}`, group: g4, kind: 'latchkey', connections: CONNECTIONS.refresh, cpu: poolCpu, spec: refreshSpec(() => cookiePool, pool.url, rA, ws.userId, ws.userScope, 'cookie') }))
      const grantPool = add(member({ set: 'tokens', key: 'refresh_grant_pool', name: `refresh rotation, refresh_token grant, ${w}`, group: g4, kind: 'latchkey', connections: CONNECTIONS.refresh, cpu: poolCpu, spec: refreshSpec(() => grantPool, pool.url, rA, ws.userId, ws.userScope, 'grant') }))
      const ccPool = add(member({
        set: 'tokens',
        key: 'client_credentials_pool', name: `client_credentials token, ${w}`, group: g4, kind: 'latchkey', connections: CONNECTIONS.clientCredentials, cpu: [['gateway', pool.child.pid]],
        spec: async () => ({ url: pool.url, method: 'POST', path: '/oauth/token', connections: CONNECTIONS.clientCredentials, headers: ccHeaders, body: 'grant_type=client_credentials' }),
        probe: async () => await status(`${pool.url}/oauth/token`, { method: 'POST', headers: ccHeaders, body: 'grant_type=client_credentials' })
      }))
      pooled.push(cookiePool, grantPool, ccPool)
    }
    await runSet('tokens', [cookie, grant, get('client_credentials'), get('oidc_provider_cc'), get('login'), ...pooled,
      ...['client_credentials_baseline', 'refresh_cookie_baseline'].filter(k => members.has(k)).map(get)])
  }

  // "After the run": once the gateway has finished what the last row left in flight.
  const settleMs = await waitIdle(gateway.child.pid)
  const rss = rssBytes(gateway.child.pid)
  const gatewayRssMb = rss.now === undefined ? undefined : round(rss.now / 2 ** 20, 1)
  const gatewayPeakMb = rss.peak === undefined ? undefined : round(rss.peak / 2 ** 20, 1)
  log(`gateway RSS after the run: ${gatewayRssMb ?? '?'} MB, idle ${settleMs} ms after the last row (peak ${gatewayPeakMb ?? '?'} MB)`)
  const poolRss = pool === undefined ? undefined : treeRssBytes(pool.child.pid)
  const poolRssMb = poolRss === undefined ? undefined : round(poolRss / 2 ** 20, 1)
  if (pool !== undefined) log(`gateway pool (WORKERS=${POOL_WORKERS}) RSS after the run: ${poolRssMb ?? '?'} MB, primary and workers together`)

  log('stopping')
  await gateway.child.stop(30_000)
  await rA.close().catch(() => {})
  await scale?.small.r.close().catch(() => {})
  await scale?.large.r.close().catch(() => {})
  await stopAll()
  ws.remove()

  // --- Figures ---
  const order = ['resource_verified', 'resource_noauth', 'gateway_proxy', 'gateway_proxy_baseline', 'gateway_proxy_traced', 'gateway_proxy_pool', 'http_proxy', 'fastify_proxy', 'nginx',
    'nginx_forward_auth', 'nginx_forward_auth_cached', 'haproxy_jwt', 'fastify_jwt',
    'refresh_cookie', 'refresh_cookie_baseline', 'refresh_grant', 'client_credentials', 'client_credentials_baseline', 'oidc_provider_cc', 'login', 'refresh_cookie_pool', 'refresh_grant_pool', 'client_credentials_pool', 'refresh_1k', 'refresh_1m']
  const rows: Row[] = order.filter(k => members.has(k)).map(k => {
    const m = get(k)
    const base = { key: m.key, name: m.name, group: m.group, set: m.set, kind: m.kind, connections: m.connections, ...(k === 'login' ? { ownScale: true } : {}) }
    if (m.skipped !== undefined || m.samples.length === 0) return { ...base, skipped: m.skipped ?? 'not run' }
    const s = summarise(m.samples)
    const ok = m.samples.reduce((n, x) => n + x.ok, 0)
    const cpu = Object.fromEntries([...m.cpuMs].map(([label, ms]) => [label, ok > 0 ? Math.round((ms * 1000) / ok) : null]))
    return {
      ...base,
      ...s,
      cpu_us_per_request: cpu,
      rps: round(s.rps, 1) as number,
      p50_ms: round(s.p50_ms, 3) as number,
      p99_ms: round(s.p99_ms, 3) as number,
      ...(m.chainBreaks > 0 ? { note: `${m.chainBreaks} refresh chains broke (non-200)` } : m.note !== undefined ? { note: m.note } : {})
    }
  })
  const row = (k: string): Row | undefined => rows.find(r => r.key === k)
  /** " · ±N µs gateway CPU/req": what one row's server spends per request beyond another's. */
  const cpuDelta = (a: Row | undefined, b: Row | undefined): string => {
    const ca = a?.cpu_us_per_request?.gateway
    const cb = b?.cpu_us_per_request?.gateway
    if (typeof ca !== 'number' || typeof cb !== 'number') return ''
    return ` · ${ca - cb >= 0 ? '+' : '−'}${Math.abs(ca - cb)} µs gateway CPU/req`
  }
  const figures = {
    proxy_auth_vs_plain_proxy: ratio(row('gateway_proxy'), row('http_proxy')),
    proxy_auth_vs_fastify_proxy: ratio(row('gateway_proxy'), row('fastify_proxy')),
    proxy_auth_vs_direct: ratio(row('gateway_proxy'), row('resource_verified')),
    proxy_vs_baseline: ratio(row('gateway_proxy'), row('gateway_proxy_baseline')),
    proxy_traced_vs_untraced: ratio(row('gateway_proxy_traced'), row('gateway_proxy')),
    proxy_auth_pool_vs_direct: ratio(row('gateway_proxy_pool'), row('resource_verified')),
    plain_proxy_vs_direct: ratio(row('http_proxy'), row('resource_verified')),
    fastify_proxy_vs_direct: ratio(row('fastify_proxy'), row('resource_verified')),
    nginx_vs_direct: ratio(row('nginx'), row('resource_verified')),
    resource_verify_vs_noauth: ratio(row('resource_verified'), row('resource_noauth')),
    resource_verify_vs_fastify_jwt: ratio(row('resource_verified'), row('fastify_jwt')),
    refresh_rps_1m_vs_1k: ratio(row('refresh_1m'), row('refresh_1k')),
    forward_auth_cached_vs_haproxy: ratio(row('nginx_forward_auth_cached'), row('haproxy_jwt')),
    forward_auth_vs_haproxy: ratio(row('nginx_forward_auth'), row('haproxy_jwt')),
    forward_auth_cached_vs_nginx: ratio(row('nginx_forward_auth_cached'), row('nginx')),
    gateway_proxy_vs_haproxy: ratio(row('gateway_proxy'), row('haproxy_jwt')),
    client_credentials_vs_oidc_provider: ratio(row('client_credentials'), row('oidc_provider_cc')),
    client_credentials_vs_baseline: ratio(row('client_credentials'), row('client_credentials_baseline')),
    refresh_cookie_vs_baseline: ratio(row('refresh_cookie'), row('refresh_cookie_baseline'))
  }
  const ratios = new Map<string, string>([
    ['resource_verified', `${fmtRatio(figures.resource_verify_vs_noauth)} of no-auth`],
    ['resource_noauth', 'ceiling'],
    ['gateway_proxy', `${fmtRatio(figures.proxy_auth_vs_plain_proxy)} of http-proxy · ${fmtRatio(figures.proxy_auth_vs_fastify_proxy)} of @fastify/http-proxy · ${fmtRatio(figures.proxy_auth_vs_direct)} of direct`],
    ['gateway_proxy_baseline', `this checkout is ${fmtRatio(figures.proxy_vs_baseline)} this${cpuDelta(row('gateway_proxy'), row('gateway_proxy_baseline'))}`],
    ['gateway_proxy_traced', `${fmtRatio(figures.proxy_traced_vs_untraced)} of tracing off${cpuDelta(row('gateway_proxy_traced'), row('gateway_proxy'))}`],
    ['gateway_proxy_pool', `${fmtRatio(figures.proxy_auth_pool_vs_direct)} of direct`],
    ['http_proxy', `${fmtRatio(figures.plain_proxy_vs_direct)} of direct`],
    ['fastify_proxy', `${fmtRatio(figures.fastify_proxy_vs_direct)} of direct`],
    ['nginx', `${fmtRatio(figures.nginx_vs_direct)} of direct`],
    ['fastify_jwt', `ours is ${fmtRatio(figures.resource_verify_vs_fastify_jwt)} this`],
    ['refresh_1m', `${fmtRatio(figures.refresh_rps_1m_vs_1k)} of the ${SMALL_SESSIONS.toLocaleString('en-US')}-session rate`],
    ['nginx_forward_auth', `${fmtRatio(figures.forward_auth_vs_haproxy)} of HAProxy jwt_verify`],
    ['nginx_forward_auth_cached', `${fmtRatio(figures.forward_auth_cached_vs_haproxy)} of HAProxy jwt_verify · ${fmtRatio(figures.forward_auth_cached_vs_nginx)} of nginx without auth`],
    ['haproxy_jwt', `latchkey's own proxy is ${fmtRatio(figures.gateway_proxy_vs_haproxy)} this`],
    ['client_credentials', `${fmtRatio(figures.client_credentials_vs_oidc_provider)} of node-oidc-provider`],
    ['client_credentials_baseline', `this checkout is ${fmtRatio(figures.client_credentials_vs_baseline)} this${cpuDelta(row('client_credentials'), row('client_credentials_baseline'))}`],
    ['refresh_cookie_baseline', `this checkout is ${fmtRatio(figures.refresh_cookie_vs_baseline)} this${cpuDelta(row('refresh_cookie'), row('refresh_cookie_baseline'))}`]
  ])
  const cpus = os.cpus().length
  const targets: Target[] = [
    atLeast('Refresh rotations/s, /auth/refresh (one process)', 5000, row('refresh_cookie')?.rps, '/s'),
    atLeast(`Refresh rotations/s, /auth/refresh (WORKERS=${POOL_WORKERS})`, 5000, row('refresh_cookie_pool')?.rps, '/s'),
    atLeast('Refresh rotations/s, refresh_token grant (one process)', 5000, row('refresh_grant')?.rps, '/s'),
    atLeast(`Refresh rotations/s, refresh_token grant (WORKERS=${POOL_WORKERS})`, 5000, row('refresh_grant_pool')?.rps, '/s'),
    atLeast('Client-credentials tokens/s (one process)', 8000, row('client_credentials')?.rps, '/s'),
    atLeast(`Client-credentials tokens/s (WORKERS=${POOL_WORKERS})`, 8000, row('client_credentials_pool')?.rps, '/s'),
    atLeast(`Logins/s (Keycloak: 15 per vCPU × ${cpus})`, 15 * cpus, row('login')?.rps, '/s'),
    atLeast('Proxied GET vs plain http-proxy', 0.9, figures.proxy_auth_vs_plain_proxy, '×'),
    atLeast('Proxied GET vs direct (one process)', 0.3, figures.proxy_auth_vs_direct, '×'),
    atLeast(`Proxied GET vs direct (WORKERS=${POOL_WORKERS})`, 0.3, figures.proxy_auth_pool_vs_direct, '×'),
    atLeast('Verified resource GET vs no auth', 0.8, figures.resource_verify_vs_noauth, '×'),
    atLeast('nginx + latchkey forward-auth (1 s cache) vs HAProxy jwt_verify', 1.0, figures.forward_auth_cached_vs_haproxy, '×'),
    atLeast('Client-credentials tokens/s vs node-oidc-provider', 2.0, figures.client_credentials_vs_oidc_provider, '×'),
    atMost('Gateway RSS after the run (one process)', 200, gatewayRssMb, 'MB'),
    atMost('Redis per live session', 400, memory?.bytes_per_session, 'bytes'),
    atLeast(`Refresh rate, ${largeLabel} vs ${SMALL_SESSIONS.toLocaleString('en-US')} live sessions`, 0.9, figures.refresh_rps_1m_vs_1k, '×')
  ]

  const machine = { cpus, cpu_model: os.cpus()[0]?.model ?? 'unknown', memory_gb: round(os.totalmem() / 2 ** 30, 1), node: process.version, platform: `${os.platform()} ${os.release()}` }
  const result = {
    date: new Date().toISOString(),
    revision: gitRevision(),
    quick: args.quick === true,
    services: launch.source ? 'source (tsx)' : 'built (dist)',
    machine,
    /** 1-minute load average before and after: other work on the machine shows here. */
    load_average: { before: round(loadBefore[0], 2), after: round(os.loadavg()[0], 2) },
    plan: { ...plan, connections: CONNECTIONS, sets: [...only] },
    argon2id: ws.argon2,
    rows,
    refresh_rps: row('refresh_cookie')?.rps ?? null,
    refresh_grant_rps: row('refresh_grant')?.rps ?? null,
    client_credentials_rps: row('client_credentials')?.rps ?? null,
    pool_workers: POOL_WORKERS,
    refresh_rps_pool: row('refresh_cookie_pool')?.rps ?? null,
    refresh_grant_rps_pool: row('refresh_grant_pool')?.rps ?? null,
    client_credentials_rps_pool: row('client_credentials_pool')?.rps ?? null,
    gateway_pool_rss_mb: poolRssMb ?? null,
    login_rps: row('login')?.rps ?? null,
    ...figures,
    gateway_rss_mb: gatewayRssMb ?? null,
    gateway_peak_rss_mb: gatewayPeakMb ?? null,
    /** How long after the last row the gateway went idle, when its RSS was read. */
    gateway_rss_settle_ms: settleMs,
    redis_bytes_per_session: memory?.bytes_per_session ?? null,
    redis_session_memory: memory ?? null,
    refresh_rps_1k: row('refresh_1k')?.rps ?? null,
    refresh_rps_1m: row('refresh_1m')?.rps ?? null,
    live_sessions: {
      small: SMALL_SESSIONS,
      large: plan.largeSessions,
      counted_before_scale_rows: liveCounts ?? null,
      note: args.quick === true
        ? `--quick: the "1m" figures were measured with ${largeLabel} live sessions, not 1,000,000`
        : 'the "1m" figures were measured with 1,000,000 live sessions'
    },
    targets
  }
  writeFileSync(join(outDir, 'latest.json'), `${JSON.stringify(result, null, 2)}\n`)
  const subtitle = `${result.date.slice(0, 16).replace('T', ' ')} UTC · ${result.revision ?? ''} · ${cpus} × ${machine.cpu_model} · Node ${process.version} · ${args.quick === true ? 'quick run' : 'full run'} · ${plan.rounds} × ${plan.measureS} s per row`
  writeFileSync(join(outDir, 'latest.svg'), chartSvg('latchkey benchmark', subtitle, rows, targets))

  const extra = [
    `Gateway RSS after the run: ${gatewayRssMb ?? '–'} MB, read once it was idle, ${settleMs} ms after the last row (peak ${gatewayPeakMb ?? '–'} MB); the WORKERS=${POOL_WORKERS} pool, primary and workers together: ${poolRssMb ?? '–'} MB.`,
    memory === undefined
      ? ''
      : `Redis per live session: ${memory.bytes_per_session} bytes (family key ${memory.family_bytes} + user-index share ${memory.index_bytes_per_session}, ${memory.sessions_per_user} sessions per user; INFO used_memory grew ${Number.isNaN(memory.used_memory_per_session) ? '–' : memory.used_memory_per_session} bytes per session over ${memory.measured_on_sessions.toLocaleString('en-US')}).`
  ].filter(Boolean)
  process.stdout.write(`\n${markdownTable(rows, ratios)}\n\n${extra.join('\n')}\n\n${targetsTable(targets)}\n\n`)
  process.stdout.write(`${subtitle}\nwrote ${join(outDir, 'latest.json')} and latest.svg\n`)

  if (launch.cpuProfDir !== undefined) {
    // CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile: the gateway's main thread is thread 0
    // (with --source, tsx's loader thread writes a profile of its own).
    const profiles = readdirSync(launch.cpuProfDir).filter(f => f.endsWith('.cpuprofile') && f.includes(`.${gateway.child.pid}.0.`))
      .map(f => join(launch.cpuProfDir as string, f)).sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)
    if (profiles[0] === undefined) log('no gateway profile was written')
    else process.stdout.write(`\n${summariseProfile(profiles[0])}\n`)
  }
}

main().catch(async (err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  await stopAll()
  process.exit(1)
})
