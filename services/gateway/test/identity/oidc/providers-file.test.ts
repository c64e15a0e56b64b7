/**
 * PROVIDERS_FILE: validated whole at start (one line naming the variable, never the secret),
 * the claim mapping's default deny, and reload on change through ops/reloader.ts (a bad file
 * is refused and the old set stays).
 */
import t from 'tap'
import { mkdtempSync, renameSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigError } from '#shared/errors.js'
import { loadGatewayConfig } from '#gateway/config.js'
import { mapClaims } from '#gateway/identity/oidc/claim-mapping.js'
import { IdpTokenSeal } from '#gateway/identity/oidc/idp-token-seal.js'
import { DEFAULT_IDP_REFRESH_CHECK_INTERVAL_S } from '#gateway/identity/oidc/providers-file.js'
import { buildTestGateway } from '../../helpers/gateway.js'

const SECRET = 'do-not-echo-this-secret'
const entry = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  id: 'corp', issuer: 'https://idp.example.com', client_id: 'lk', client_secret: SECRET,
  allow: [{ group: 'eng', scopes: ['notes:read'] }], ...over
})
const load = (doc: unknown): ReturnType<typeof loadGatewayConfig> => loadGatewayConfig({ PROVIDERS_JSON: JSON.stringify(doc) })

t.test('a valid entry, with defaults', async (t) => {
  const [p] = load({ providers: [entry()] }).providers
  t.equal(p?.name, 'corp')
  t.same(p?.scopes, ['openid', 'email', 'profile'])
  t.equal(p?.idTokenAlg, 'RS256')
  t.equal(p?.user.idPrefix, 'corp:')
  t.ok(Object.isFrozen(p?.allow), 'frozen')
})

t.test('refused entries: one line naming the variable, never the secret', async (t) => {
  const bad: Array<[string, unknown]> = [
    ['no allow rules (default deny needs an explicit list)', { providers: [entry({ allow: [] })] }],
    ['http issuer off loopback', { providers: [entry({ issuer: 'http://idp.example.com' })] }],
    ['secret and key both', { providers: [entry({ private_key_jwt: { jwk: { kty: 'EC', d: 'x' } } })] }],
    ['no openid scope', { providers: [entry({ scopes: ['email'] })] }],
    ['duplicate ids', { providers: [entry(), entry()] }],
    ['an id that is not a URL segment', { providers: [entry({ id: 'Corp/1' })] }],
    ['a rule with two selectors', { providers: [entry({ allow: [{ group: 'a', email: 'b@c', scopes: [] }] })] }],
    ['an alg that is not asymmetric', { providers: [entry({ id_token_alg: 'HS256' })] }],
    ['not a providers document', [entry()]]
  ]
  for (const [what, doc] of bad) {
    t.throws(() => load(doc), ConfigError, what)
    try { load(doc) } catch (err) { t.notMatch((err as Error).message, SECRET, `${what}: no secret in the message`) }
  }
  t.throws(() => loadGatewayConfig({ PROVIDERS_JSON: `{"providers": [{"client_secret": "${SECRET}"` }), /^PROVIDERS_JSON: the inline document: not valid JSON at line 1, column \d+$/)
  t.throws(() => loadGatewayConfig({ PROVIDERS_JSON: '{"providers":[]}', PROVIDERS_FILE: '/nonexistent' }), /either PROVIDERS_FILE or PROVIDERS_JSON/)
  t.throws(() => loadGatewayConfig({ PROVIDERS_FILE: '/nonexistent/providers.json' }), /^PROVIDERS_FILE: \/nonexistent\/providers\.json: file not found$/)
})

t.test('claim mapping: union of matching rules, verified email only, default deny', async (t) => {
  const [p] = load({
    providers: [entry({
      allow: [
        { group: 'eng', scopes: ['notes:write'] },
        { email_domain: 'example.com', scopes: ['notes:read'] },
        { subject: 'robot-1', scopes: ['internal:read'] }
      ]
    })]
  }).providers
  if (p === undefined) throw new Error('no provider')
  t.same(mapClaims(p, { sub: 'u1', email: 'A@Example.com', email_verified: true, groups: ['eng'], name: 'A' }),
    { ok: true, user: { userId: 'corp:u1', name: 'A', scope: 'notes:read notes:write' } })
  t.same(mapClaims(p, { sub: 'u2', email: 'b@example.com', email_verified: false }), { ok: false, reason: 'no_rule_matched' }, 'an unverified email matches nothing')
  t.same(mapClaims(p, { sub: 'u3', email: 'c@example.com.evil.test', email_verified: true }), { ok: false, reason: 'no_rule_matched' }, 'a domain suffix is not the domain')
  t.same(mapClaims(p, { sub: 'u4', groups: 'eng' }), { ok: true, user: { userId: 'corp:u4', name: 'corp:u4', scope: 'notes:write' } }, 'a single-string group claim')
  t.same(mapClaims(p, { sub: 'robot-1' }), { ok: true, user: { userId: 'corp:robot-1', name: 'corp:robot-1', scope: 'internal:read' } })
  t.same(mapClaims(p, { email: 'a@example.com', email_verified: true }), { ok: false, reason: 'no_id_claim' }, 'no sub, no user')
})

t.test('PROVIDERS_FILE is reloaded on change; a bad file is refused and the old set stays', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'lk-providers-'))
  const file = join(dir, 'providers.json')
  const write = (text: string): void => {
    writeFileSync(`${file}.tmp`, text)
    renameSync(`${file}.tmp`, file)
  }
  // Discovery of these issuers fails fast (nothing listens on port 1); the listing does not need it.
  write(JSON.stringify({ providers: [entry({ id: 'one', issuer: 'http://127.0.0.1:1/one' })] }))
  const gw = await buildTestGateway(t, { PROVIDERS_FILE: file })
  const ids = async (): Promise<string[]> =>
    ((await gw.app.inject({ url: '/auth/oidc/providers' })).json() as { providers: Array<{ id: string }> }).providers.map(p => p.id)
  const until = async (want: string[]): Promise<string[]> => {
    const deadline = Date.now() + 10_000
    let got = await ids()
    while (JSON.stringify(got) !== JSON.stringify(want) && Date.now() < deadline) {
      await new Promise(resolve => setTimeout(resolve, 50))
      got = await ids()
    }
    return got
  }
  t.same(await ids(), ['one'])
  t.equal((await gw.app.inject({ url: '/auth/oidc/one/start' })).statusCode, 503, 'an unreachable IdP: 503, not a hang')

  write(JSON.stringify({ providers: [entry({ id: 'two', issuer: 'http://127.0.0.1:1/two' })] }))
  t.same(await until(['two']), ['two'], 'the new file is in force')
  t.equal((await gw.app.inject({ url: '/auth/oidc/one/start' })).statusCode, 404, 'a removed provider is gone')

  write(JSON.stringify({ providers: [entry({ id: 'three', allow: [] })] }))
  const deadline = Date.now() + 10_000
  while (!gw.rawLogs.some(l => l.includes('PROVIDERS_FILE') && l.includes('"level":50')) && Date.now() < deadline) {
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  t.ok(gw.rawLogs.some(l => l.includes('PROVIDERS_FILE') && l.includes('"level":50')), 'one error line for the refused file')
  t.same(await ids(), ['two'], 'the old set stays')
  t.notOk(gw.rawLogs.join('\n').includes(SECRET), 'the secret never reaches a log line')
})

t.test('idp_refresh: named defaults, validated, and it needs IDP_TOKEN_KEY', async (t) => {
  const key = Buffer.alloc(32, 7).toString('base64url')
  const withKey = (doc: unknown): ReturnType<typeof loadGatewayConfig> => loadGatewayConfig({ PROVIDERS_JSON: JSON.stringify(doc), IDP_TOKEN_KEY: key })
  const [p] = withKey({ providers: [entry({ idp_refresh: {} })] }).providers
  t.same(p?.idpRefresh, { checkIntervalS: DEFAULT_IDP_REFRESH_CHECK_INTERVAL_S, offlineAccess: true, authorizationParams: {} })
  t.equal(withKey({ providers: [entry({ idp_refresh: { enabled: false } })] }).providers[0]?.idpRefresh, undefined, 'enabled: false is unbound')
  t.equal(withKey({ providers: [entry()] }).providers[0]?.idpRefresh, undefined, 'absent is unbound')
  for (const bad of [{ check_interval_seconds: 0 }, { check_interval_seconds: 1.5 }, { check_interval_seconds: 86_401 }, { enabled: 'yes' },
    { authorization_params: { state: 'x' } }, { authorization_params: { access_type: 1 } }, { nope: true }]) {
    t.throws(() => withKey({ providers: [entry({ idp_refresh: bad })] }), ConfigError, JSON.stringify(bad))
  }
  t.throws(() => load({ providers: [entry({ idp_refresh: {} })] }), { message: /IDP_TOKEN_KEY/ }, 'no key: refused at start')
  t.throws(() => loadGatewayConfig({ IDP_TOKEN_KEY: 'too-short' }), { message: /IDP_TOKEN_KEY/ })
})

t.test('the IdP token seal opens only for its provider and user, and only under its key', async (t) => {
  const seal = new IdpTokenSeal(Buffer.alloc(32, 1).toString('base64url'))
  const sealed = seal.seal('idp-refresh-token', 'corp', 'corp:alice')
  t.notOk(sealed.includes('idp-refresh-token'))
  t.equal(seal.open(sealed, 'corp', 'corp:alice'), 'idp-refresh-token')
  t.equal(seal.open(sealed, 'corp', 'corp:bob'), undefined, 'another user')
  t.equal(seal.open(sealed, 'other', 'corp:alice'), undefined, 'another provider')
  t.equal(new IdpTokenSeal(Buffer.alloc(32, 2).toString('base64url')).open(sealed, 'corp', 'corp:alice'), undefined, 'another key')
  t.equal(seal.open('garbage', 'corp', 'corp:alice'), undefined)
})
