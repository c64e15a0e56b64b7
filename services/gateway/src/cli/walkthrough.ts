/**
 * The copy-paste walkthrough `latchkey dev` prints: every line is a command that works
 * against the process that printed it (a test runs them verbatim).
 */
import type { GatewayConfig } from '../config.js'
import type { CliIo } from './io.js'

function shellQuote (s: string): string {
  return `'${s.replace(/'/g, "'\\''")}'`
}

/** Pull the access token out of a JSON body without needing jq. */
const ACCESS_TOKEN_SED = `sed -E 's/.*"access_token":"([^"]+)".*/\\1/'`

export function walkthroughCommands (config: GatewayConfig, demoPassword: string | undefined): string[] {
  const base = `http://localhost:${config.port}`
  const login = JSON.stringify({ username: 'demo', password: demoPassword ?? '<your password>' })
  return [
    'JAR=$(mktemp)',
    '# 1. sign in: the refresh token goes to the cookie jar, the access token to $TOKEN',
    `TOKEN=$(curl -s -c "$JAR" -H 'content-type: application/json' -d ${shellQuote(login)} ${base}/auth/login | ${ACCESS_TOKEN_SED}); echo "access token: \${TOKEN:0:24}..."`,
    '# 2. call the resource service through the gateway',
    `curl -s -H "Authorization: Bearer $TOKEN" ${base}/api/me; echo`,
    '# 3. rotate the refresh token (the jar now holds its successor)',
    `curl -s -b "$JAR" -c "$JAR" -X POST ${base}/auth/refresh; echo`,
    '# 4. sign out: the whole session (family) is revoked',
    `curl -s -b "$JAR" -c "$JAR" -X POST -o /dev/null -w 'logout: %{http_code}\\n' ${base}/auth/logout`,
    '# 5. the same access token is now refused at the gateway, and the session cannot refresh',
    `curl -s -o /dev/null -w 'api after logout: %{http_code}\\n' -H "Authorization: Bearer $TOKEN" ${base}/api/me`,
    `curl -s -b "$JAR" -X POST ${base}/auth/refresh; echo`
  ]
}

export function printWalkthrough (io: CliIo, config: GatewayConfig, demoPassword: string | undefined, resourceUrl?: string): void {
  const lines = [
    '',
    `latchkey is running: gateway ${config.issuer} (listening on ${config.host}:${config.port})${resourceUrl === undefined ? '' : `, resource ${resourceUrl}`}`,
    ...(config.demoPage ? [`Demo page: http://localhost:${config.port}/`] : []),
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
