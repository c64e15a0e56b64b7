/**
 * Client entries without a secret: `jwks`, `jwks_uri`, `federated`, and the `exchange`
 * policy; from `latchkey clients add --jwks FILE | --jwks-uri URL | --federated-*`, and
 * validated when the file is read (a private key pasted by mistake is refused unechoed).
 */
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { exportJWK, generateKeyPair } from 'jose'
import { runClientsCommand } from '#gateway/cli/clients.js'
import { ClientDirectory, addKeyClient, hashClientSecret, readClientsFile } from '#gateway/identity/clients-file.js'
import { pipedIo } from './cli-io.js'

const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true })
const publicJwk = { ...await exportJWK(publicKey), kid: 'k1' }
const privateJwk = { ...await exportJWK(privateKey), kid: 'k1' }

t.test('clients add --jwks / --jwks-uri / --federated-*: no secret printed or stored', async t => {
  const dir = t.testdir()
  const file = join(dir, 'clients.json')
  await writeFile(join(dir, 'pub.json'), JSON.stringify({ keys: [publicJwk] }))
  await writeFile(join(dir, 'one.json'), JSON.stringify(publicJwk))
  const base = ['--scope', 'internal:read', '--audience', 'latchkey-api', '--file', file]
  const runs: Array<[string[], RegExp]> = [
    [['add', 'a', '--jwks', join(dir, 'pub.json'), ...base], /client_auth: private_key_jwt with the 1 public key/],
    [['add', 'b', '--jwks', join(dir, 'one.json'), ...base], /private_key_jwt/],
    [['add', 'c', '--jwks-uri', 'https://svc.example/jwks.json', ...base], /private_key_jwt with the keys at https:\/\/svc\.example\/jwks\.json/],
    [['add', 'd', '--federated-issuer', 'https://oidc.example/cluster', '--federated-subject', 'system:serviceaccount:apps:reporter', '--exchange-audience', 'billing', ...base],
      /tokens of https:\/\/oidc\.example\/cluster for subject system:serviceaccount:apps:reporter/]
  ]
  for (const [argv, out] of runs) {
    const io = pipedIo('')
    t.equal(await runClientsCommand(argv, io.io, {}), 0, io.err())
    t.match(io.out(), out)
    t.notMatch(io.out(), /client_secret/)
  }
  const json = JSON.parse(await readFile(file, 'utf8')) as { clients: Array<Record<string, unknown>> }
  t.same(json.clients.map(c => 'secret' in c), [false, false, false, false], 'no secret field')
  t.same(json.clients[0]?.jwks, { keys: [publicJwk] })
  t.equal(json.clients[2]?.jwks_uri, 'https://svc.example/jwks.json')
  t.same(json.clients[3]?.federated, { issuer: 'https://oidc.example/cluster', subject: 'system:serviceaccount:apps:reporter' })
  t.same(json.clients[3]?.exchange, { audiences: ['billing'] })

  const clients = await ClientDirectory.load(file)
  t.equal(clients.findFederated('https://oidc.example/cluster', 'system:serviceaccount:apps:reporter')?.id, 'd')
  t.equal(clients.findFederated('https://oidc.example/cluster', 'system:serviceaccount:apps:other'), undefined)
  t.equal(clients.authenticate('a', ''), null, 'no secret authenticates a key client')
  t.same(clients.get('d')?.exchangeAudiences, ['billing'])
})

t.test('clients add refuses a private key, two methods, half a federation, plain-http key URLs', async t => {
  const dir = t.testdir()
  const file = join(dir, 'clients.json')
  await writeFile(join(dir, 'priv.json'), JSON.stringify({ keys: [privateJwk] }))
  const base = ['--scope', 's', '--audience', 'a', '--file', file]
  const refused: Array<[string[], number, RegExp]> = [
    [['add', 'x', '--jwks', join(dir, 'priv.json'), ...base], 1, /has private member "d"; give the public key only/],
    [['add', 'x', '--jwks', join(dir, 'missing.json'), ...base], 1, /cannot be read/],
    [['add', 'x', '--jwks-uri', 'http://svc.example/jwks.json', ...base], 1, /https URL/],
    [['add', 'x', '--jwks', join(dir, 'priv.json'), '--jwks-uri', 'https://a.example/j', ...base], 2, /give one of/],
    [['add', 'x', '--federated-issuer', 'https://a.example', ...base], 2, /go together/]
  ]
  for (const [argv, code, message] of refused) {
    const io = pipedIo('')
    t.equal(await runClientsCommand(argv, io.io, {}), code, argv.join(' '))
    t.match(io.err(), message)
    t.notMatch(io.err(), new RegExp(privateJwk.d as string), 'the private key is never echoed')
  }
  await t.rejects(readFile(file), { code: 'ENOENT' }, 'nothing written')
})

t.test('clients file: key fields validated on read', async t => {
  const dir = t.testdir()
  const ok = { id: 'svc', scope: 'a', audiences: ['aud'], grants: ['client_credentials'] }
  const trust = { issuer: 'https://k8s.example', subject: 'system:serviceaccount:ns:a' }
  const cases: Array<[string, unknown[], RegExp]> = [
    ['neither secret nor keys', [ok], /secret: expected hs256.*or give jwks, jwks_uri or federated/],
    ['private jwk', [{ ...ok, jwks: { keys: [privateJwk] } }], /jwks: keys\[0\]: has private member "d"/],
    ['symmetric jwk', [{ ...ok, jwks: { keys: [{ kty: 'oct', k: 'AAAA' }] } }], /has private member "k"/],
    ['empty jwks', [{ ...ok, jwks: { keys: [] } }], /jwks: expected 1\.\.20 keys/],
    ['both jwks and uri', [{ ...ok, jwks: { keys: [publicJwk] }, jwks_uri: 'https://a.example/j' }], /give jwks or jwks_uri, not both/],
    ['http uri', [{ ...ok, jwks_uri: 'http://a.example/j' }], /jwks_uri: expected an https URL/],
    ['federated no subject', [{ ...ok, federated: { issuer: 'https://a.example' } }], /federated: subject/],
    ['federated extra key', [{ ...ok, federated: { ...trust, audience: 'x' } }], /federated: unknown key "audience"/],
    ['federated twice', [{ ...ok, federated: trust }, { ...ok, id: 'svc2', federated: trust }], /clients\[1\]\.federated: another client already trusts/],
    ['exchange shape', [{ ...ok, secret: hashClientSecret('s'), exchange: ['billing'] }], /exchange: expected \{"audiences"/]
  ]
  for (const [name, clients, message] of cases) {
    const file = join(dir, `${name.replace(/\W+/g, '-')}.json`)
    await writeFile(file, JSON.stringify({ clients }))
    const err = await readClientsFile(file).then(() => undefined, (e: unknown) => e as Error)
    t.match(err?.message, message, name)
    t.notMatch(err?.message ?? '', new RegExp(privateJwk.d as string), `${name}: no key material echoed`)
  }
  const file = join(dir, 'good.json')
  await addKeyClient(file, { ...ok, keys: { federated: { ...trust, jwksUri: 'http://127.0.0.1:9/jwks' } } })
  t.same((await readClientsFile(file))[0]?.federated, { ...trust, jwksUri: 'http://127.0.0.1:9/jwks' }, 'http is fine on loopback (a local test issuer)')
})
