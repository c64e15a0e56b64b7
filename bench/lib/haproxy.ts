/**
 * Peer: HAProxy (Debian's `haproxy`, 2.5 or later) verifying the same ES256 access token on
 * every request with its built-in `jwt_verify`, in front of the same resource — what a team
 * gets from a C proxy doing the crypto itself. It checks what a careful HAProxy config
 * checks (alg pinned, signature, iss, aud, exp); it has no revocation, which is the part
 * latchkey adds. One thread (`nbthread 1`), like the one Node process of the other rows.
 */
import { spawnSync } from 'node:child_process'
import { createPublicKey } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { freePort, startChild, waitForHttp } from './processes.js'
import type { Service } from './services.js'

/** `jwt_verify` arrived in HAProxy 2.5. */
const MIN_VERSION: readonly [number, number] = [2, 5]

/** Why HAProxy cannot be a peer here, or undefined when it can. */
export function haproxyUnavailable (): string | undefined {
  const probe = spawnSync('haproxy', ['-v'], { encoding: 'utf8' })
  if (probe.error !== undefined || probe.status !== 0) return 'haproxy is not on PATH (apt-get install haproxy)'
  const m = /version (\d+)\.(\d+)/.exec(probe.stdout)
  if (m === null) return 'could not read the haproxy version'
  const [major, minor] = [Number(m[1]), Number(m[2])]
  if (major < MIN_VERSION[0] || (major === MIN_VERSION[0] && minor < MIN_VERSION[1])) return `haproxy ${major}.${minor} has no jwt_verify (2.5+)`
  return undefined
}

/** The signing key's public half as PEM, from a private JWKS file (the first key signs). */
function publicPem (keysFile: string): { pem: string, alg: string } {
  const jwks = JSON.parse(readFileSync(keysFile, 'utf8')) as { keys: Array<Record<string, unknown>> }
  const first = jwks.keys[0]
  if (first === undefined) throw new Error('the bench key file has no key')
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...pub } = first
  const pem = createPublicKey({ key: pub, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString()
  return { pem, alg: String(first.alg) }
}

export async function startHaproxy (workDir: string, upstreamUrl: string, keysFile: string, issuer: string, audience: string): Promise<Service> {
  const port = await freePort()
  const dir = join(workDir, 'haproxy')
  mkdirSync(dir, { recursive: true })
  const { pem, alg } = publicPem(keysFile)
  if (alg !== 'ES256') throw new Error(`the HAProxy peer verifies ES256; the bench key is ${alg}`)
  const pemFile = join(dir, 'pub.pem')
  writeFileSync(pemFile, pem)
  const upstream = new URL(upstreamUrl)
  const deny = 'http-request return status 401 content-type application/json string \'{"error":"invalid_token"}\''
  const conf = `
global
  nbthread 1
  maxconn 4096
  log stderr format raw local0 err

defaults
  mode http
  timeout connect 5s
  timeout client 75s
  timeout server 30s
  timeout http-keep-alive 72s
  option http-keep-alive

frontend api
  bind 127.0.0.1:${port}
  http-request return status 200 content-type text/plain string ok if { path /healthz }
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')
  http-request set-var(txn.iss) var(txn.bearer),jwt_payload_query('$.iss')
  http-request set-var(txn.aud) var(txn.bearer),jwt_payload_query('$.aud')
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')
  http-request set-var(txn.now) date()
  ${deny} unless { var(txn.alg) -m str ES256 }
  ${deny} unless { var(txn.bearer),jwt_verify(txn.alg,"${pemFile}") -m int 1 }
  ${deny} unless { var(txn.iss) -m str ${issuer} }
  ${deny} unless { var(txn.aud) -m str ${audience} }
  ${deny} if { var(txn.exp),sub(txn.now) -m int lt 0 }
  default_backend resource

backend resource
  http-reuse always
  server r1 ${upstream.host}
`
  const confFile = join(dir, 'haproxy.cfg')
  writeFileSync(confFile, conf)
  const check = spawnSync('haproxy', ['-c', '-f', confFile], { encoding: 'utf8' })
  if (check.status !== 0) throw new Error(`haproxy rejected its config:\n${check.stdout}${check.stderr}`)
  const child = startChild('haproxy', 'haproxy', ['-db', '-f', confFile], {})
  const url = `http://127.0.0.1:${port}`
  await waitForHttp(child, `${url}/healthz`)
  return { child, url }
}
