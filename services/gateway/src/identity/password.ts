/**
 * Password hashing: argon2id (RFC 9106) via @node-rs/argon2, stored as a PHC string
 * (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), so each hash carries its own
 * parameters and raising the policy later does not invalidate existing hashes.
 *
 * Parameters are the OWASP Password Storage Cheat Sheet minimum for argon2id
 * ("m=19456 (19 MiB), t=2, p=1"):
 * https://cheatsheetseries.owasp.org/cheatsheets/Password_Storage_Cheat_Sheet.html#argon2id
 * One verify costs ~15-20 ms of one core here; logins are rate-limited, so that is the
 * price of making an offline guess equally expensive. At most ARGON2_MAX_CONCURRENT run
 * at once (see there).
 */
import { availableParallelism } from 'node:os'
import { hash, parseOptions, verify } from '@node-rs/argon2'
import type { Algorithm } from '@node-rs/argon2'
import { Slots } from './slots.js'

/** Memory per hash, in KiB (19 MiB). */
export const ARGON2_MEMORY_KIB = 19456
/** Passes over memory. */
export const ARGON2_TIME_COST = 2
/** Lanes (threads) per hash. */
export const ARGON2_PARALLELISM = 1
/** Raw digest length, in bytes (256 bits). */
export const ARGON2_OUTPUT_BYTES = 32
/** libuv's thread pool, where @node-rs/argon2 computes: Node's default size (UV_THREADPOOL_SIZE unset). */
const LIBUV_POOL_THREADS = 4
/**
 * Hashes computed at once: one per core, and never every pool thread. Each hash is
 * single-threaded (p=1) and CPU-bound, so more would not finish sooner; they would only
 * hold 19 MiB each and leave no pool thread for DNS lookups and file reads. The rest wait
 * their turn.
 */
export const ARGON2_MAX_CONCURRENT = Math.max(1, Math.min(availableParallelism(), LIBUV_POOL_THREADS - 1))

const hashing = new Slots(ARGON2_MAX_CONCURRENT)

/** Hashes being computed now and waiting (for metrics and tests). */
export function argon2Load (): { readonly active: number, readonly queued: number } {
  return { active: hashing.active, queued: hashing.queued }
}

/**
 * `Algorithm` is an ambient const enum, which isolatedModules cannot inline, and the
 * package exports no runtime object for it; 2 is its documented value for argon2id.
 */
const ARGON2ID = 2 as Algorithm

/**
 * Bounds on parameters accepted from a stored hash: a hand-edited file must not be able
 * to make one login allocate gigabytes or spin for minutes.
 */
const MAX_MEMORY_KIB = 1024 * 1024
const MAX_TIME_COST = 64
const MAX_PARALLELISM = 16

export interface Argon2Params {
  readonly memoryKib: number
  readonly timeCost: number
  readonly parallelism: number
  readonly outputBytes: number
}

export const ARGON2_POLICY: Argon2Params = Object.freeze({
  memoryKib: ARGON2_MEMORY_KIB,
  timeCost: ARGON2_TIME_COST,
  parallelism: ARGON2_PARALLELISM,
  outputBytes: ARGON2_OUTPUT_BYTES
})

/** Hash with the current policy (or explicit parameters, used for the timing dummy). */
export async function hashPassword (password: string, params: Argon2Params = ARGON2_POLICY): Promise<string> {
  return await hashing.run(async () => await hash(password, {
    algorithm: ARGON2ID,
    memoryCost: params.memoryKib,
    timeCost: params.timeCost,
    parallelism: params.parallelism,
    outputLen: params.outputBytes
  }))
}

/** True only for a well-formed argon2id hash of `password`; a malformed hash is false, never a throw. */
export async function verifyPassword (phc: string, password: string): Promise<boolean> {
  if (typeof phc !== 'string' || typeof password !== 'string' || argon2idParams(phc) === null) return false
  try {
    return await hashing.run(async () => await verify(phc, password))
  } catch {
    return false
  }
}

/** The parameters of a stored argon2id PHC string, or null if it is not one (or is out of bounds). */
export function argon2idParams (phc: string): Argon2Params | null {
  if (typeof phc !== 'string' || !phc.startsWith('$argon2id$')) return null
  let parsed
  try {
    parsed = parseOptions(phc)
  } catch {
    return null
  }
  if (parsed.algorithm !== ARGON2ID) return null
  if (parsed.memoryCost > MAX_MEMORY_KIB || parsed.timeCost > MAX_TIME_COST || parsed.parallelism > MAX_PARALLELISM) return null
  return { memoryKib: parsed.memoryCost, timeCost: parsed.timeCost, parallelism: parsed.parallelism, outputBytes: parsed.outputLen }
}
