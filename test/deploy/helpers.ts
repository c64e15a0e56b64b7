/**
 * Reading the deployment files (Dockerfile, docker-compose.yml, k8s/) the way their tools
 * would, and what the code says they must agree with: the environment variables each
 * service's config.ts reads, its default port, the CLI's subcommands, the drain time.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { parseAllDocuments } from 'yaml'
import { ROOT } from '../helpers/processes.js'

export { ROOT }

export type Obj = Record<string, unknown>

export function read (path: string): string {
  return readFileSync(join(ROOT, path), 'utf8')
}

/** Every YAML document of a file, as plain JS; throws on a syntax error or a warning. */
export function yamlDocs (path: string): Obj[] {
  const docs = parseAllDocuments(read(path), { prettyErrors: true, uniqueKeys: true })
  if (!Array.isArray(docs)) throw new Error(`${path}: not a YAML stream`)
  return docs.map((doc, i) => {
    const problems = [...doc.errors, ...doc.warnings]
    if (problems.length > 0) throw new Error(`${path} (document ${i}): ${problems.map(p => p.message).join('; ')}`)
    return doc.toJS() as Obj
  }).filter(d => d !== null)
}

/** Files under `dir` (relative to the repo root), recursively, sorted. */
export function filesUnder (dir: string): string[] {
  const out: string[] = []
  const walk = (abs: string): void => {
    for (const name of readdirSync(abs).sort()) {
      const path = join(abs, name)
      if (statSync(path).isDirectory()) walk(path)
      else out.push(relative(ROOT, path))
    }
  }
  walk(join(ROOT, dir))
  return out
}

/**
 * The environment variables a config module reads: every `read*(env, 'NAME'` call. Read
 * from the source on purpose, so a variable renamed in code fails these tests.
 */
export function envNamesRead (configTs: string): Set<string> {
  const names = new Set<string>()
  for (const m of read(configTs).matchAll(/\(env, '([A-Z][A-Z0-9_]*)'/g)) names.add(m[1] as string)
  if (names.size === 0) throw new Error(`${configTs}: no env names found; has the config reader changed shape?`)
  return names
}

export const GATEWAY_ENV = envNamesRead('services/gateway/src/config.ts')
export const RESOURCE_ENV = envNamesRead('services/resource/src/config.ts')

/** The `latchkey` subcommands main.ts dispatches on (`case 'gateway':`). */
export function cliSubcommands (): Set<string> {
  const src = read('services/gateway/src/cli/main.ts')
  return new Set([...src.matchAll(/case '([a-z-]+)':/g)].map(m => m[1] as string))
}

/** `SHUTDOWN_GRACE_MS = 20_000` from a main.ts. */
export function shutdownGraceS (mainTs: string): number {
  const m = /export const SHUTDOWN_GRACE_MS = ([\d_]+)/.exec(read(mainTs))
  if (m === null) throw new Error(`${mainTs}: SHUTDOWN_GRACE_MS not found`)
  return Number((m[1] as string).replaceAll('_', '')) / 1000
}

export const GATEWAY_SHUTDOWN_GRACE_S = shutdownGraceS('services/gateway/src/main.ts')
export const RESOURCE_SHUTDOWN_GRACE_S = shutdownGraceS('services/resource/src/main.ts')

export function packageVersion (): string {
  return (JSON.parse(read('package.json')) as { version: string }).version
}

/** A Compose duration ("25s", "1m30s", "500ms") in seconds. */
export function composeDurationS (text: string): number {
  const units: Record<string, number> = { h: 3600, m: 60, s: 1, ms: 0.001, us: 1e-6, ns: 1e-9 }
  let total = 0
  const rest = text.replace(/(\d+(?:\.\d+)?)(h|ms|m|s|us|ns)/g, (_all, n: string, unit: string) => {
    total += Number(n) * (units[unit] as number)
    return ''
  })
  if (rest !== '' || text === '') throw new Error(`not a duration: ${text}`)
  return total
}

export function tempDir (t: { teardown (fn: () => unknown): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-deploy-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

export function asObj (value: unknown, what: string): Obj {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error(`${what}: expected a mapping`)
  return value as Obj
}

export function asArray (value: unknown, what: string): unknown[] {
  if (!Array.isArray(value)) throw new Error(`${what}: expected a list`)
  return value
}
