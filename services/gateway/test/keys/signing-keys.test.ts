import crypto from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { ConfigError } from '#shared/errors.js'
import { SIGNING_ALGS, generatePrivateJwk, loadSigningKeys } from '#gateway/keys/signing-keys.js'
import type { SigningAlg } from '#gateway/keys/signing-keys.js'
import { PRIVATE_MEMBERS, generateKeyFile, readKeys, tempDir } from './helpers.js'
import type { Jwk } from './helpers.js'

const silent = { warn: () => {} }
const PUBLIC_SHAPE: Record<SigningAlg, { kty: string, crv?: string, members: string[] }> = {
  EdDSA: { kty: 'OKP', crv: 'Ed25519', members: ['kid', 'alg', 'use', 'kty', 'crv', 'x'] },
  ES256: { kty: 'EC', crv: 'P-256', members: ['kid', 'alg', 'use', 'kty', 'crv', 'x', 'y'] },
  RS256: { kty: 'RSA', members: ['kid', 'alg', 'use', 'kty', 'n', 'e'] }
}

function thumbprint (jwk: Jwk): string {
  // RFC 7638 §3.2: required members only, lexicographic order, no whitespace.
  const required = jwk.kty === 'OKP' ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x }
    : jwk.kty === 'EC' ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }
      : { e: jwk.e, kty: jwk.kty, n: jwk.n }
  return crypto.createHash('sha256').update(JSON.stringify(required)).digest('base64url')
}

t.test('generatePrivateJwk: kid is the RFC 7638 thumbprint, alg and use set, private part present', async t => {
  for (const alg of SIGNING_ALGS) {
    const jwk = await generatePrivateJwk(alg) as unknown as Jwk
    t.equal(jwk.alg, alg)
    t.equal(jwk.use, 'sig')
    t.equal(jwk.kty, PUBLIC_SHAPE[alg].kty)
    t.equal(jwk.crv, PUBLIC_SHAPE[alg].crv)
    t.equal(jwk.kid, thumbprint(jwk), `${alg} kid`)
    t.type(jwk.d, 'string')
    t.notOk('ext' in jwk || 'key_ops' in jwk, `${alg}: no WebCrypto export noise`)
    if (alg === 'RS256') t.equal(Buffer.from(jwk.n as string, 'base64url').length * 8, 2048)
    // node:crypto, not jose, must accept it as a private key of the right type.
    const key = crypto.createPrivateKey({ key: jwk as crypto.JsonWebKey, format: 'jwk' })
    t.equal(key.asymmetricKeyType, { EdDSA: 'ed25519', ES256: 'ec', RS256: 'rsa' }[alg])
  }
})

t.test('a file of all three algs: the first key signs, all are published, none with private members', async t => {
  const file = join(tempDir(t), 'keys.json')
  await generateKeyFile(file, 'ES256')
  await generateKeyFile(file, 'RS256', '--append')
  await generateKeyFile(file, 'EdDSA', '--append')
  const onDisk = readKeys(file)
  const keys = await loadSigningKeys(file, silent)

  t.equal(keys.ephemeral, false)
  t.equal(keys.signing.kid, onDisk[0]?.kid)
  t.equal(keys.signing.alg, 'ES256')
  t.equal((keys.signing.key as CryptoKey).type, 'private')
  t.equal((keys.signing.key as CryptoKey).extractable, false, 'the private key cannot be exported from memory')
  t.same(keys.publicJwks.keys.map(k => k.kid), onDisk.map(k => k.kid), 'every key published, in file order')
  t.same(keys.publicJwks.keys.map(k => k.alg), ['ES256', 'RS256', 'EdDSA'])

  for (const [i, pub] of keys.publicJwks.keys.entries()) {
    const alg = pub.alg
    t.same(Object.keys(pub).sort(), [...PUBLIC_SHAPE[alg].members].sort(), `${alg}: exactly the public members`)
    for (const m of PRIVATE_MEMBERS) t.notOk(m in pub, `${alg}: no ${m}`)
    t.equal(pub.use, 'sig')
    for (const m of PUBLIC_SHAPE[alg].members) t.equal((pub as unknown as Jwk)[m], onDisk[i]?.[m], `${alg}.${m} copied as is`)
    const verification = keys.verificationKey(pub.kid)
    t.equal(verification?.alg, alg)
    t.equal((verification?.key as CryptoKey).type, 'public')
  }
  const serialised = JSON.stringify(keys.publicJwks)
  for (const k of onDisk) {
    for (const m of PRIVATE_MEMBERS) {
      if (typeof k[m] === 'string') t.notOk(serialised.includes(k[m] as string), `${String(k.alg)}.${m} value not in the JWKS`)
    }
  }
  t.equal(keys.verificationKey('no-such-kid'), undefined)

  t.ok(Object.isFrozen(keys.publicJwks), 'publicJwks frozen')
  t.ok(Object.isFrozen(keys.publicJwks.keys), 'keys array frozen')
  t.ok(keys.publicJwks.keys.every(k => Object.isFrozen(k)), 'each key frozen')
  t.throws(() => { (keys.publicJwks.keys as unknown as Jwk[]).push({}) })
})

t.test('kid and alg may be omitted: kid becomes the thumbprint, alg follows the key type', async t => {
  const file = join(tempDir(t), 'bare.json')
  const ec = await generatePrivateJwk('ES256') as unknown as Jwk
  const rsa = await generatePrivateJwk('RS256') as unknown as Jwk
  const strip = ({ kid: _kid, alg: _alg, use: _use, ...rest }: Jwk): Jwk => rest
  writeFileSync(file, JSON.stringify({ keys: [strip(ec), strip(rsa)] }))
  const keys = await loadSigningKeys(file, silent)
  t.same(keys.publicJwks.keys.map(k => [k.kid, k.alg]), [[ec.kid, 'ES256'], [rsa.kid, 'RS256']])
})

t.test('no file: one ephemeral EdDSA key and exactly one warning', async t => {
  const warnings: Array<{ obj: object, msg: string }> = []
  const keys = await loadSigningKeys(undefined, { warn: (obj, msg) => { warnings.push({ obj, msg }) } })
  t.equal(keys.ephemeral, true)
  t.equal(keys.signing.alg, 'EdDSA')
  t.equal(keys.publicJwks.keys.length, 1)
  t.equal(keys.publicJwks.keys[0]?.kid, keys.signing.kid)
  t.equal(warnings.length, 1)
  t.match(warnings[0]?.msg, /SIGNING_KEYS_FILE.*ephemeral.*die with the process/)
  t.same(warnings[0]?.obj, { kid: keys.signing.kid, alg: 'EdDSA' }, 'only the kid and alg, no key material')
  const other = await loadSigningKeys(undefined, silent)
  t.not(other.signing.kid, keys.signing.kid, 'each process gets its own key')
})

t.test('bad key files: one ConfigError line naming SIGNING_KEYS_FILE, never key material', async t => {
  const dir = tempDir(t)
  const ed = await generatePrivateJwk('EdDSA') as unknown as Jwk
  const ed2 = await generatePrivateJwk('EdDSA') as unknown as Jwk
  const ec = await generatePrivateJwk('ES256') as unknown as Jwk
  const rsa = await generatePrivateJwk('RS256') as unknown as Jwk
  const rsa2 = await generatePrivateJwk('RS256') as unknown as Jwk
  const exportJwk = (key: crypto.KeyObject): Jwk => key.export({ format: 'jwk' }) as Jwk
  const rsa1024 = exportJwk(crypto.generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey)
  const p384 = exportJwk(crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey)
  const ed448 = exportJwk(crypto.generateKeyPairSync('ed448').privateKey)
  const oct: Jwk = { kty: 'oct', k: crypto.randomBytes(32).toString('base64url'), alg: 'HS256' }
  const { d: _d, ...edPublic } = ed

  const cases: Array<{ name: string, text: string, expect: RegExp }> = [
    { name: 'not JSON (and the parser would quote it)', text: `{"keys":[{"kty":"OKP","d":"${String(ed.d)}" oops`, expect: /not valid JSON/ },
    { name: 'not a JWKS', text: JSON.stringify([ed]), expect: /expected a private JWKS/ },
    { name: 'no keys', text: JSON.stringify({ keys: [] }), expect: /at least one key/ },
    { name: 'key not an object', text: JSON.stringify({ keys: ['x'] }), expect: /key 0: is not a JSON object/ },
    { name: 'duplicate kid', text: JSON.stringify({ keys: [ed, { ...ed2, kid: ed.kid }] }), expect: /key 1: duplicate kid/ },
    { name: 'missing d', text: JSON.stringify({ keys: [edPublic] }), expect: /key 0 \(kid "[^"]+"\): has no private part "d"/ },
    { name: 'missing d on a later key', text: JSON.stringify({ keys: [ec, edPublic] }), expect: /key 1 .*no private part "d"/ },
    { name: 'unsupported alg', text: JSON.stringify({ keys: [{ ...ec, alg: 'ES384' }] }), expect: /unsupported alg "ES384" \(supported: EdDSA, ES256, RS256\)/ },
    { name: 'PS256 on an RSA key', text: JSON.stringify({ keys: [{ ...rsa, alg: 'PS256' }] }), expect: /unsupported alg "PS256"/ },
    { name: 'alg none', text: JSON.stringify({ keys: [{ ...ed, alg: 'none' }] }), expect: /unsupported alg "none"/ },
    { name: 'unsupported kty (a shared secret)', text: JSON.stringify({ keys: [oct] }), expect: /unsupported kty "oct"/ },
    { name: 'unsupported crv P-384', text: JSON.stringify({ keys: [p384] }), expect: /unsupported crv "P-384" for ES256/ },
    { name: 'unsupported crv Ed448', text: JSON.stringify({ keys: [ed448] }), expect: /unsupported crv "Ed448" for EdDSA/ },
    { name: 'alg does not fit kty', text: JSON.stringify({ keys: [{ ...ec, alg: 'EdDSA' }] }), expect: /alg EdDSA needs kty OKP, got "EC"/ },
    { name: 'RSA below 2048 bits', text: JSON.stringify({ keys: [rsa1024] }), expect: /RSA key is 1024 bits; at least 2048 are required/ },
    { name: 'use enc', text: JSON.stringify({ keys: [{ ...ed, use: 'enc' }] }), expect: /use must be "sig"/ },
    { name: 'kid not a string', text: JSON.stringify({ keys: [{ ...ed, kid: 7 }] }), expect: /kid must be/ },
    { name: 'x not base64url', text: JSON.stringify({ keys: [{ ...ed, x: `${String(ed.x)}=` }] }), expect: /"x" must be a base64url string/ },
    { name: 'multi-prime RSA', text: JSON.stringify({ keys: [{ ...rsa, oth: [{ r: 'AQAB', d: 'AQAB', t: 'AQAB' }] }] }), expect: /multi-prime/ },
    // Node refuses some mismatches at import; the sign/verify probe catches the rest (RSA).
    { name: 'Ed25519 halves from different keys', text: JSON.stringify({ keys: [{ ...ed, x: ed2.x }] }), expect: /not a valid EdDSA private key|do not match/ },
    { name: 'RSA halves from different keys', text: JSON.stringify({ keys: [{ ...rsa, n: rsa2.n }] }), expect: /private and public parts do not match/ },
    { name: 'EC point not on the curve', text: JSON.stringify({ keys: [{ ...ec, y: ec.x }] }), expect: /not a valid ES256 private key|do not match/ }
  ]

  const secrets: string[] = []
  for (const k of [ed, ed2, ec, rsa, rsa2, rsa1024, p384, ed448, oct]) {
    for (const m of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k', 'x', 'y', 'n']) if (typeof k[m] === 'string') secrets.push(k[m] as string)
  }

  for (const [i, c] of cases.entries()) {
    const file = join(dir, `bad-${i}.json`)
    writeFileSync(file, c.text)
    const err = await loadSigningKeys(file, silent).then(() => undefined, (e: unknown) => e)
    t.ok(err instanceof ConfigError, `${c.name}: ConfigError`)
    if (!(err instanceof ConfigError)) continue
    t.equal(err.variable, 'SIGNING_KEYS_FILE', `${c.name}: names the variable`)
    t.ok(err.message.startsWith(`SIGNING_KEYS_FILE: ${file}`), `${c.name}: names the file`)
    t.match(err.message, c.expect, c.name)
    t.notOk(/[\r\n]/.test(err.message), `${c.name}: one line`)
    t.equal(err.cause, undefined, `${c.name}: no cause carrying the parser's or importer's text`)
    // No 12-character run of any key's material appears in the message.
    const leaked = secrets.some(s => { for (let j = 0; j + 12 <= s.length; j += 4) if (err.message.includes(s.slice(j, j + 12))) return true; return false })
    t.notOk(leaked, `${c.name}: no key material in "${err.message}"`)
  }

  const missing = await loadSigningKeys(join(dir, 'absent.json'), silent).catch((e: unknown) => e)
  t.ok(missing instanceof ConfigError)
  t.equal((missing as Error).message, `SIGNING_KEYS_FILE: ${join(dir, 'absent.json')}: file not found`)
  const isDir = await loadSigningKeys(dir, silent).catch((e: unknown) => e)
  t.match((isDir as Error).message, /^SIGNING_KEYS_FILE: .*: is a directory, not a file$/)
})
