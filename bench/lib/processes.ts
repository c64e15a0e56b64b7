/**
 * The bench's own process tree: redis-server, the gateway, the resource and the peers
 * are children of the bench process, started on free loopback ports and killed on exit
 * (also on Ctrl-C), so a run leaves nothing behind.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'

export const ROOT = fileURLToPath(new URL('../../', import.meta.url))
/** Keep this much of a child's output, for the error message when it dies. */
const OUTPUT_TAIL_CHARS = 4000

export interface Child {
  readonly name: string
  readonly proc: ChildProcess
  readonly pid: number
  output (): string
  /** SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
  stop (graceMs?: number): Promise<void>
}

const children = new Set<Child>()

/** A port that was free a moment ago (the race with other processes is acceptable here). */
export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => {
        if (address === null || typeof address === 'string') reject(new Error('no port'))
        else resolve(address.port)
      })
    })
  })
}

export function startChild (name: string, command: string, args: readonly string[], env: Record<string, string>, options: { input?: string } = {}): Child {
  const proc = spawn(command, args, {
    cwd: ROOT,
    // A minimal environment: nothing from the caller's shell changes what is measured.
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['pipe', 'pipe', 'pipe']
  })
  let tail = ''
  const keep = (d: Buffer): void => { tail = (tail + d.toString()).slice(-OUTPUT_TAIL_CHARS) }
  proc.stdout?.on('data', keep)
  proc.stderr?.on('data', keep)
  if (options.input !== undefined) proc.stdin?.end(options.input)
  else proc.stdin?.end()
  const exited = new Promise<void>(resolve => { proc.once('exit', () => { resolve() }) })
  if (proc.pid === undefined) throw new Error(`could not start ${name} (${command})`)
  const child: Child = {
    name,
    proc,
    pid: proc.pid,
    output: () => tail,
    async stop (graceMs = 10_000) {
      children.delete(child)
      if (proc.exitCode !== null || proc.signalCode !== null) return
      proc.kill('SIGTERM')
      const timer = setTimeout(() => { proc.kill('SIGKILL') }, graceMs)
      await exited
      clearTimeout(timer)
    }
  }
  children.add(child)
  return child
}

/** Run a command to completion; resolves with its stdout, rejects with its output on a non-zero exit. */
export async function runToEnd (name: string, command: string, args: readonly string[], env: Record<string, string>, input?: string): Promise<string> {
  const child = startChild(name, command, args, env, { input })
  let stdout = ''
  child.proc.stdout?.on('data', (d: Buffer) => { stdout += d.toString() })
  const code = await new Promise<number | null>(resolve => { child.proc.once('exit', resolve) })
  children.delete(child)
  if (code !== 0) throw new Error(`${name} exited with ${String(code)}:\n${child.output()}`)
  return stdout
}

/** Poll `url` until it answers `status` (default 200), or fail with the child's output. */
export async function waitForHttp (child: Child, url: string, timeoutMs = 30_000, status = 200): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (child.proc.exitCode !== null || child.proc.signalCode !== null) {
      throw new Error(`${child.name} exited before answering ${url}:\n${child.output()}`)
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) })
      await res.arrayBuffer()
      if (res.status === status) return
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${child.name} did not answer ${url} within ${timeoutMs} ms:\n${child.output()}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

/** Resident set size of a process now (VmRSS) and at its peak (VmHWM), from /proc (Linux), in bytes. */
export function rssBytes (pid: number): { now: number | undefined, peak: number | undefined } {
  let status = ''
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8')
  } catch {
    return { now: undefined, peak: undefined }
  }
  const kb = (field: string): number | undefined => {
    const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(status)
    return m === null ? undefined : Number(m[1]) * 1024
  }
  return { now: kb('VmRSS'), peak: kb('VmHWM') }
}

let clockTicks: number | undefined
function ticksPerSecond (): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
    } catch {
      clockTicks = 100
    }
  }
  return clockTicks
}

/** CPU time (user + system, every thread) a process has used so far, in ms, from /proc (Linux). */
export function cpuTimeMs (pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name is in parentheses and may hold spaces: count fields after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const ticks = Number(fields[11]) + Number(fields[12])
    return Number.isFinite(ticks) ? (ticks * 1000) / ticksPerSecond() : undefined
  } catch {
    return undefined
  }
}

function childPids (pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
  } catch {
    // no children file (older kernels): the process alone
    return []
  }
}

/** CPU time of a process and its direct children (nginx's workers, a gateway pool's workers), in ms. */
export function treeCpuTimeMs (pid: number): number | undefined {
  const own = cpuTimeMs(pid)
  if (own === undefined) return undefined
  return childPids(pid).reduce((sum, c) => sum + (cpuTimeMs(c) ?? 0), own)
}

/** How long `waitIdle` samples, what counts as idle in that time, and its limit. */
export const IDLE_WINDOW_MS = 250
export const IDLE_BUSY_MS = 5
export const IDLE_MAX_WAIT_MS = 5000

/**
 * Wait until `pid` (and its children) use under IDLE_BUSY_MS of CPU in an IDLE_WINDOW_MS
 * window, at most IDLE_MAX_WAIT_MS: when a load generator stops, the server still finishes
 * the requests it had queued (argon2 logins, 50 ms each). Returns the milliseconds waited.
 */
export async function waitIdle (pid: number): Promise<number> {
  const started = Date.now()
  let before = treeCpuTimeMs(pid)
  while (before !== undefined && Date.now() - started < IDLE_MAX_WAIT_MS) {
    await new Promise(resolve => setTimeout(resolve, IDLE_WINDOW_MS))
    const after = treeCpuTimeMs(pid)
    if (after === undefined || after - before < IDLE_BUSY_MS) break
    before = after
  }
  return Date.now() - started
}

/** RSS of a process and its direct children, in bytes (a gateway pool: primary + workers). */
export function treeRssBytes (pid: number): number | undefined {
  const own = rssBytes(pid).now
  if (own === undefined) return undefined
  return childPids(pid).reduce((sum, c) => sum + (rssBytes(c).now ?? 0), own)
}

/** Stop every child still running (in reverse start order: clients before servers). */
export async function stopAll (): Promise<void> {
  const all = [...children].reverse()
  await Promise.all(all.map(async c => { await c.stop() }))
}

let hooked = false
/** Kill the children if the bench is interrupted or dies. */
export function stopChildrenOnExit (): void {
  if (hooked) return
  hooked = true
  const killNow = (): void => { for (const c of children) c.proc.kill('SIGKILL') }
  process.once('exit', killNow)
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      process.stderr.write(`\nbench: ${signal}, stopping children\n`)
      void stopAll().finally(() => process.exit(130))
    })
  }
}
