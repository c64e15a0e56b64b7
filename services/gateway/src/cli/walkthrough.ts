/**
 * The copy-paste walkthrough `latchkey dev` prints: every line is a command that works
 * against the process that printed it (a test runs them verbatim).
 */
import type { GatewayConfig } from '../config.js'
import type { CliIo } from './io.js'

function shellQuote (s: string): string {
  return `'${s.replace(/'/g, "'\\''")}'`
}

export function walkthroughCommands (config: GatewayConfig, demoPassword: string | undefined): string[] {
  const base = `http://localhost:${config.port}`
  const login = JSON.stringify({ username: 'demo', password: demoPassword ?? '<your password>' })
  return [
    'JAR=$(mktemp)',
    '# 1. sign in: the access token is printed, the refresh token goes to the cookie jar',
    `curl -s -c "$JAR" -H 'content-type: application/json' -d ${shellQuote(login)} ${base}/auth/login; echo`,
    '# 2. rotate the refresh token (the jar now holds its successor)',
    `curl -s -b "$JAR" -c "$JAR" -X POST ${base}/auth/refresh; echo`,
    '# 3. sign out: the whole session (family) is revoked',
    `curl -s -b "$JAR" -c "$JAR" -X POST -o /dev/null -w 'logout: %{http_code}\\n' ${base}/auth/logout`,
    '# 4. the session is gone: 401 invalid_grant',
    `curl -s -b "$JAR" -X POST ${base}/auth/refresh; echo`
  ]
}

export function printWalkthrough (io: CliIo, config: GatewayConfig, demoPassword: string | undefined): void {
  const lines = [
    '',
    `latchkey is running: gateway ${config.issuer} (listening on ${config.host}:${config.port})`,
    demoPassword === undefined
      ? 'Users come from USERS_FILE.'
      : `Demo user: demo / ${demoPassword}   (generated for this run; set USERS_FILE for real users)`,
    '',
    'Try it:',
    ...walkthroughCommands(config, demoPassword).map(l => `  ${l}`),
    ''
  ]
  io.stdout.write(`${lines.join('\n')}\n`)
}
