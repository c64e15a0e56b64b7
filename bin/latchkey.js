#!/usr/bin/env node
// Entry point of the `latchkey` command: runs the compiled CLI (npm run build).
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const entry = new URL('../dist/services/gateway/src/cli/main.js', import.meta.url)
if (!existsSync(fileURLToPath(entry))) {
  process.stderr.write('latchkey: not built yet; run `npm run build` (npm start does it for you)\n')
  process.exit(2)
}
const { main } = await import(entry.href)
const code = await main(process.argv.slice(2), { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr }, process.env)
if (code >= 0) process.exitCode = code
