import { join } from 'node:path'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { AccessTokenIssuer, AccessTokenVerifier } from '#gateway/keys/access-token.js'
import { SIGNING_ALGS, loadSigningKeys } from '#gateway/keys/signing-keys.js'
import { systemClock } from '#shared/clock.js'
import { generateKeyFile } from './helpers.js'
const dir = mkdtempSync(join(tmpdir(), 'lkb-'))
const N = Number(process.argv[2] ?? 4000)
const C = 16
async function rate (fn: () => Promise<unknown>, n: number, concurrency: number): Promise<number> {
  let i = 0
  const t0 = performance.now()
  await Promise.all(Array.from({ length: concurrency }, async () => { while (i++ < n) await fn() }))
  return Math.round(n / ((performance.now() - t0) / 1000))
}
for (const alg of SIGNING_ALGS) {
  const file = join(dir, `${alg}.json`)
  await generateKeyFile(file, alg)
  const keys = await loadSigningKeys(file, { warn () {} })
  const issuer = new AccessTokenIssuer({ keys, issuer: 'http://localhost:8080', ttlS: 300, clock: systemClock })
  const verifier = new AccessTokenVerifier({ keys, issuer: 'http://localhost:8080', clock: systemClock })
  const claims = { sub: 'u-123', aud: 'latchkey-api', client_id: 'latchkey-web', scope: 'notes:read notes:write', sid: 'fam-abc' }
  const { token } = await issuer.issue(claims)
  await rate(() => issuer.issue(claims), 500, 1); await rate(() => verifier.verify(token, { audience: 'latchkey-api' }), 500, 1)
  const s1 = await rate(() => issuer.issue(claims), N, 1)
  const sC = await rate(() => issuer.issue(claims), N, C)
  const v1 = await rate(() => verifier.verify(token, { audience: 'latchkey-api' }), N, 1)
  const vC = await rate(() => verifier.verify(token, { audience: 'latchkey-api' }), N, C)
  console.log(`${alg.padEnd(6)} issue seq ${s1}/s  issue x${C} ${sC}/s  verify seq ${v1}/s  verify x${C} ${vC}/s  token ${token.length} B`)
}
