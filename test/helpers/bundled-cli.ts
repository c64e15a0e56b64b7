/**
 * The CLI from source (a stale dist/ must not decide the outcome), bundled once with
 * esbuild, for tests that run it many times (scripts/rotate-signing-key.sh starts it a
 * dozen times, and tsx would compile it each time). Dependencies stay external, found
 * through a node_modules link beside the bundle. Split into chunks, so that what the CLI
 * imports only for some commands (the servers, for `gateway`, `resource`, `dev`) is loaded
 * only by those, as from dist/. Returns the command line: `node <bundle>`.
 */
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { build } from 'esbuild'
import { ROOT } from './processes.js'

interface Teardown { teardown (fn: () => unknown): void }

export async function bundledCli (t: Teardown): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-cli-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir')
  const outfile = join(dir, 'latchkey.mjs')
  await build({
    entryPoints: { latchkey: join(ROOT, 'test/helpers/cli-entry.ts') },
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
  if (outfile.includes(' ')) throw new Error('LATCHKEY is split on spaces; the temp dir has one')
  return `${process.execPath} ${outfile}`
}
