#!/usr/bin/env node
// Bundles the browser code into ES modules under dist/public/ (part of `npm run build`):
//   session-client.js  the session client, for web apps to self-host (no CDN)
//   demo.js            the demo page's script (includes the client)
//   index.html, demo.css, icon.svg  copied from services/gateway/src/ui/
// Each file is written to a temporary name and renamed, so a gateway (or a test) reading the
// folder while another build runs sees whole files, never half-written ones.
import { build } from 'esbuild'
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const outdir = join(root, 'dist', 'public')
const STATIC_FILES = ['index.html', 'demo.css', 'icon.svg'].map(f => join(root, 'services', 'gateway', 'src', 'ui', f))

async function writeAtomically (path, contents) {
  const tmp = `${path}.${process.pid}.tmp`
  await writeFile(tmp, contents)
  await rename(tmp, path)
}

const result = await build({
  absWorkingDir: root,
  entryPoints: {
    'session-client': 'shared/src/session-client.ts',
    demo: 'services/gateway/src/ui/demo.ts'
  },
  outdir,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2022'],
  // package.json "imports" map #shared/* to the TypeScript sources under this condition.
  conditions: ['latchkey-source'],
  sourcemap: 'linked',
  legalComments: 'none',
  charset: 'utf8',
  write: false,
  logLevel: 'warning'
})

await mkdir(outdir, { recursive: true })
for (const file of result.outputFiles) await writeAtomically(file.path, file.contents)
for (const file of STATIC_FILES) await writeAtomically(join(outdir, basename(file)), await readFile(file))
