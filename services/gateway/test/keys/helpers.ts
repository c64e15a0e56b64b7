/**
 * Test helpers for keys/: key files made by the real CLI, an in-memory CliIo, and a JWS
 * signer and verifier written with node:crypto only, so the tests never check jose
 * against itself.
 */
import crypto from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { runKeysCommand } from '#gateway/cli/keys.js'
import type { CliIo } from '#gateway/cli/io.js'
import type { SigningAlg } from '#gateway/keys/signing-keys.js'

export type Jwk = Record<string, unknown> & { kid?: string, alg?: string, kty?: string }

interface Teardown { teardown (fn: () => unknown): void }

export function tempDir (t: Teardown): string {
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-keys-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

export interface MemoryIo {
  readonly io: CliIo
  stdout (): string
  stderr (): string
}

export function memoryIo (): MemoryIo {
  const out: Buffer[] = []
  const err: Buffer[] = []
  const stdout = new PassThrough()
  const stderr = new PassThrough()
  stdout.on('data', (c: Buffer) => out.push(c))
  stderr.on('data', (c: Buffer) => err.push(c))
  const stdin = new PassThrough()
  stdin.end()
  return {
    io: { stdin, stdout, stderr },
    stdout: () => Buffer.concat(out).toString('utf8'),
    stderr: () => Buffer.concat(err).toString('utf8')
  }
}

/** Run `keys generate` through the real CLI; throws with its stderr if it fails. */
export async function generateKeyFile (file: string, alg: SigningAlg, placement?: '--append' | '--prepend'): Promise<void> {
  const mem = memoryIo()
  const code = await runKeysCommand(['generate', '--alg', alg, '--out', file, ...(placement === undefined ? [] : [placement])], mem.io)
  if (code !== 0) throw new Error(`keys generate exited ${code}: ${mem.stderr()}`)
}

export function readKeys (file: string): Jwk[] {
  return (JSON.parse(readFileSync(file, 'utf8')) as { keys: Jwk[] }).keys
}

const b64u = (value: unknown): string => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')

export function decodeSegment (segment: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(segment, 'base64url').toString('utf8')) as Record<string, unknown>
}

function digestFor (alg: string): string | null {
  return alg === 'EdDSA' ? null : 'sha256'
}

/**
 * Sign `header`.`payload` with a private JWK using node:crypto. `signAs` picks the
 * signature algorithm independently of header.alg, to forge mismatches.
 */
export function signCompact (header: Record<string, unknown>, payload: Record<string, unknown>, privateJwk: Jwk, signAs = String(header.alg)): string {
  const input = `${b64u(header)}.${b64u(payload)}`
  const key = crypto.createPrivateKey({ key: privateJwk as crypto.JsonWebKey, format: 'jwk' })
  const sig = crypto.sign(digestFor(signAs), Buffer.from(input), signAs === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' } : key)
  return `${input}.${sig.toString('base64url')}`
}

/** An HS256 token, for the "public key used as an HMAC secret" confusion attack. */
export function signHmac (header: Record<string, unknown>, payload: Record<string, unknown>, secret: Buffer): string {
  const input = `${b64u(header)}.${b64u(payload)}`
  return `${input}.${crypto.createHmac('sha256', secret).update(input).digest('base64url')}`
}

export function unsigned (header: Record<string, unknown>, payload: Record<string, unknown>, signature = ''): string {
  return `${b64u(header)}.${b64u(payload)}.${signature}`
}

/**
 * Verify a compact JWS against a published JWKS with node:crypto only. Returns the
 * decoded header and payload; throws if the kid is unknown, the alg differs from the
 * key's, or the signature does not verify.
 */
export function verifyIndependently (token: string, jwks: { readonly keys: readonly object[] }): { header: Record<string, unknown>, payload: Record<string, unknown> } {
  const parts = token.split('.')
  if (parts.length !== 3) throw new Error('not three segments')
  const [h, p, s] = parts as [string, string, string]
  const header = decodeSegment(h)
  const jwk = (jwks.keys as Jwk[]).find(k => k.kid === header.kid)
  if (jwk === undefined) throw new Error(`kid ${String(header.kid)} not published`)
  if (jwk.alg !== header.alg) throw new Error('alg differs from the key')
  const key = crypto.createPublicKey({ key: jwk as crypto.JsonWebKey, format: 'jwk' })
  const alg = String(header.alg)
  const ok = crypto.verify(digestFor(alg), Buffer.from(`${h}.${p}`), alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' } : key, Buffer.from(s, 'base64url'))
  if (!ok) throw new Error('signature does not verify')
  return { header, payload: decodeSegment(p) }
}

/** Members that must never be published (RFC 7517 §9.1 / RFC 7518 §6.3.2, §6.2.2, §6.4). */
export const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k', 'oth'] as const
