/**
 * scripts/rotate-signing-key.sh end to end against temp files, with the real CLI (from
 * source) and a recording `--apply` hook and clock: the steps happen in order, with the
 * right waits between them, and at every step the gateway loads the file and its tokens
 * verify wherever a replica or a cached JWKS of the neighbouring step may see them.
 */
import { execFile } from 'node:child_process'
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose'
import { buildGatewayApp } from '#gateway/app.js'
import { ACCESS_TTL_S, loadGatewayConfig } from '#gateway/config.js'
import { DEMO_USERNAME } from '#gateway/identity/user-directory.js'
import { JWKS_MAX_AGE_S, JWKS_PATH } from '#gateway/keys/jwks-route.js'
import { generatePrivateJwk, loadSigningKeys } from '#gateway/keys/signing-keys.js'
import { CLOCK_TOLERANCE_S } from '#shared/access-token-verifier.js'
import { ROOT, tempDir } from './helpers.js'
import { cliCommand } from '../helpers/processes.js'

const SCRIPT = join(ROOT, 'scripts/rotate-signing-key.sh')
const silent = { warn: () => {} }

const CLI = cliCommand()

interface Run { code: number, stdout: string, stderr: string }

interface Sandbox {
  dir: string
  file: string
  events: string
  /** Seconds each wait asked for, and each --apply, in order. */
  log (): string[]
  run (args: string[]): Promise<Run>
}

async function sandbox (t: Parameters<typeof tempDir>[0]): Promise<Sandbox> {
  const dir = tempDir(t)
  const file = join(dir, 'keys.json')
  writeFileSync(file, JSON.stringify({ keys: [await generatePrivateJwk('EdDSA')] }), { mode: 0o600 })
  const events = join(dir, 'events')
  writeFileSync(events, '')
  // Records the wait instead of sleeping through it.
  const sleep = join(dir, 'sleep.sh')
  writeFileSync(sleep, 'echo "sleep $1" >> "$EVENTS"\n')
  return {
    dir,
    file,
    events,
    log: () => readFileSync(events, 'utf8').split('\n').filter(l => l !== ''),
    run: (args) => new Promise((resolve) => {
      execFile('bash', [SCRIPT, ...args], {
        cwd: ROOT,
        env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? dir, LATCHKEY: CLI, LATCHKEY_SLEEP: `sh ${sleep}`, EVENTS: events, SNAPS: dir },
        timeout: 90_000
      }, (err, stdout, stderr) => {
        resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr })
      })
    })
  }
}

/** Copies the file as it is at each step and logs the step: what a real rollout would ship. */
const RECORD = 'cp "$LATCHKEY_KEYS_FILE" "$SNAPS/$LATCHKEY_ROTATION_STEP.json" && echo "apply $LATCHKEY_ROTATION_STEP" >> "$EVENTS"'

const kids = async (file: string): Promise<string[]> => (await loadSigningKeys(file, silent)).publicJwks.keys.map(k => k.kid)

/** A gateway started on `keysFile`: its JWKS and a freshly issued access token. */
async function gatewayState (t: Parameters<typeof tempDir>[0], keysFile: string): Promise<{ jwks: JSONWebKeySet, token: string, signingKid: string }> {
  const config = loadGatewayConfig({ SIGNING_KEYS_FILE: keysFile, LOG_LEVEL: 'silent' }, { devMode: true })
  const app = await buildGatewayApp(config)
  t.teardown(() => app.close())
  const jwks = (await app.inject({ method: 'GET', url: JWKS_PATH })).json() as JSONWebKeySet
  const login = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: DEMO_USERNAME, password: app.latchkey.demoPassword } })
  if (login.statusCode !== 200) throw new Error(`login: ${login.statusCode} ${login.body}`)
  return { jwks, token: (login.json() as { access_token: string }).access_token, signingKid: app.latchkey.deps.keys.signing.kid }
}

async function verifies (token: string, jwks: JSONWebKeySet): Promise<boolean> {
  try {
    await jwtVerify(token, createLocalJWKSet(jwks))
    return true
  } catch {
    return false
  }
}

t.test('a full rotation: publish, wait, promote, wait, retire; no token ever fails to verify', async t => {
  const box = await sandbox(t)
  const initial = join(box.dir, 'initial.json')
  copyFileSync(box.file, initial)
  const [oldKid] = await kids(box.file)

  const r = await box.run(['--file', box.file, '--apply', RECORD])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stderr.replace(/^(appended|promoted|retired) .*\n/gm, ''), '', 'nothing on stderr but the CLI\'s own lines')

  // The waits: a JWKS cache lifetime after publishing, an access-token lifetime (plus the
  // verifiers' clock tolerance) after promoting, each counted from a finished rollout.
  const log = box.log()
  t.same(log, ['apply publish', 'sleep 360', 'apply promote', 'sleep 365', 'apply retire'])
  t.ok(360 > JWKS_MAX_AGE_S, `publish wait 360 s > JWKS max-age ${JWKS_MAX_AGE_S} s`)
  t.ok(365 > ACCESS_TTL_S + CLOCK_TOLERANCE_S, `retire wait 365 s > ACCESS_TOKEN_TTL ${ACCESS_TTL_S} s + tolerance ${CLOCK_TOLERANCE_S} s`)

  // The file at each step, as the gateway loads it.
  const published = await kids(join(box.dir, 'publish.json'))
  const newKid = published[1] as string
  t.same(published, [oldKid, newKid], 'publish: the new key is appended; the old one still signs')
  t.not(newKid, oldKid)
  t.same(await kids(join(box.dir, 'promote.json')), [newKid, oldKid], 'promote: the new key signs; the old one is still published')
  t.same(await kids(join(box.dir, 'retire.json')), [newKid], 'retire: only the new key is left')
  t.same(await kids(box.file), [newKid])
  t.ok(r.stdout.includes(`retire: ${oldKid ?? ''} is gone; rotation complete, ${newKid} signs`), 'the summary names both keys')

  // Real gateways on each state: during each rollout, replicas (and cached JWKS) of two
  // neighbouring states coexist; every token either state issues verifies with both.
  const states = [
    await gatewayState(t, initial),
    await gatewayState(t, join(box.dir, 'publish.json')),
    await gatewayState(t, join(box.dir, 'promote.json')),
    await gatewayState(t, join(box.dir, 'retire.json'))
  ]
  t.same(states.map(s => s.signingKid), [oldKid, oldKid, newKid, newKid])
  for (let i = 0; i + 1 < states.length; i++) {
    const [a, b] = [states[i], states[i + 1]] as [typeof states[0], typeof states[0]]
    for (const [from, to, label] of [[a, b, `${i}→${i + 1}`], [b, a, `${i + 1}→${i}`]] as const) {
      t.ok(await verifies(from.token, to.jwks), `a token of state ${label.split('→')[0] ?? ''} verifies with the JWKS of state ${label.split('→')[1] ?? ''}`)
    }
  }
  // And why the waits exist: skipping one breaks verification.
  t.notOk(await verifies(states[2]?.token ?? '', states[0]?.jwks ?? { keys: [] }), 'promoting before caches know the key fails verifiers still on the old JWKS')
  t.notOk(await verifies(states[1]?.token ?? '', states[3]?.jwks ?? { keys: [] }), 'retiring before old tokens expire fails them')
})

t.test('one step at a time, without --apply: the file carries the state', async t => {
  const box = await sandbox(t)
  const [oldKid] = await kids(box.file)

  const publish = await box.run(['--file', box.file, '--step', 'publish', '--alg', 'RS256'])
  t.equal(publish.code, 0, publish.stderr)
  const [, newKid] = await kids(box.file)
  t.match(publish.stdout, /publish: done in .*keys\.json; gateways reading it reload it within a second/)
  t.ok(publish.stdout.includes(`next, after 360 s: --step promote --kid ${newKid ?? ''}\n`), 'says what to run next')
  t.equal((await loadSigningKeys(box.file, silent)).publicJwks.keys[1]?.alg, 'RS256', '--alg picks the new key\'s algorithm')

  const promote = await box.run(['--file', box.file, '--step', 'promote'])
  t.equal(promote.code, 0, promote.stderr)
  t.same(await kids(box.file), [newKid, oldKid], 'promotes the last key by default')

  const retire = await box.run(['--file', box.file, '--step', 'retire'])
  t.equal(retire.code, 0, retire.stderr)
  t.same(await kids(box.file), [newKid], 'retires every key but the signing one by default')
  t.same(box.log(), [], 'single steps never wait')

  const nothing = await box.run(['--file', box.file, '--step', 'retire'])
  t.equal(nothing.code, 1)
  t.match(nothing.stderr, /retire: nothing to retire: .* holds only its signing key/)
})

t.test('without --alg the new key has the signing key\'s algorithm: an ES256 file stays ES256', async t => {
  const box = await sandbox(t)
  writeFileSync(box.file, JSON.stringify({ keys: [await generatePrivateJwk('ES256')] }), { mode: 0o600 })
  const r = await box.run(['--file', box.file, '--step', 'publish'])
  t.equal(r.code, 0, r.stderr)
  t.same((await loadSigningKeys(box.file, silent)).publicJwks.keys.map(k => k.alg), ['ES256', 'ES256'])
  const all = await box.run(['--file', box.file])
  t.equal(all.code, 0, `--step all needs no --apply when the gateways read FILE: ${all.stderr}`)
  t.same([...new Set((await loadSigningKeys(box.file, silent)).publicJwks.keys.map(k => k.alg))], ['ES256'])
})

t.test('--kid picks the key for promote and retire, even one starting with "-"', async t => {
  const box = await sandbox(t)
  const [first] = await kids(box.file)
  const raw = JSON.parse(readFileSync(box.file, 'utf8')) as { keys: Array<Record<string, unknown>> }
  raw.keys.push({ ...(await generatePrivateJwk('EdDSA')), kid: '-second' }, { ...(await generatePrivateJwk('EdDSA')), kid: 'third' })
  writeFileSync(box.file, JSON.stringify(raw))
  const promote = await box.run(['--file', box.file, '--step', 'promote', '--kid', '-second'])
  t.equal(promote.code, 0, promote.stderr)
  t.same(await kids(box.file), ['-second', first, 'third'])
  const retire = await box.run(['--file', box.file, '--step', 'retire', '--kid', 'third'])
  t.equal(retire.code, 0, retire.stderr)
  t.same(await kids(box.file), ['-second', first], 'only that key')
})

t.test('a failed rollout stops the rotation and says where to resume', async t => {
  const box = await sandbox(t)
  const [oldKid] = await kids(box.file)
  const failing = `${RECORD} && test "$LATCHKEY_ROTATION_STEP" != promote`
  const r = await box.run(['--file', box.file, '--apply', failing])
  t.equal(r.code, 1)
  t.match(r.stderr, /promote: --apply failed \(exit 1\)\. .*keys\.json already holds the promote step: put it in place, then continue with --step retire\n$/)
  t.same(box.log(), ['apply publish', 'sleep 360', 'apply promote'], 'no wait and no retire after the failure')
  const state = await kids(box.file)
  t.equal(state.length, 2)
  t.equal(state[1], oldKid, 'the old key is still published')
})

t.test('usage errors exit 2 before touching the file', async t => {
  const box = await sandbox(t)
  const before = readFileSync(box.file, 'utf8')
  const cases: Array<[string[], RegExp]> = [
    [[], /--file FILE is required/],
    [['--file', box.file, '--step', 'rotate'], /--step: expected all, publish, promote or retire, got 'rotate'/],
    [['--file', box.file, '--apply', 'true', '--publish-wait', '5m'], /--publish-wait: expected seconds, got '5m'/],
    [['--file', box.file, '--apply', 'true', '--retire-wait', '-1'], /--retire-wait: expected seconds, got '-1'/],
    [['--file', box.file, '--apply', 'true', '--kid', 'x'], /--kid applies to --step promote or retire/],
    [['--file', box.file, '--bogus'], /unknown argument '--bogus'/],
    [['--file'], /--file needs a value/]
  ]
  for (const [args, expect] of cases) {
    const r = await box.run(args)
    t.equal(r.code, 2, args.join(' '))
    t.match(r.stderr, expect)
    t.match(r.stderr, /\(see --help\)\n$/)
  }
  t.equal(readFileSync(box.file, 'utf8'), before)
  t.same(box.log(), [])

  const missing = await box.run(['--file', join(box.dir, 'missing.json'), '--apply', 'true'])
  t.equal(missing.code, 1)
  t.match(missing.stderr, /latchkey keys: .*missing\.json: file not found/, 'the CLI says why')

  const help = await box.run(['--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, /^usage: scripts\/rotate-signing-key\.sh --file FILE \[--apply CMD\]/)
  t.match(help.stdout, /LATCHKEY_KEYS_FILE and\s+LATCHKEY_ROTATION_STEP/)
})
