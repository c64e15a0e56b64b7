/**
 * Client-credentials tokens/s by client authentication method, side by side on one gateway
 * (Redis on loopback): `client_secret_basic` against `private_key_jwt` (an ES256 assertion
 * per request, signed before the run so the load generator does not sign while measuring;
 * each jti is claimed once in Redis by the gateway). Rows alternate in rounds.
 *
 *   node --import=tsx --conditions=latchkey-source bench/client-auth.ts [--seconds=5] [--rounds=3]
 */
import { type JsonWebKey, createPrivateKey, randomUUID, sign } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { exportJWK, generateKeyPair } from 'jose'
import { type Sample, runLoad, summarise } from './lib/load.js'
import { ROOT, freePort, runToEnd, stopAll, stopChildrenOnExit } from './lib/processes.js'
import { AUDIENCE, BENCH_CLIENT_SCOPE, createWorkspace, gatewayEnv, startGateway, startRedis } from './lib/services.js'

const CONNECTIONS = 32
/** Assertions signed ahead per second of pkj load: well above what one gateway process issues. */
const ASSERTIONS_PER_SECOND = 8000

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '5' }, rounds: { type: 'string', default: '3' } } })
const seconds = Number(values.seconds)
const rounds = Number(values.rounds)
stopChildrenOnExit()

const launch = { source: true, cpuProfDir: undefined }
const ws = await createWorkspace(launch)
const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
const jwksFile = join(ws.dir, 'bench-pkj.jwks.json')
writeFileSync(jwksFile, JSON.stringify({ keys: [{ ...await exportJWK(publicKey), kid: 'bench-1', alg: 'ES256' }] }))
await runToEnd('clients add (jwks)', process.execPath, ['--import=tsx', '--conditions=latchkey-source', join(ROOT, 'test/helpers/cli-entry.ts'),
  'clients', 'add', 'bench-pkj', '--scope', BENCH_CLIENT_SCOPE, '--audience', AUDIENCE, '--jwks', jwksFile, '--file', ws.clientsFile], {})

const redis = await startRedis('redis')
const port = await freePort()
const env = { ...gatewayEnv(ws, port, redis.url, 'http://127.0.0.1:9'), CLIENT_AUTH_MAX_FAILURES_PER_IP: '1000000', CLIENT_AUTH_MAX_FAILURES_PER_CLIENT: '1000000' }
const gateway = await startGateway('gateway', launch, env, false)
const issuer = gateway.url

// ES256 compact JWS by node:crypto (r||s form, RFC 7518 §3.4): fast enough to pre-sign many.
const keyObject = createPrivateKey({ key: await exportJWK(privateKey) as JsonWebKey, format: 'jwk' })
const header = Buffer.from(JSON.stringify({ alg: 'ES256', kid: 'bench-1' })).toString('base64url')
function assertionForm (): string {
  const now = Math.floor(Date.now() / 1000)
  const payload = Buffer.from(JSON.stringify({ iss: 'bench-pkj', sub: 'bench-pkj', aud: issuer, jti: randomUUID(), iat: now, exp: now + 300 })).toString('base64url')
  const input = `${header}.${payload}`
  const sig = sign('sha256', Buffer.from(input), { key: keyObject, dsaEncoding: 'ieee-p1363' }).toString('base64url')
  return `grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=${input}.${sig}`
}

const basic = `Basic ${Buffer.from(`${ws.clientId}:${ws.clientSecret}`).toString('base64')}`
const rows = {
  client_secret_basic: async (): Promise<Sample> => await runLoad({
    url: gateway.url, method: 'POST', path: '/oauth/token', connections: CONNECTIONS,
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic }, body: 'grant_type=client_credentials'
  }, seconds),
  private_key_jwt: async (): Promise<Sample> => {
    const forms = Array.from({ length: ASSERTIONS_PER_SECOND * (seconds + 1) }, assertionForm)
    let next = 0
    return await runLoad({
      url: gateway.url, method: 'POST', path: '/oauth/token', connections: CONNECTIONS,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      perConnection: () => ({ next: () => ({ body: forms[next++ % forms.length] }), answered: () => {} })
    }, seconds)
  }
}

const samples: Record<keyof typeof rows, Sample[]> = { client_secret_basic: [], private_key_jwt: [] }
const order = Object.keys(rows) as Array<keyof typeof rows>
await rows.client_secret_basic() // warm-up
for (let r = 0; r < rounds; r++) {
  for (const key of r % 2 === 0 ? order : [...order].reverse()) samples[key].push(await rows[key]())
}
const summaries = Object.fromEntries(order.map(k => [k, summarise(samples[k])])) as Record<keyof typeof rows, ReturnType<typeof summarise>>
process.stdout.write('| client auth | tokens/s | p50 ms | p99 ms | non-2xx |\n|---|---|---|---|---|\n')
for (const k of order) {
  const s = summaries[k]
  process.stdout.write(`| ${k} | ${Math.round(s.rps)} | ${s.p50_ms.toFixed(2)} | ${s.p99_ms.toFixed(2)} | ${s.non2xx} |\n`)
}
process.stdout.write(`\nprivate_key_jwt / client_secret_basic: ${(summaries.private_key_jwt.rps / summaries.client_secret_basic.rps).toFixed(2)}\n`)
await stopAll()
ws.remove()
