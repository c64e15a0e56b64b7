#!/usr/bin/env node
// Builds the installable packages under packages/ from the shared/src sources; each
// package's `prepack` runs it, so `npm pack -w @latchkey/verify` always packs fresh code.
// Nothing is copied; packages/*/dist is git-ignored. `node scripts/build-packages.mjs
// [verify|session-client]` builds one, or both.
//   @latchkey/verify          dist/index.js (the verifier), dist/fastify.js (the plugin)
//   @latchkey/session-client  dist/index.js
// JavaScript: esbuild, ES2022 modules, the packages' own dependencies (jose, fastify-plugin)
// left as imports; the verify entries share chunks, so both see one AccessTokenVerifier
// class. Types: tsc declarations of the same sources into dist/types.
import { build } from 'esbuild'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'

const root = fileURLToPath(new URL('..', import.meta.url))
const shared = join(root, 'shared', 'src')

const PACKAGES = [
  {
    name: 'verify',
    dir: 'packages/verify',
    platform: 'node',
    entries: { index: 'verify-package.ts', fastify: 'access-token-plugin.ts' }
  },
  {
    name: 'session-client',
    dir: 'packages/session-client',
    // Browsers and Node alike: nothing node-specific is imported.
    platform: 'neutral',
    entries: { index: 'session-client-package.ts' }
  }
]

function emitDeclarations (files, outDir) {
  const program = ts.createProgram(files, {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    strict: true,
    declaration: true,
    emitDeclarationOnly: true,
    skipLibCheck: true,
    lib: ['lib.es2023.d.ts', 'lib.dom.d.ts'],
    types: ['node'],
    rootDir: shared,
    outDir
  })
  const result = program.emit()
  const problems = [...ts.getPreEmitDiagnostics(program), ...result.diagnostics]
  if (problems.length > 0) {
    const host = { getCanonicalFileName: f => f, getCurrentDirectory: () => root, getNewLine: () => '\n' }
    throw new Error(ts.formatDiagnostics(problems, host))
  }
}

const only = process.argv[2]
if (only !== undefined && !PACKAGES.some(p => p.name === only)) throw new Error(`unknown package ${only}`)

for (const pkg of PACKAGES.filter(p => only === undefined || p.name === only)) {
  const outdir = join(root, pkg.dir, 'dist')
  await rm(outdir, { recursive: true, force: true })
  await build({
    absWorkingDir: root,
    entryPoints: Object.fromEntries(Object.entries(pkg.entries).map(([name, file]) => [name, join(shared, file)])),
    outdir,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: pkg.platform,
    target: ['es2022'],
    packages: 'external',
    sourcemap: false,
    legalComments: 'none',
    charset: 'utf8',
    logLevel: 'warning'
  })
  emitDeclarations(Object.values(pkg.entries).map(f => join(shared, f)), join(outdir, 'types'))
}
