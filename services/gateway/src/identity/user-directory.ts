/**
 * The users a login can authenticate as: the users file, or — when no `USERS_FILE` is
 * configured — a single demo user whose password is drawn at start (docs/contract.md "Running":
 * never a fixed default password) and handed back for the caller to print.
 *
 * `authenticate` spends one argon2id verify on every call, whatever the input: an
 * unknown username is checked against a dummy hash made at load with the parameters the
 * real hashes use, so "no such user" and "wrong password" cost the same time (same body,
 * same timing) and timing does not enumerate usernames. A disabled user is "no such user".
 *
 * A reloaded users file is put in force with `replace()`: the directory keeps its identity,
 * so the routes holding it see the new users on their next call.
 */
import { randomBytes } from 'node:crypto'
import { type Argon2Params, ARGON2_POLICY, argon2idParams, hashPassword, verifyPassword } from './password.js'
import { MAX_PASSWORD_LENGTH, type StoredUser, newUserId, readUsersFile } from './users-file.js'

export interface User {
  readonly id: string
  /** Compared exactly at login: case-sensitive, no Unicode normalisation. */
  readonly username: string
  /** Space-separated scope tokens (RFC 6749 §3.3), possibly empty. */
  readonly scope: string
}

export const DEMO_USERNAME = 'demo'
export const DEMO_SCOPE = 'notes:read notes:write'
/** 96 random bits, 16 base64url characters: typeable, and far beyond online guessing. */
const DEMO_PASSWORD_BYTES = 12
/**
 * Inputs beyond these are refused before they reach a Map or argon2 (which would
 * pre-hash a 100 KB string); the dummy verify still runs so refusal costs the same.
 */
export const MAX_USERNAME_INPUT = 256
export { MAX_PASSWORD_LENGTH }

export interface LoadedUserDirectory {
  readonly directory: UserDirectory
  /** Set only in demo mode: the generated password of user `demo`, for the caller to print once. */
  readonly demoPassword?: string
}

/** The parameter set most of the stored hashes use (the policy when there are none). */
function prevailingParams (users: readonly StoredUser[]): Argon2Params {
  const counts = new Map<string, { params: Argon2Params, n: number }>()
  for (const user of users) {
    const params = argon2idParams(user.password)
    if (params === null) continue
    const key = `${params.memoryKib},${params.timeCost},${params.parallelism},${params.outputBytes}`
    const seen = counts.get(key) ?? { params, n: 0 }
    seen.n++
    counts.set(key, seen)
  }
  let best: { params: Argon2Params, n: number } | undefined
  for (const c of counts.values()) if (best === undefined || c.n > best.n) best = c
  return best?.params ?? ARGON2_POLICY
}

/** What a reload changed for access: the users whose sessions must end. */
export interface UserChange {
  /** Ids of users who could sign in before and now are removed, disabled, have a new password or lost a scope. */
  readonly lostAccess: readonly string[]
}

interface DirectoryState {
  /** Enabled users only: a disabled user does not exist for the gateway. */
  readonly byName: ReadonlyMap<string, StoredUser>
  readonly byId: ReadonlyMap<string, User>
  readonly dummyHash: string
}

async function stateOf (users: readonly StoredUser[]): Promise<DirectoryState> {
  const enabled = users.filter(u => u.disabled !== true)
  const dummyHash = await hashPassword(randomBytes(32).toString('base64url'), prevailingParams(users))
  return {
    byName: new Map(enabled.map(u => [u.username, u])),
    byId: new Map(enabled.map(u => [u.id, Object.freeze({ id: u.id, username: u.username, scope: u.scope })])),
    dummyHash
  }
}

/** True when `before`'s scope has a token `after`'s lacks. */
function scopeCut (before: string, after: string): boolean {
  const kept = new Set(after.split(' '))
  return before.split(' ').some(token => token !== '' && !kept.has(token))
}

export class UserDirectory {
  #state: DirectoryState

  private constructor (state: DirectoryState) {
    this.#state = state
  }

  /** From the users file, or the demo user when `file` is undefined. Errors: ConfigError('USERS_FILE', ...). */
  static async load (file: string | undefined): Promise<LoadedUserDirectory> {
    if (file !== undefined) return { directory: await UserDirectory.fromUsers(await readUsersFile(file)) }
    const demoPassword = randomBytes(DEMO_PASSWORD_BYTES).toString('base64url')
    const demo: StoredUser = { id: newUserId(), username: DEMO_USERNAME, password: await hashPassword(demoPassword), scope: DEMO_SCOPE }
    return { directory: await UserDirectory.fromUsers([demo]), demoPassword }
  }

  /** From already-validated records (tests, or a caller that loaded them itself). */
  static async fromUsers (users: readonly StoredUser[]): Promise<UserDirectory> {
    return new UserDirectory(await stateOf(users))
  }

  /**
   * Put a reloaded users file in force (one assignment: a login sees the old set or the new
   * one, never a mix) and say whose access it took away, for the caller to end their sessions.
   */
  async replace (users: readonly StoredUser[]): Promise<UserChange> {
    const next = await stateOf(users)
    const lostAccess: string[] = []
    for (const [name, before] of this.#state.byName) {
      const after = next.byName.get(name)
      if (after === undefined || after.id !== before.id || after.password !== before.password || scopeCut(before.scope, after.scope)) lostAccess.push(before.id)
    }
    this.#state = next
    return { lostAccess }
  }

  get size (): number {
    return this.#state.byName.size
  }

  /** The user named `username` (case-sensitive, as at login), if present and enabled. */
  getByUsername (username: string): User | undefined {
    const state = this.#state
    const stored = state.byName.get(username)
    return stored === undefined ? undefined : state.byId.get(stored.id)
  }

  /** The user with this id (token `sub`), if still present. */
  getById (id: string): User | undefined {
    return this.#state.byId.get(id)
  }

  /** Every scope some user holds (RFC 8414 `scopes_supported`). */
  scopes (): string[] {
    return [...new Set([...this.#state.byId.values()].flatMap(u => u.scope.split(' ').filter(Boolean)))]
  }

  /**
   * The user if `username` exists and `password` is theirs, else null. Never throws on
   * input; every call costs one argon2id verify.
   */
  async authenticate (username: unknown, password: unknown): Promise<User | null> {
    const name = typeof username === 'string' && username.length <= MAX_USERNAME_INPUT ? username : undefined
    const pw = typeof password === 'string' && password.length <= MAX_PASSWORD_LENGTH ? password : undefined
    const state = this.#state
    const stored = name === undefined ? undefined : state.byName.get(name)
    const matches = await verifyPassword(stored?.password ?? state.dummyHash, pw ?? '')
    if (!matches || stored === undefined || pw === undefined) return null
    return state.byId.get(stored.id) ?? null
  }
}
