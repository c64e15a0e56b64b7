/**
 * npm 11 lists every dependency whose install script `allowScripts` (package.json) neither
 * approves nor denies, as an unexplained warning on each `npm ci`. Every package the
 * lockfile marks `hasInstallScript` must have a decision, so that a new dependency with a
 * script fails here, where the README's Tests section explains what to do, not in CI logs.
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ROOT } from '../helpers/processes.js'

interface Lock { packages: Record<string, { hasInstallScript?: boolean, version?: string }> }

t.test('every install script in the lockfile is approved or denied in allowScripts', async (t) => {
  const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as Lock
  const allow = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { allowScripts?: Record<string, boolean> }).allowScripts ?? {}
  const withScripts = Object.entries(lock.packages)
    .filter(([, entry]) => entry.hasInstallScript === true)
    .map(([path, entry]) => ({ name: path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length), version: entry.version }))
  t.ok(withScripts.length > 0, 'the lockfile records install scripts (the check can fail)')
  for (const { name, version } of withScripts) {
    const decision = allow[name] ?? allow[`${name}@${version ?? ''}`]
    t.type(decision, 'boolean', `${name}@${version ?? '?'}: ${decision === true ? 'approved' : decision === false ? 'denied' : 'no decision: npm install-scripts approve|deny'}`)
  }
  t.equal(allow.esbuild, true, 'esbuild checks its platform binary at install')
})
