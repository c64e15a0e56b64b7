/**
 * What the README tells people to create inside the checkout must never be committed by
 * accident: the Compose walkthrough's `./secrets` (signing key, password hashes, client
 * secrets), the Kubernetes overlay's secrets, and what the tests write (screenshots).
 */
import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { ROOT } from '../helpers/processes.js'
import { SCREENSHOT } from '../browser/screenshot.js'

function insideGitCheckout (): boolean {
  return spawnSync('git', ['rev-parse', '--is-inside-work-tree'], { cwd: ROOT, encoding: 'utf8' }).stdout.trim() === 'true'
}

/** `git check-ignore` exits 0 when the path is ignored, 1 when it is not. */
function ignored (path: string): boolean {
  return spawnSync('git', ['check-ignore', '--quiet', '--no-index', path], { cwd: ROOT }).status === 0
}

t.test('secrets and test output are git-ignored', { skip: !insideGitCheckout() && 'not a git checkout' }, async (t) => {
  for (const path of ['secrets/keys.json', 'secrets/users.json', 'secrets/clients.json', 'secrets/.env',
    'k8s/overlays/production/secrets/keys.json', SCREENSHOT]) {
    t.ok(ignored(path), `${path} is ignored`)
  }
  t.notOk(ignored('docs/demo-signed-in.png'), 'the README\'s screenshot stays tracked')
  t.notOk(ignored('services/gateway/src/main.ts'), 'sources are not (the check can fail)')
  const tracked = execFileSync('git', ['ls-files', '--', 'secrets'], { cwd: ROOT, encoding: 'utf8' })
  t.equal(tracked, '', 'nothing under ./secrets is tracked')
})
