/**
 * The config files the gateway keeps in force while it runs: USERS_FILE, CLIENTS_FILE and
 * SIGNING_KEYS_FILE, each loaded at boot through a FileReloader (ops/reloader.ts, so that a
 * change between boot and the first watch is not missed) and then
 * reloaded when it changes on disk and on SIGHUP, in every process (each pool worker
 * watches for itself). The directories and the key set keep their identity (`replace`),
 * so nothing that holds them needs rewiring. Other files (ROUTES_FILE) join with `add`.
 *
 * A users-file change that takes access away from someone (removed, disabled, new
 * password, a scope cut) is handed to `onLostAccess` to end their sessions.
 */
import type { Clock } from '#shared/clock.js'
import { ClientDirectory, parseClientsText } from '../identity/clients-file.js'
import { UserDirectory } from '../identity/user-directory.js'
import { parseUsersText } from '../identity/users-file.js'
import { type KeyLoadLog, SigningKeys, loadSigningKeys, parseSigningKeys } from '../keys/signing-keys.js'
import { FileReloader, type ReloadCounter, type ReloadOutcome, type ReloaderLog } from './reloader.js'

export interface ConfigFilesOptions {
  readonly usersFile: string | undefined
  readonly clientsFile: string | undefined
  readonly signingKeysFile: string | undefined
  /** Without USERS_FILE: a generated demo user (`latchkey dev`), else no users at all. */
  readonly demoUser: boolean
  readonly log: ReloaderLog & KeyLoadLog
  readonly counter: ReloadCounter
  readonly clock: Clock
  /** Parts given by the caller (tests) are used as they are and not reloaded. */
  readonly given?: { readonly users?: UserDirectory, readonly clients?: ClientDirectory, readonly keys?: SigningKeys }
  /** Users whose access a reload took away; called once per change, after the new file is in force. */
  readonly onLostAccess: (userIds: readonly string[]) => Promise<void>
}

/** Anything `add` accepts: a reloader of any file. */
export interface Reloadable {
  readonly name: string
  start (): Promise<void>
  reload (): Promise<ReloadOutcome>
  close (): void
}

export interface ConfigFiles {
  readonly users: UserDirectory
  readonly clients: ClientDirectory
  readonly keys: SigningKeys
  /** The demo user's generated password when there is no USERS_FILE. */
  readonly demoPassword: string | undefined
  /** Keep another file in force the same way (started by `watch`, re-read by `reload`). */
  add (reloader: Reloadable): void
  /** Start watching every file. */
  watch (): Promise<void>
  /** SIGHUP: re-read every file now; resolves when each is in force or refused, with each file's outcome. */
  reload (): Promise<Record<string, ReloadOutcome>>
  close (): void
}

export async function loadConfigFiles (opts: ConfigFilesOptions): Promise<ConfigFiles> {
  const { log, counter, given = {} } = opts
  const reloaders: Reloadable[] = []

  let users = given.users
  let demoPassword: string | undefined
  if (users === undefined && opts.usersFile !== undefined) {
    // `apply` runs only after the watch starts, by when `directory` is set.
    const reloader = new FileReloader({
      path: opts.usersFile,
      name: 'USERS_FILE',
      parse: parseUsersText,
      apply: async (next) => {
        const { lostAccess } = await directory.replace(next)
        if (lostAccess.length > 0) await opts.onLostAccess(lostAccess)
      },
      log,
      counter
    })
    const directory = await UserDirectory.fromUsers(await reloader.load())
    users = directory
    reloaders.push(reloader)
  } else if (users === undefined && opts.demoUser) {
    const loaded = await UserDirectory.load(undefined)
    users = loaded.directory
    demoPassword = loaded.demoPassword
  } else if (users === undefined) {
    // The generated demo user is for `latchkey dev`: a gateway that made one up would refuse
    // every login with nothing to say why. Without USERS_FILE it serves OAuth clients and
    // upstream sign-in only, and says so.
    log.warn({}, 'no USERS_FILE: no user can sign in with a password (every /auth/login answers 401); add users with `latchkey users add <name> --file users.json` and set USERS_FILE=users.json (the generated demo user exists only in `latchkey dev`)')
    users = await UserDirectory.fromUsers([])
  }

  let clients = given.clients
  if (clients === undefined && opts.clientsFile !== undefined) {
    const reloader = new FileReloader({
      path: opts.clientsFile,
      name: 'CLIENTS_FILE',
      parse: parseClientsText,
      apply: (next) => { directory.replace(next) },
      log,
      counter
    })
    const directory = ClientDirectory.fromClients(await reloader.load(), opts.clock)
    clients = directory
    reloaders.push(reloader)
  } else if (clients === undefined) {
    clients = await ClientDirectory.load(undefined, opts.clock)
  }

  let keys = given.keys
  if (keys === undefined && opts.signingKeysFile !== undefined) {
    const reloader = new FileReloader({
      path: opts.signingKeysFile,
      name: 'SIGNING_KEYS_FILE',
      parse: parseSigningKeys,
      apply: (next) => { set.replace(next) },
      log,
      counter
    })
    const set = new SigningKeys(await reloader.load())
    keys = set
    reloaders.push(reloader)
  } else if (keys === undefined) {
    keys = await loadSigningKeys(undefined, log)
  }

  let closed = false
  return {
    users,
    clients,
    keys,
    demoPassword,
    add: (reloader) => { reloaders.push(reloader) },
    watch: async () => { if (!closed) await Promise.all(reloaders.map(async r => { await r.start() })) },
    reload: async () => Object.fromEntries(await Promise.all(reloaders.map(async r => [r.name, await r.reload()] as const))),
    close: () => {
      closed = true
      for (const r of reloaders) r.close()
    }
  }
}
