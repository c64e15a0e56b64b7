/**
 * The gateway's signing keys: a private JWKS (RFC 7517 §5) from SIGNING_KEYS_FILE. The
 * first key signs; every key's public part is published, so a rotation can publish the
 * next key before it signs and keep the previous one until its last token expires. Keys
 * are imported once per load, never per request.
 *
 * The file is reloaded while the gateway runs (ops/reloader.ts): `replace()` swaps the
 * whole set in one assignment, and the `SigningKeys` object keeps its identity, so
 * everything holding it — the issuer, the JWKS route, the proxy's verifier — sees the new
 * set on its next call. Nothing may copy `signing` or `verificationKey` out of it.
 */
import type { KeyObject } from 'node:crypto'
import { CompactSign, calculateJwkThumbprint, compactVerify, exportJWK, generateKeyPair, importJWK } from 'jose'
import { ConfigError } from '#shared/errors.js'
import { parseJsonConfig, readConfigFile } from '#shared/config-file.js'

export const SIGNING_ALGS = ['EdDSA', 'ES256', 'RS256'] as const
export type SigningAlg = typeof SIGNING_ALGS[number]
/** ES256: what every common verifier reads (jsonwebtoken, HAProxy, AWS API Gateway and .NET cannot verify EdDSA). */
export const DEFAULT_SIGNING_ALG: SigningAlg = 'ES256'

/** RSA below 2048 bits is refused (RFC 7518 §3.3 makes 2048 the minimum for RS256). */
export const MIN_RSA_BITS = 2048

const VARIABLE = 'SIGNING_KEYS_FILE'

/** What each alg requires of the key (RFC 8037 §3.1 for EdDSA, RFC 7518 §3.4 for ES256). */
const KEY_SHAPE: Readonly<Record<SigningAlg, { kty: 'OKP' | 'EC' | 'RSA', crv?: string, members: readonly string[] }>> = {
  EdDSA: { kty: 'OKP', crv: 'Ed25519', members: ['x'] },
  ES256: { kty: 'EC', crv: 'P-256', members: ['x', 'y'] },
  RS256: { kty: 'RSA', members: ['n', 'e'] }
}

/** The only members that may leave the process: key material is picked by allow-list, never by deleting. */
export interface PublicJwk {
  readonly kid: string
  readonly alg: SigningAlg
  readonly use: 'sig'
  readonly kty: 'OKP' | 'EC' | 'RSA'
  readonly crv?: string
  readonly x?: string
  readonly y?: string
  readonly n?: string
  readonly e?: string
}

export interface PrivateJwk extends PublicJwk {
  readonly d: string
  readonly p?: string
  readonly q?: string
  readonly dp?: string
  readonly dq?: string
  readonly qi?: string
}

export type SigningKey = CryptoKey | KeyObject

/** One loaded key file, validated and imported: what `replace()` swaps in. */
export interface KeySet {
  readonly signing: { readonly kid: string, readonly alg: SigningAlg, readonly key: SigningKey }
  /** Frozen; only kty, crv, x, y, n, e, kid, alg, use. */
  readonly publicJwks: { readonly keys: readonly PublicJwk[] }
  readonly byKid: ReadonlyMap<string, { readonly alg: SigningAlg, readonly key: SigningKey }>
}

export class SigningKeys {
  #set: KeySet
  /** True when no file was given and a per-process key was generated. */
  readonly ephemeral: boolean

  constructor (set: KeySet, ephemeral = false) {
    this.#set = set
    this.ephemeral = ephemeral
  }

  /** The key that signs now: read it per token, never keep it. */
  get signing (): KeySet['signing'] {
    return this.#set.signing
  }

  /** The same object until the next `replace()`: callers may cache what they derive from it by identity. */
  get publicJwks (): KeySet['publicJwks'] {
    return this.#set.publicJwks
  }

  verificationKey (kid: string): { readonly alg: SigningAlg, readonly key: SigningKey } | undefined {
    return this.#set.byKid.get(kid)
  }

  /** Put a reloaded key file in force: the next token is signed, and the next one verified, with it. */
  replace (set: KeySet): void {
    this.#set = set
  }
}

export interface KeyLoadLog { warn (obj: object, msg: string): void }

const PUBLIC_MEMBERS = ['crv', 'x', 'y', 'n', 'e'] as const
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi'] as const
const BASE64URL = /^[A-Za-z0-9_-]+$/
/** Printable ASCII without spaces: a kid travels in JOSE headers and log lines. */
const KID = /^[\x21-\x7e]{1,200}$/
const PROBE = new TextEncoder().encode('latchkey key pair probe')

function isSigningAlg (value: unknown): value is SigningAlg {
  return typeof value === 'string' && (SIGNING_ALGS as readonly string[]).includes(value)
}

/** A short, quoted rendering of a value that is never key material (kty, alg, crv, kid, use). */
function show (value: unknown): string {
  const s = JSON.stringify(value) ?? String(value)
  return s.length > 80 ? `${s.slice(0, 80)}…` : s
}

function pickPublic (jwk: Readonly<Record<string, unknown>>, kid: string, alg: SigningAlg): PublicJwk {
  const out: Record<string, unknown> = { kid, alg, use: 'sig', kty: KEY_SHAPE[alg].kty }
  for (const m of PUBLIC_MEMBERS) if (typeof jwk[m] === 'string') out[m] = jwk[m]
  return Object.freeze(out) as unknown as PublicJwk
}

/** Bits in a base64url big-endian unsigned integer (RFC 7518 §6.3.1.1 `n`). */
function modulusBits (n: string): number {
  const bytes = Buffer.from(n, 'base64url')
  let i = 0
  while (i < bytes.length && bytes[i] === 0) i++
  if (i === bytes.length) return 0
  return (bytes.length - i - 1) * 8 + (32 - Math.clz32(bytes[i] as number))
}

/** A fresh private JWK for `alg`, its kid the RFC 7638 thumbprint of the public key. */
export async function generatePrivateJwk (alg: SigningAlg): Promise<PrivateJwk> {
  const { privateKey } = await generateKeyPair(alg, { extractable: true })
  const exported = await exportJWK(privateKey) as Record<string, unknown>
  const kid = await calculateJwkThumbprint(exported as Parameters<typeof calculateJwkThumbprint>[0])
  const out: Record<string, unknown> = { ...pickPublic(exported, kid, alg) }
  for (const m of PRIVATE_MEMBERS) if (typeof exported[m] === 'string') out[m] = exported[m]
  return out as unknown as PrivateJwk
}

interface LoadedKey {
  readonly kid: string
  readonly alg: SigningAlg
  readonly privateKey: CryptoKey
  readonly publicKey: CryptoKey
  readonly publicJwk: PublicJwk
}

/** Validate and import one private JWK; every failure is one line that never shows key material. */
async function loadKey (raw: unknown, where: string): Promise<LoadedKey> {
  const fail = (problem: string): never => { throw new ConfigError(VARIABLE, `${where}: ${problem}`) }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return fail('is not a JSON object')
  const jwk = raw as Record<string, unknown>
  const label = typeof jwk.kid === 'string' ? `${where} (kid ${show(jwk.kid)})` : where
  const bad = (problem: string): never => { throw new ConfigError(VARIABLE, `${label}: ${problem}`) }

  if (jwk.kty !== 'OKP' && jwk.kty !== 'EC' && jwk.kty !== 'RSA') {
    return bad(`unsupported kty ${show(jwk.kty)} (supported: OKP Ed25519, EC P-256, RSA)`)
  }
  let alg: SigningAlg
  if (jwk.alg === undefined) {
    // Without "alg" the key type decides: each supported kty maps to exactly one alg here.
    alg = jwk.kty === 'OKP' ? 'EdDSA' : jwk.kty === 'EC' ? 'ES256' : 'RS256'
  } else if (isSigningAlg(jwk.alg)) {
    alg = jwk.alg
  } else {
    return bad(`unsupported alg ${show(jwk.alg)} (supported: ${SIGNING_ALGS.join(', ')})`)
  }
  const shape = KEY_SHAPE[alg]
  if (jwk.kty !== shape.kty) return bad(`alg ${alg} needs kty ${shape.kty}, got ${show(jwk.kty)}`)
  if (shape.crv !== undefined && jwk.crv !== shape.crv) return bad(`unsupported crv ${show(jwk.crv)} for ${alg} (expected ${shape.crv})`)
  if (jwk.use !== undefined && jwk.use !== 'sig') return bad(`use must be "sig", got ${show(jwk.use)}`)
  if (jwk.kid !== undefined && (typeof jwk.kid !== 'string' || !KID.test(jwk.kid))) {
    return bad('kid must be 1-200 printable characters without spaces')
  }
  if (typeof jwk.d !== 'string' || jwk.d === '') {
    return bad('has no private part "d" (the file must hold private keys; their public parts are published)')
  }
  for (const m of [...shape.members, 'd']) {
    if (typeof jwk[m] !== 'string' || !BASE64URL.test(jwk[m] as string)) return bad(`"${m}" must be a base64url string`)
  }
  if (jwk.oth !== undefined) return bad('multi-prime RSA keys ("oth") are not supported')
  if (alg === 'RS256') {
    const bits = modulusBits(jwk.n as string)
    if (bits < MIN_RSA_BITS) return bad(`RSA key is ${bits} bits; at least ${MIN_RSA_BITS} are required`)
  }

  const kid = typeof jwk.kid === 'string' ? jwk.kid : await calculateJwkThumbprint(jwk as Parameters<typeof calculateJwkThumbprint>[0])
  const publicJwk = pickPublic(jwk, kid, alg)
  const material: Record<string, unknown> = { kty: shape.kty }
  for (const m of [...PUBLIC_MEMBERS, ...PRIVATE_MEMBERS]) if (typeof jwk[m] === 'string') material[m] = jwk[m]

  let privateKey: CryptoKey
  let publicKey: CryptoKey
  try {
    // jose 6 returns CryptoKeys for asymmetric JWKs; the private one stays non-extractable.
    privateKey = await importJWK(material, alg, { extractable: false }) as CryptoKey
    publicKey = await importJWK({ ...publicJwk }, alg) as CryptoKey
  } catch {
    // The cause is deliberately dropped: import errors may quote the JWK.
    return bad(`is not a valid ${alg} private key`)
  }
  // A key whose "d" does not belong to its public part would sign tokens no one can verify.
  try {
    const probe = await new CompactSign(PROBE).setProtectedHeader({ alg }).sign(privateKey)
    await compactVerify(probe, publicKey, { algorithms: [alg] })
  } catch {
    return bad('its private and public parts do not match')
  }
  return { kid, alg, privateKey, publicKey, publicJwk }
}

async function readJwksText (file: string): Promise<string> {
  return await readConfigFile(file, VARIABLE)
}

function parseJwks (text: string, file: string): unknown[] {
  // Never the parser's message: it quotes the text around the error, i.e. key material.
  const parsed = parseJsonConfig(text, file, VARIABLE)
  const keys = parsed !== null && typeof parsed === 'object' ? (parsed as { keys?: unknown }).keys : undefined
  if (!Array.isArray(keys) || keys.length === 0) {
    throw new ConfigError(VARIABLE, `${file}: expected a private JWKS {"keys": [...]} with at least one key`)
  }
  return keys
}

function assemble (loaded: readonly LoadedKey[]): KeySet {
  const byKid = new Map<string, { readonly alg: SigningAlg, readonly key: CryptoKey }>()
  for (const k of loaded) byKid.set(k.kid, Object.freeze({ alg: k.alg, key: k.publicKey }))
  const first = loaded[0] as LoadedKey
  return Object.freeze({
    signing: Object.freeze({ kid: first.kid, alg: first.alg, key: first.privateKey }),
    publicJwks: Object.freeze({ keys: Object.freeze(loaded.map(k => k.publicJwk)) }),
    byKid
  })
}

/** Validate and import the text of a key file, whole: any problem is one ConfigError('SIGNING_KEYS_FILE', ...). */
export async function parseSigningKeys (text: string, file: string): Promise<KeySet> {
  const raw = parseJwks(text, file)
  const loaded: LoadedKey[] = []
  const seen = new Set<string>()
  for (const [i, entry] of raw.entries()) {
    const key = await loadKey(entry, `${file}: key ${i}`)
    if (seen.has(key.kid)) throw new ConfigError(VARIABLE, `${file}: key ${i}: duplicate kid ${show(key.kid)}`)
    seen.add(key.kid)
    loaded.push(key)
  }
  return assemble(loaded)
}

/**
 * Load SIGNING_KEYS_FILE. Without a file, one ephemeral DEFAULT_SIGNING_ALG key is generated and a
 * warning logged: fine for `npm start`, wrong for replicas (each would sign with its own key).
 */
export async function loadSigningKeys (file: string | undefined, log: KeyLoadLog): Promise<SigningKeys> {
  if (file === undefined) {
    const jwk = await generatePrivateJwk(DEFAULT_SIGNING_ALG)
    const key = await loadKey(jwk, 'ephemeral key')
    log.warn({ kid: key.kid, alg: key.alg }, 'SIGNING_KEYS_FILE is not set: signing with an ephemeral key; its tokens die with the process (run `latchkey keys generate --out FILE`)')
    return new SigningKeys(assemble([key]), true)
  }
  return new SigningKeys(await parseSigningKeys(await readJwksText(file), file))
}
