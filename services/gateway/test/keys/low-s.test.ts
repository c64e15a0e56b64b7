/**
 * Every ES256 token the gateway issues is in the one spelling the verified-token cache keys
 * on (low s): otherwise half of them would miss the cache's raw-string lookup and never take
 * the proxy's fast lane. A high-s twin of a token still verifies (ECDSA is malleable) and
 * maps to the same cache entry.
 */
import t from 'tap'
import { join } from 'node:path'
import { ManualClock } from '#shared/clock.js'
import { checkTokenFormat, lowSEs256Signature } from '#shared/token-format.js'
import { createGatewayVerifier } from '#gateway/auth/bearer.js'
import { AccessTokenIssuer } from '#gateway/keys/access-token.js'
import { loadSigningKeys } from '#gateway/keys/signing-keys.js'
import { generateKeyFile, tempDir } from './helpers.js'

const ISSUER = 'https://auth.example.test'
const P256_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n
const silent = { warn: () => {}, info: () => {} }

t.test('ES256 tokens are issued with a low s, and verified from the cache by their raw string', async (t) => {
  const file = join(tempDir(t), 'keys.json')
  await generateKeyFile(file, 'ES256')
  const keys = await loadSigningKeys(file, silent)
  const clock = new ManualClock(Date.now())
  const issuer = new AccessTokenIssuer({ keys, issuer: ISSUER, ttlS: 300, clock })
  let nonCanonical = 0
  const tokens: string[] = []
  for (let i = 0; i < 64; i++) {
    const { token } = await issuer.issue({ sub: 'u', aud: 'api', client_id: 'c', scope: '' })
    if (checkTokenFormat(token, ['ES256']).canonical !== token) nonCanonical++
    tokens.push(token)
  }
  t.equal(nonCanonical, 0, '64 of 64 issued tokens are canonical (about 32 would not be without the fix)')

  const verifier = createGatewayVerifier({ keys, issuer: ISSUER, audiences: () => ['api'], revoked: { has: () => false }, clock })
  const token = tokens[0] as string
  await verifier.verify(token)
  t.ok(verifier.cachedAuthorization(`Bearer ${token}`), 'found by its raw string once verified')

  const [h, p, sig] = token.split('.') as [string, string, string]
  const raw = Buffer.from(sig, 'base64url')
  const s = BigInt(`0x${raw.subarray(32).toString('hex')}`)
  const highS = Buffer.concat([raw.subarray(0, 32), Buffer.from((P256_N - s).toString(16).padStart(64, '0'), 'hex')])
  t.same(lowSEs256Signature(highS), raw, 'a high s folds back to the issued low s')
  const twin = `${h}.${p}.${highS.toString('base64url')}`
  t.equal((await verifier.verify(twin)).jti, (await verifier.verify(token)).jti, 'the high-s twin verifies to the same token')
})
