/**
 * Forced logout (docs/contract.md "Admin"): `latchkey sessions list|revoke --user` against the
 * gateway's Redis, and the admin API, end every session of a user at every replica within
 * a second; the admin API takes only a service token with `latchkey:admin`, and leaves one
 * audit line per call without tokens. Two replicas share one real redis-server; the CLI
 * runs as its own process.
 */
import t from 'tap'
import { addClient, readClientsFile } from '#gateway/identity/clients-file.js'
import { runSessionsCommand } from '#gateway/cli/sessions.js'
import { latchkey } from '../../../../test/helpers/processes.js'
import { memoryIo } from '../keys/helpers.js'
import { login, refresh } from '../helpers/gateway.js'
import { claimsOf } from '../helpers/listening.js'
import { proxiedStatus, replicaPair, type ReplicaPair } from '../helpers/replicas.js'

const FORM = { 'content-type': 'application/x-www-form-urlencoded' }
const REVOCATION_PROMISE_MS = 1000

/** Polls `check` every 5 ms from now on; resolves with Date.now() at the first true, or -1 after `timeoutMs`. */
async function firstTrue (check: () => Promise<boolean>, timeoutMs: number): Promise<number> {
  const started = Date.now()
  while (!(await check())) {
    if (Date.now() - started > timeoutMs) return -1
    await new Promise(resolve => setTimeout(resolve, 5))
  }
  return Date.now()
}

async function allRefused (pair: ReplicaPair, tokens: readonly string[]): Promise<boolean> {
  for (const token of tokens) {
    if (await proxiedStatus(pair.a.app, token) !== 401) return false
    if (await proxiedStatus(pair.b.app, token) !== 401) return false
  }
  return true
}

/** An admin client (latchkey:admin) in the clients file, loaded by both replicas. */
async function withAdminClient (pair: ReplicaPair): Promise<string> {
  const { secret } = await addClient(pair.clientsFile, { id: 'ops', scope: 'latchkey:admin', audiences: ['latchkey-api'], grants: ['client_credentials'] })
  const loaded = await readClientsFile(pair.clientsFile)
  pair.a.clients.replace(loaded)
  pair.b.clients.replace(loaded)
  return secret
}

async function serviceToken (pair: ReplicaPair, id: string, secret: string): Promise<string> {
  const res = await pair.a.app.inject({
    method: 'POST', url: '/oauth/token', headers: { ...FORM, authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}` }, payload: 'grant_type=client_credentials'
  })
  t.equal(res.statusCode, 200, `${id} gets a service token`)
  return res.json().access_token as string
}

t.test('latchkey sessions list|revoke --user: every session of the user refused at both replicas within 1 s', async (t) => {
  const pair = await replicaPair(t)
  const { a, b } = pair
  const alice = [await login(a.app, 'alice', undefined, { 'user-agent': 'Laptop' }), await login(a.app), await login(b.app)]
  const bob = await login(b.app, 'bob')
  const tokens = alice.map(s => s.body.access_token as string)
  for (const token of tokens) t.equal(await proxiedStatus(b.app, token), 200, 'her tokens pass at B before')
  const env = { REDIS_URL: pair.redis.url, REDIS_KEY_PREFIX: pair.redis.prefix, USERS_FILE: pair.usersFile, LOG_LEVEL: 'info' }

  const list = latchkey(t, ['sessions', 'list', '--user', 'alice'], env)
  t.equal(await list.exited, 0, list.stderr)
  const sids = alice.map(s => claimsOf(s.body.access_token as string).sid as string)
  for (const sid of sids) t.match(list.stdout, sid, 'listed')
  t.match(list.stdout, /Laptop/)
  t.equal(list.stdout.trim().split('\n').length, 3, "only alice's three sessions")

  // One session first, by id.
  const one = latchkey(t, ['sessions', 'revoke', '--user', 'alice', '--session', sids[0] as string], env)
  t.equal(await one.exited, 0, one.stderr)
  t.ok(await firstTrue(() => allRefused(pair, [tokens[0] as string]), REVOCATION_PROMISE_MS) > 0, 'that session is refused at both replicas')
  t.equal(await proxiedStatus(b.app, tokens[1] as string), 200, 'the others still pass')

  // Then all of them: B is polled while the CLI runs; the clock starts when the CLI says it is done.
  const polling = firstTrue(() => allRefused(pair, tokens.slice(1)), 20_000)
  const revoke = latchkey(t, ['sessions', 'revoke', '--user', 'alice'], env)
  await revoke.waitFor(/revoked 2 sessions of alice at every replica/)
  const said = Date.now()
  const refusedAt = await polling
  t.equal(await revoke.exited, 0, revoke.stderr)
  t.ok(refusedAt > 0, 'refused at both replicas')
  t.ok(refusedAt - said <= REVOCATION_PROMISE_MS, `refused at A and B ${refusedAt - said} ms after the CLI reported the revocation`)
  t.comment(`sessions revoke → refusal at replica B: ${refusedAt - said} ms after the CLI's answer`)
  t.match(revoke.stderr, /"event":"session_revoked".*"reason":"cli"/, 'the audit line of a logout, reason cli')
  for (const s of alice) {
    t.notMatch(revoke.stderr + revoke.stdout, s.refresh as string, 'no refresh token in the output')
    t.equal((await refresh(b.app, s.refresh)).res.statusCode, 401, 'her refresh tokens are dead')
  }
  t.equal(await proxiedStatus(b.app, bob.body.access_token as string), 200, 'bob is untouched')

  t.same(await a.app.latchkey.sessions.list(claimsOf(tokens[0] as string).sub as string), [], 'no live session of alice left')
  // Usage answers need no process of their own.
  const noRedis = memoryIo()
  t.equal(await runSessionsCommand(['list', '--user', 'alice'], noRedis.io, { USERS_FILE: pair.usersFile }), 2)
  t.match(noRedis.stderr(), /no Redis configured/)
  const nobody = memoryIo()
  t.equal(await runSessionsCommand(['revoke', '--user', 'mallory'], nobody.io, env), 1)
  t.match(nobody.stderr(), /no user "mallory"/)
  t.equal(await runSessionsCommand(['list', '--user', 'alice', '--session', 'x'], memoryIo().io, env), 2, '--session is for revoke')
})

t.test('admin API: lists and ends sessions at every replica within 1 s; only service tokens with latchkey:admin', async (t) => {
  const pair = await replicaPair(t)
  const { a, b } = pair
  const adminSecret = await withAdminClient(pair)
  const admin = await serviceToken(pair, 'ops', adminSecret)
  const notAdmin = await serviceToken(pair, 'svc-a', pair.clientSecrets['svc-a'] as string)
  const alice = [await login(a.app), await login(b.app)]
  const tokens = alice.map(s => s.body.access_token as string)
  const call = (app: typeof a.app, method: 'GET' | 'DELETE', url: string, token?: string) =>
    app.inject({ method, url, headers: token === undefined ? {} : { authorization: `Bearer ${token}` } })

  // Refused: no token, a bad token, a user's token, a service token without the scope.
  const none = await call(b.app, 'GET', '/admin/users/alice/sessions')
  t.equal(none.statusCode, 401)
  t.match(none.headers['www-authenticate'], /^Bearer /)
  t.equal((await call(b.app, 'GET', '/admin/users/alice/sessions', 'not-a-token')).statusCode, 401)
  const userToken = await call(b.app, 'DELETE', '/admin/users/alice/sessions', tokens[0])
  t.equal(userToken.statusCode, 403, "a user's token is refused")
  t.equal(userToken.json().error, 'insufficient_scope')
  const noScope = await call(b.app, 'DELETE', '/admin/users/alice/sessions', notAdmin)
  t.equal(noScope.statusCode, 403, 'a service token without latchkey:admin is refused')
  t.match(noScope.headers['www-authenticate'], /error="insufficient_scope", scope="latchkey:admin"/)
  for (const token of tokens) t.equal(await proxiedStatus(b.app, token), 200, 'nothing was revoked by the refused calls')

  const listed = await call(b.app, 'GET', '/admin/users/alice/sessions', admin)
  t.equal(listed.statusCode, 200)
  t.equal(listed.headers['cache-control'], 'no-store')
  const sessions = listed.json() as Array<{ id: string, client_id: string }>
  t.same(sessions.map(s => s.id).sort(), alice.map(s => claimsOf(s.body.access_token as string).sid).sort())
  t.equal((await call(b.app, 'GET', '/admin/users/nobody/sessions', admin)).statusCode, 404)

  // One session at A: refused at B within the promise.
  const one = await call(a.app, 'DELETE', `/admin/users/alice/sessions/${sessions[0]?.id as string}`, admin)
  t.equal(one.statusCode, 204)
  const oneToken = tokens.find(tok => claimsOf(tok).sid === sessions[0]?.id) as string
  const oneAt = await firstTrue(async () => await proxiedStatus(b.app, oneToken) === 401, REVOCATION_PROMISE_MS)
  t.ok(oneAt > 0, 'that session is refused at B')
  t.equal((await call(a.app, 'DELETE', `/admin/users/alice/sessions/${sessions[0]?.id as string}`, admin)).statusCode, 404, 'already gone')

  // All of them at B: refused at A (the other replica) within the promise.
  const all = await call(b.app, 'DELETE', '/admin/users/alice/sessions', admin)
  const answered = Date.now()
  t.equal(all.statusCode, 200)
  t.same(all.json(), { revoked: [sessions[1]?.id] })
  const allAt = await firstTrue(() => allRefused(pair, tokens), REVOCATION_PROMISE_MS)
  t.ok(allAt > 0, `every session refused at both replicas ${allAt - answered} ms after the answer`)
  for (const s of alice) t.equal((await refresh(a.app, s.refresh)).res.statusCode, 401)

  // One audit line per call, refused ones included, and no token anywhere in the logs.
  const audit = [...a.logs, ...b.logs].filter(l => l.event === 'admin_call')
  t.equal(audit.length, 9, 'one line per admin call')
  t.ok(audit.some(l => l.status === 403 && l.method === 'DELETE' && l.user === 'alice'))
  t.ok(audit.some(l => l.status === 200 && l.client === 'ops' && l.method === 'DELETE'))
  for (const raw of [...a.rawLogs, ...b.rawLogs]) {
    for (const secret of [admin, notAdmin, ...tokens]) t.notOk(raw.includes(secret), 'no token in a log line')
  }
})
