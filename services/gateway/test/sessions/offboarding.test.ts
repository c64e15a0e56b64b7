/**
 * Refresh re-checks the user and the client (docs/contract.md "Browser flow"; one code path for the
 * cookie flow and the refresh_token grant): a user who is gone gets 401 and her access
 * token dies at the edge of both replicas within a second; a scope cut shows in the next
 * refreshed token; a removed client is refused at once and its families die on refresh.
 */
import t from 'tap'
import { readClientsFile } from '#gateway/identity/clients-file.js'
import { readUsersFile, type StoredUser } from '#gateway/identity/users-file.js'
import { buildTestGateway, login, refresh, TEST_PASSWORD } from '../helpers/gateway.js'
import { claimsOf, testClients } from '../helpers/listening.js'
import { msUntilRefused, proxiedStatus, replicaPair } from '../helpers/replicas.js'

const FORM = { 'content-type': 'application/x-www-form-urlencoded' }
const basic = (id: string, secret: string): string => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`

async function usersWithout (file: string, username: string): Promise<StoredUser[]> {
  return (await readUsersFile(file)).filter(u => u.username !== username)
}

t.test('a removed user: next refresh 401, her access token refused at both replicas within 1 s', async (t) => {
  const { a, b, usersFile } = await replicaPair(t)
  const alice = await login(a.app)
  const bob = await login(b.app, 'bob')
  const access = alice.body.access_token as string
  t.equal(await proxiedStatus(a.app, access), 200, 'her token passes at A before')
  t.equal(await proxiedStatus(b.app, access), 200, 'and at B')

  const gone = await usersWithout(usersFile, 'alice')
  await a.users.replace(gone)
  await b.users.replace(gone)
  const started = Date.now()
  const res = await refresh(a.app, alice.refresh)
  t.equal(res.res.statusCode, 401)
  t.equal(res.body.error, 'invalid_grant')
  t.match(res.cookie?.attributes, /Max-Age=0/, 'the cookie is cleared')
  t.equal(await proxiedStatus(a.app, access), 401, 'refused at A at once')
  const atB = await msUntilRefused(b.app, access, started, 1000)
  t.ok(atB >= 0, `refused at B within 1 s (${atB} ms after the refresh began)`)
  t.ok(a.logs.some(l => l.event === 'session_revoked' && l.reason === 'user_gone'), 'audit line says why')

  // The family is revoked in Redis, not merely refused: putting her back does not revive it.
  await a.users.replace(await readUsersFile(usersFile))
  t.equal((await refresh(a.app, alice.refresh)).res.statusCode, 401, 'the family stays revoked')
  t.same(await a.app.latchkey.sessions.list(claimsOf(access).sub as string), [], 'no live session left')

  t.equal(await proxiedStatus(b.app, bob.body.access_token as string), 200, "bob's token still passes")
  t.equal((await refresh(b.app, bob.refresh)).res.statusCode, 200, 'and bob still refreshes')
})

t.test('a scope cut shows in the next refreshed token (cookie flow and refresh_token grant)', async (t) => {
  const { a, usersFile, clientSecrets, clientsFile } = await replicaPair(t)
  const cookie = await login(a.app)
  t.equal(cookie.body.scope, 'notes:read notes:write')
  const grant = await a.app.inject({
    method: 'POST', url: '/oauth/token', headers: { ...FORM, authorization: basic('web', clientSecrets.web as string) },
    payload: `grant_type=password&username=alice&password=${encodeURIComponent(TEST_PASSWORD)}`
  })
  t.equal(grant.statusCode, 200)
  t.equal(grant.json().scope, 'notes:read notes:write')

  const stored = await readUsersFile(usersFile)
  await a.users.replace(stored.map(u => u.username === 'alice' ? { ...u, scope: 'notes:read' } : u))

  const viaCookie = await refresh(a.app, cookie.refresh)
  t.equal(viaCookie.res.statusCode, 200)
  t.equal(viaCookie.body.scope, 'notes:read')
  t.equal(claimsOf(viaCookie.body.access_token as string).scope, 'notes:read', 'the token lacks notes:write')

  const refreshGrant = (token: string, extra = '') => a.app.inject({
    method: 'POST', url: '/oauth/token', headers: { ...FORM, authorization: basic('web', clientSecrets.web as string) },
    payload: `grant_type=refresh_token&refresh_token=${encodeURIComponent(token)}${extra}`
  })
  const viaGrant = await refreshGrant(grant.json().refresh_token as string)
  t.equal(viaGrant.statusCode, 200)
  t.equal(viaGrant.json().scope, 'notes:read')
  t.equal(claimsOf(viaGrant.json().access_token as string).scope, 'notes:read')
  const widen = await refreshGrant(viaGrant.json().refresh_token as string, '&scope=notes%3Awrite')
  t.equal(widen.statusCode, 400, 'asking for the removed scope is invalid_scope')
  t.equal(widen.json().error, 'invalid_scope')

  // The client's scope is cut too: its family's token keeps only what all three hold.
  await a.users.replace(stored)
  const clients = await readClientsFile(clientsFile)
  a.clients.replace(clients.map(c => c.id === 'web' ? { ...c, scope: ['notes:write'] } : c))
  const aliceGrant = await refreshGrant(viaGrant.json().refresh_token as string)
  t.equal(aliceGrant.statusCode, 200)
  t.equal(aliceGrant.json().scope, 'notes:write', "family ∩ alice's scopes ∩ web's scopes")
})

t.test('a removed client: client_credentials and its refresh tokens get invalid_client at once', async (t) => {
  const { a, clientsFile, clientSecrets } = await replicaPair(t)
  const cc = () => a.app.inject({
    method: 'POST', url: '/oauth/token', headers: { ...FORM, authorization: basic('svc-a', clientSecrets['svc-a'] as string) },
    payload: 'grant_type=client_credentials'
  })
  t.equal((await cc()).statusCode, 200)
  const grant = await a.app.inject({
    method: 'POST', url: '/oauth/token', headers: { ...FORM, authorization: basic('web', clientSecrets.web as string) },
    payload: `grant_type=password&username=alice&password=${encodeURIComponent(TEST_PASSWORD)}`
  })
  t.equal(grant.statusCode, 200)
  const remaining = (await readClientsFile(clientsFile)).filter(c => c.id !== 'svc-a' && c.id !== 'web')
  a.clients.replace(remaining)
  const refused = await cc()
  t.equal(refused.statusCode, 401)
  t.equal(refused.json().error, 'invalid_client')
  const refreshRefused = await a.app.inject({
    method: 'POST', url: '/oauth/token', headers: { ...FORM, authorization: basic('web', clientSecrets.web as string) },
    payload: `grant_type=refresh_token&refresh_token=${encodeURIComponent(grant.json().refresh_token as string)}`
  })
  t.equal(refreshRefused.statusCode, 401)
  t.equal(refreshRefused.json().error, 'invalid_client')
})

t.test('a family whose client is gone dies on its next refresh, at the edge too (memory store)', async (t) => {
  const clients = await testClients()
  const gw = await buildTestGateway(t, { CLIENTS_FILE: clients.file })
  const grant = await gw.app.inject({
    method: 'POST', url: '/oauth/token', headers: { ...FORM, authorization: basic('web', clients.secrets.web as string) },
    payload: `grant_type=password&username=alice&password=${encodeURIComponent(TEST_PASSWORD)}`
  })
  const body = grant.json() as { access_token: string, refresh_token: string }
  const sid = claimsOf(body.access_token).sid as string
  gw.app.latchkey.deps.clients.replace((await readClientsFile(clients.file)).filter(c => c.id !== 'web'))
  // The client authenticated a moment ago (a request in flight while the file changed).
  const result = await gw.app.latchkey.sessions.refresh({ log: gw.app.log }, body.refresh_token, { clientId: 'web', seen: { ip: '127.0.0.1', userAgent: 'test' } })
  t.equal(result.ok, false)
  t.ok(gw.app.latchkey.deps.revoked.has(sid), 'its sid is on the edge-revocation set')
  t.same(await gw.app.latchkey.sessions.list(claimsOf(body.access_token).sub as string), [])
  t.ok(gw.logs.some(l => l.event === 'session_revoked' && l.reason === 'client_gone'))
})
