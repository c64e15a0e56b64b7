/**
 * `latchkey users add|list|remove|disable|enable|passwd|set-scope ... [--file FILE]`
 *
 * The password never comes from argv (it would sit in shell history and `ps`): it is
 * read from stdin when stdin is not a terminal (`printf %s "$PW" | latchkey users add
 * alice`), else prompted twice on the terminal with echo off. Passwords under 8
 * characters are refused (NIST SP 800-63B §5.1.1.1).
 *
 * The commands edit the file only. A running gateway reloads it within a second and
 * ends every session of a user who was removed or disabled, got a new password or lost
 * a scope, at every replica (ops/config-files.ts): the CLI needs no Redis access.
 *
 * Exit codes: 0 done, 1 refused (unknown or duplicate user, bad password, unreadable
 * file), 2 usage, 130 cancelled at the prompt.
 */
import { parseCommandArgs } from './args.js'
import { ConfigError } from '#shared/errors.js'
import {
  type UserSummary, addUser, listUsers, passwordProblem, removeUser, setUserDisabled, setUserPassword, setUserScope
} from '../identity/users-file.js'
import type { CliIo } from './io.js'

const USAGE = `usage: latchkey users <command> [--file FILE]   (file default: $USERS_FILE)
  add <name> [--scope "a b"]     add a user (password from stdin, or prompted)
  list                           every user: name, id, enabled|disabled, scope
  remove <name>                  delete the user
  disable <name> | enable <name> keep the user but refuse (or allow again) sign-in and refresh
  passwd <name>                  set a new password (from stdin, or prompted)
  set-scope <name> --scope "a b" replace the user's scopes
A running gateway reloads the file and ends the sessions of a user removed, disabled,
given a new password or a narrower scope.`
/** Subcommands that name one user, and whether they take --scope. */
const WITH_NAME: Readonly<Record<string, boolean>> = { add: true, remove: false, disable: false, enable: false, passwd: false, 'set-scope': true }
const ENDS_SESSIONS = 'a running gateway ends their sessions when it reloads the file'
/** Enough for any password we accept, small enough that `cat /dev/zero |` fails fast. */
const MAX_STDIN_BYTES = 64 * 1024

type TtyStdin = CliIo['stdin'] & { setRawMode?: (mode: boolean) => unknown }

class Cancelled extends Error {}

/** All of stdin, with one trailing newline (LF or CRLF) removed. */
async function readAllStdin (stdin: CliIo['stdin']): Promise<string> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of stdin) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk
    size += buf.length
    if (size > MAX_STDIN_BYTES) throw new ConfigError('password', `stdin is longer than ${MAX_STDIN_BYTES} bytes`)
    chunks.push(buf)
  }
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '')
}

/**
 * Prompt for each of `prompts` on the terminal with echo off (raw mode), returning the
 * lines typed. Raw mode means we do the line editing: Enter ends a line, Backspace and
 * Ctrl-U erase, Ctrl-C (or Ctrl-D on an empty line) cancels, escape sequences (arrow
 * keys) are dropped. Text pasted past an Enter carries over to the next prompt.
 */
async function promptHidden (io: CliIo, prompts: readonly string[]): Promise<string[]> {
  const stdin = io.stdin as TtyStdin
  const raw = typeof stdin.setRawMode === 'function'
  const lines: string[] = []
  let current = ''
  io.stderr.write(prompts[0] ?? '')
  if (raw) stdin.setRawMode?.(true)
  stdin.setEncoding('utf8')
  try {
    await new Promise<void>((resolve, reject) => {
      const finish = (err?: Error): void => {
        stdin.removeListener('data', onData)
        stdin.removeListener('end', onEnd)
        stdin.removeListener('error', finish)
        stdin.pause()
        if (err === undefined) resolve()
        else reject(err)
      }
      const onEnd = (): void => finish(new Cancelled())
      const onData = (chunk: string | Buffer): void => {
        const text = String(chunk)
        for (let i = 0; i < text.length; i++) {
          const ch = text[i] as string
          if (ch === '\r' || ch === '\n') {
            if (ch === '\r' && text[i + 1] === '\n') i++
            lines.push(current)
            current = ''
            io.stderr.write('\n')
            if (lines.length === prompts.length) return finish()
            io.stderr.write(prompts[lines.length] ?? '')
          } else if (ch === '\u0003' || (ch === '\u0004' && current === '')) {
            io.stderr.write('\n')
            return finish(new Cancelled())
          } else if (ch === '\u007f' || ch === '\b') {
            current = [...current].slice(0, -1).join('')
          } else if (ch === '\u0015') {
            current = ''
          } else if (ch === '\u001b') {
            break
          } else if (ch >= ' ') {
            current += ch
          }
        }
      }
      stdin.on('data', onData)
      stdin.once('end', onEnd)
      stdin.once('error', finish)
      stdin.resume()
    })
  } finally {
    if (raw) stdin.setRawMode?.(false)
  }
  return lines
}

async function readPassword (io: CliIo, username: string): Promise<string> {
  if (io.stdin.isTTY !== true) return await readAllStdin(io.stdin)
  const [first, second] = await promptHidden(io, [`Password for ${username}: `, 'Repeat password: '])
  if (first !== second) throw new ConfigError('password', 'the two entries do not match')
  return first ?? ''
}

export async function runUsersCommand (argv: string[], io: CliIo, env: Readonly<Record<string, string | undefined>>): Promise<number> {
  let parsed
  try {
    parsed = parseCommandArgs(argv, { scope: { type: 'string' }, file: { type: 'string' }, help: { type: 'boolean', short: 'h' } })
  } catch (err) {
    io.stderr.write(`latchkey users: ${(err as Error).message.split('\n')[0]}\n${USAGE}\n`)
    return 2
  }
  const { values, positionals } = parsed
  if (values.help === true) {
    io.stdout.write(`${USAGE}\n`)
    return 0
  }
  const [sub, username, ...extra] = positionals
  const usage = (): number => { io.stderr.write(`${USAGE}\n`); return 2 }
  if (sub === 'list') {
    if (username !== undefined || values.scope !== undefined) return usage()
  } else if (sub === undefined || !(sub in WITH_NAME) || username === undefined || extra.length > 0) {
    return usage()
  } else if (values.scope !== undefined && WITH_NAME[sub] !== true) {
    return usage()
  } else if (sub === 'set-scope' && values.scope === undefined) {
    io.stderr.write('latchkey users: set-scope needs --scope "a b" (--scope "" for none)\n')
    return 2
  }
  const file = values.file ?? env.USERS_FILE
  if (file === undefined || file === '') {
    io.stderr.write('latchkey users: no users file: pass --file FILE or set USERS_FILE\n')
    return 2
  }
  const name = username as string
  const say = (line: string): void => { io.stdout.write(`${line}\n`) }

  try {
    switch (sub) {
      case 'list': {
        for (const u of await listUsers(file)) say([u.username, u.id, u.disabled === true ? 'disabled' : 'enabled', u.scope].join('\t'))
        return 0
      }
      case 'add': {
        const password = await checkedPassword(io, name)
        const user = await addUser(file, { username: name, password, scope: values.scope ?? '' })
        say(`added user ${JSON.stringify(user.username)} (id ${user.id}, scope ${showScope(user)}) to ${file}`)
        return 0
      }
      case 'passwd': {
        const password = await checkedPassword(io, name)
        const user = await setUserPassword(file, name, password)
        say(`new password for ${JSON.stringify(user.username)} in ${file}; ${ENDS_SESSIONS}`)
        return 0
      }
      case 'remove': {
        const user = await removeUser(file, name)
        say(`removed user ${JSON.stringify(user.username)} (id ${user.id}) from ${file}; ${ENDS_SESSIONS}`)
        return 0
      }
      case 'disable':
      case 'enable': {
        const user = await setUserDisabled(file, name, sub === 'disable')
        say(sub === 'disable' ? `disabled user ${JSON.stringify(user.username)} in ${file}; ${ENDS_SESSIONS}` : `enabled user ${JSON.stringify(user.username)} in ${file}`)
        return 0
      }
      default: {
        const user = await setUserScope(file, name, values.scope ?? '')
        say(`scope of ${JSON.stringify(user.username)} is now ${showScope(user)} in ${file}; if a scope was taken away, ${ENDS_SESSIONS}`)
        return 0
      }
    }
  } catch (err) {
    if (err instanceof Cancelled) {
      io.stderr.write('latchkey users: cancelled\n')
      return 130
    }
    if (err instanceof ConfigError) {
      io.stderr.write(`latchkey users: ${err.message}\n`)
      return 1
    }
    throw err
  }
}

function showScope (user: UserSummary): string {
  return user.scope === '' ? '(none)' : `"${user.scope}"`
}

/** The new password, refused before any hashing or file access when it breaks the rule. */
async function checkedPassword (io: CliIo, username: string): Promise<string> {
  const password = await readPassword(io, username)
  const problem = passwordProblem(password)
  if (problem !== null) throw new ConfigError('password', problem)
  return password
}
