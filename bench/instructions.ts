/**
 * `npm run bench:instructions`: instructions per proxied GET, counted by valgrind's callgrind.
 *
 * CPU time per request moves by tens of percent on a shared machine (docs/performance.md);
 * an instruction count does not: callgrind counts the instructions the gateway process
 * executes (user space, every thread), whatever else the machine is doing. Use it to see
 * whether a change to the proxy hop made it cheaper or dearer, beside the same measurement
 * of an older build:
 *
 *   git worktree add /tmp/base <rev> && (cd /tmp/base && npm ci && npm run build)
 *   npm run bench:instructions -- --baseline=/tmp/base
 *
 * Method: the gateway runs under callgrind with instrumentation off; it is warmed up with
 * `--requests` proxied GETs (4 connections, each its own session's token, as in the bench's
 * get set), instrumentation is switched on (callgrind_control), the same number of GETs is
 * sent again, and the dump's total is divided by the requests answered 200. Each build is
 * measured `--rounds` times, alternating; the minimum and median are printed (JIT and GC
 * threads add a little variation from one process to the next). About a minute per round.
 *
 *   --requests=N    GETs in the warm-up and in the measured part (default 2000)
 *   --rounds=N      processes measured per build (default 2)
 *   --baseline=DIR  also measure the gateway built in DIR (its bin/latchkey.js and dist/)
 */
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'
import { ensureDebianPackage } from './lib/apt.js'
import { ROOT, freePort, startChild, stopChildrenOnExit, waitForHttp } from './lib/processes.js'
import { BROWSER_USER_AGENT, connectBenchRedis, createChainFamilies } from './lib/sessions.js'
import { createWorkspace, gatewayEnv, startGateway, startRedis, startResource } from './lib/services.js'

/** Connections of the load: few, so that callgrind's single-threaded run keeps up. */
const CONNECTIONS = 4
/** A gateway under callgrind starts in about 30 s here; allow for slower machines. */
const START_TIMEOUT_MS = 300_000

const { values: args } = parseArgs({
  options: {
    requests: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '2' },
    baseline: { type: 'string' }
  },
  strict: true
})
const requests = Number(args.requests)
const rounds = Number(args.rounds)
if (!Number.isInteger(requests) || requests < 1 || !Number.isInteger(rounds) || rounds < 1) throw new Error('--requests and --rounds must be positive integers')

function log (line: string): void { process.stderr.write(`[instructions] ${line}\n`) }

function revision (dir: string): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: dir, encoding: 'utf8' }).trim()
  } catch {
    return dir
  }
}

async function load (url: string, bearers: readonly string[]): Promise<number> {
  let next = 0
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    autocannon({
      url: `${url}/api/me`,
      connections: CONNECTIONS,
      amount: requests,
      timeout: 60,
      setupClient: (client) => { client.setHeaders({ 'user-agent': BROWSER_USER_AGENT, authorization: bearers[next++ % bearers.length] as string }) }
    }, (err, res) => { if (err !== null && err !== undefined) reject(err); else resolve(res) })
  })
  if (result.non2xx > 0 || result.errors > 0) throw new Error(`${result.non2xx} non-2xx answers and ${result.errors} errors`)
  return result['2xx']
}

async function main (): Promise<void> {
  stopChildrenOnExit()
  if (!ensureDebianPackage('valgrind', 'valgrind', log)) throw new Error('valgrind is needed')
  const builds = [{ label: `this checkout (${revision(ROOT)})`, dir: ROOT }]
  if (args.baseline !== undefined) {
    const dir = resolve(args.baseline)
    if (!existsSync(join(dir, 'dist'))) throw new Error(`${dir} has no dist/: build it first (npm ci && npm run build)`)
    builds.push({ label: `baseline (${revision(dir)})`, dir })
  }
  const launch = { source: false, cpuProfDir: undefined }
  const ws = await createWorkspace(launch)
  const out = mkdtempSync(join(tmpdir(), 'latchkey-callgrind-'))
  process.once('exit', () => { ws.remove(); rmSync(out, { recursive: true, force: true }) })
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
  const results = new Map<string, number[]>(builds.map(b => [b.label, []]))

  for (let round = 0; round < rounds; round++) {
    for (const build of round % 2 === 0 ? builds : [...builds].reverse()) {
      const port = await freePort()
      const file = join(out, `callgrind.${round}.${results.get(build.label)?.length ?? 0}.${build.dir === ROOT ? 'this' : 'base'}`)
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
      const families = await createChainFamilies(r, CONNECTIONS, ws.userId, ws.userScope)
      const bearers: string[] = []
      for (const token of families) {
        const res = await fetch(`${url}/auth/refresh`, { method: 'POST', headers: { cookie: `lk_refresh=${token}`, 'user-agent': BROWSER_USER_AGENT } })
        if (res.status !== 200) throw new Error(`POST /auth/refresh answered ${res.status}`)
        bearers.push(`Bearer ${(await res.json() as { access_token: string }).access_token}`)
      }
      await load(url, bearers)
      const control = (...a: string[]): void => { execFileSync('callgrind_control', [`--vgdb-prefix=${prefix}`, ...a, String(gw.pid)], { env: { ...process.env, ...vgEnv }, stdio: 'ignore' }) }
      control('-i', 'on')
      const ok = await load(url, bearers)
      control('-i', 'off')
      control('-d')
      await gw.stop()
      const totals = /^totals:\s+(\d+)/m.exec(readFileSync(`${file}.1`, 'utf8'))
      if (totals === null) throw new Error(`no totals in ${file}.1`)
      const perRequest = Number(totals[1]) / ok
      results.get(build.label)?.push(perRequest)
      log(`round ${round + 1}/${rounds}, ${build.label}: ${Math.round(perRequest).toLocaleString('en-US')} instructions per proxied GET`)
    }
  }

  const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor((s.length - 1) / 2)] as number }
  process.stdout.write('| Gateway | instructions per proxied GET, min | median | rounds |\n|---|---:|---:|---:|\n')
  for (const [label, xs] of results) process.stdout.write(`| ${label} | ${Math.round(Math.min(...xs)).toLocaleString('en-US')} | ${Math.round(median(xs)).toLocaleString('en-US')} | ${xs.length} |\n`)
  if (builds.length === 2) {
    const [a, b] = builds.map(x => Math.min(...(results.get(x.label) ?? [NaN])))
    process.stdout.write(`\nThis checkout: ${((a as number) / (b as number)).toFixed(3)}× the baseline's instructions (by the minimum of each).\n`)
  }
  process.exit(0)
}

await main()
