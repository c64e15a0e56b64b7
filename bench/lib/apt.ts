/**
 * The peers that are programs, not npm packages (nginx, HAProxy), come from Debian. When
 * one is missing the bench installs it with apt-get (when it runs as root) and says so;
 * if that fails the peer's rows are skipped with the reason, never the whole run.
 */
import { spawnSync } from 'node:child_process'

function onPath (command: string): boolean {
  const probe = spawnSync(command, ['-v'], { stdio: 'ignore' })
  return probe.error === undefined
}

let updated = false

/** True when `command` is (now) on PATH; installs Debian package `pkg` when it is not. */
export function ensureDebianPackage (command: string, pkg: string, log: (line: string) => void): boolean {
  if (onPath(command)) return true
  if (process.getuid?.() !== 0) {
    log(`${command} is not on PATH and the bench is not root: apt-get install ${pkg} to add its rows`)
    return false
  }
  log(`${command} is not on PATH: installing Debian's ${pkg} with apt-get`)
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  if (!updated) {
    spawnSync('apt-get', ['update', '-qq'], { stdio: 'ignore', env })
    updated = true
  }
  const install = spawnSync('apt-get', ['install', '-y', '-qq', pkg], { stdio: 'ignore', env })
  if (install.status !== 0 || !onPath(command)) {
    log(`could not install ${pkg}; its rows are skipped`)
    return false
  }
  return true
}
