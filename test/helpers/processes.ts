/**
 * Start real latchkey processes for end-to-end tests, wait for a line or a port, and
 * make sure they are gone in teardown.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { buildSync } from 'esbuild'

export const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const ENTRY = fileURLToPath(new URL('./cli-entry.ts', import.meta.url))

let bundle: string | undefined

/**
 * The CLI from source (a stale dist/ must not decide the outcome), bundled with esbuild once
 * per test process, instead of every process loading it through tsx: on a loaded 2-core
 * machine `latchkey --version` took ~0.7 s instead of ~2.5 s, a gateway listened after
 * ~2.5 s instead of ~4.5 s. Chunked, so that `keys` or `users` load no server. Dependencies
 * stay external; no source maps (parsing them cost every start ~0.3 s). The directory is four
 * levels below the repository, like services/gateway/src/ui/, so that paths the code finds
 * from its own location (the demo page's dist/public, the package.json) resolve as they do
 * from source.
 */
export function cliBundle (): string {
  if (bundle !== undefined) return bundle
  const cache = join(ROOT, 'node_modules/.cache/latchkey-test-cli')
  mkdirSync(cache, { recursive: true })
  const dir = mkdtempSync(join(cache, 'cli-'))
  process.once('exit', () => { rmSync(dir, { recursive: true, force: true }) })
  buildSync({
    entryPoints: { latchkey: ENTRY },
    bundle: true,
    splitting: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    conditions: ['latchkey-source'],
    packages: 'external',
    outdir: dir,
    outExtension: { '.js': '.mjs' },
    logLevel: 'warning'
  })
  bundle = join(dir, 'latchkey.mjs')
  return bundle
}

export interface Proc {
  readonly child: ChildProcess
  stdout: string
  stderr: string
  /** Resolves with the exit code. */
  readonly exited: Promise<number | null>
  waitFor (pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>
  stop (signal?: NodeJS.Signals): Promise<number | null>
}

interface Teardown { teardown (fn: () => unknown): void }

/** `node <bundle>`: the CLI as one command line, for scripts that run it (LATCHKEY in scripts/rotate-signing-key.sh). */
export function cliCommand (): string {
  const file = cliBundle()
  if (file.includes(' ')) throw new Error('LATCHKEY is split on spaces; the bundle\'s path has one')
  return `${process.execPath} ${file}`
}

/** Run `latchkey <args>` from source with `env` layered over a minimal environment. */
export function latchkey (t: Teardown, args: string[], env: Record<string, string> = {}, input?: string): Proc {
  const child = spawn(process.execPath, [cliBundle(), ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', LOG_LEVEL: 'warn', ...env },
    stdio: ['pipe', 'pipe', 'pipe']
  })
  const proc: Proc = {
    child,
    stdout: '',
    stderr: '',
    exited: new Promise(resolve => { child.once('exit', code => { resolve(code) }) }),
    waitFor (pattern, timeoutMs = 20_000) {
      return new Promise((resolve, reject) => {
        const check = (): boolean => {
          const m = pattern.exec(proc.stdout) ?? pattern.exec(proc.stderr)
          if (m !== null) { cleanup(); resolve(m); return true }
          return false
        }
        const timer = setTimeout(() => { cleanup(); reject(new Error(`timed out waiting for ${String(pattern)}; stderr: ${proc.stderr.slice(-500)}`)) }, timeoutMs)
        const onData = (): void => { check() }
        const onExit = (): void => { if (!check()) { cleanup(); reject(new Error(`exited before ${String(pattern)}; stderr: ${proc.stderr.slice(-500)}`)) } }
        const cleanup = (): void => { clearTimeout(timer); child.stdout?.off('data', onData); child.stderr?.off('data', onData); child.off('exit', onExit) }
        child.stdout?.on('data', onData)
        child.stderr?.on('data', onData)
        child.once('exit', onExit)
        check()
      })
    },
    async stop (signal = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode
      child.kill(signal)
      return proc.exited
    }
  }
  child.stdout?.on('data', (d: Buffer) => { proc.stdout += d.toString() })
  child.stderr?.on('data', (d: Buffer) => { proc.stderr += d.toString() })
  if (input !== undefined) child.stdin?.end(input)
  else child.stdin?.end()
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await proc.exited
    }
  })
  return proc
}
