/**
 * k8s/examples/workload-identity against the code, offline: the client pod's projected
 * token is for the gateway's issuer and sits where the pod's token-file setting points;
 * the example clients entry parses as the gateway reads it and trusts exactly the pod's
 * service account; the pod passes the namespace's "restricted" Pod Security level.
 */
import t from 'tap'
import { loadGatewayConfig } from '#gateway/config.js'
import { readClientsFile } from '#gateway/identity/clients-file.js'
import { ROOT, asArray, asObj, yamlDocs, type Obj } from './helpers.js'
import { validateManifest } from './k8s-models.js'

const DIR = 'k8s/examples/workload-identity'
const [kustomization] = yamlDocs(`${DIR}/kustomization.yaml`)
const docs = yamlDocs(`${DIR}/reporter.yaml`)
const nameOf = (d: Obj): string => String(asObj(d.metadata, 'metadata').name)
const find = (kind: string): Obj => {
  const d = docs.find(x => x.kind === kind)
  if (d === undefined) throw new Error(`no ${kind}`)
  return d
}
const sa = find('ServiceAccount')
const deployment = find('Deployment')
const pod = asObj(asObj(asObj(deployment.spec, 'spec').template, 'template').spec, 'pod spec')
const container = asObj(asArray(pod.containers, 'containers')[0], 'container')
const env = Object.fromEntries(asArray(container.env, 'env').map(e => asObj(e, 'env')).map(e => [String(e.name), String(e.value)]))

t.test('the manifests validate and the kustomization lists them', async t => {
  for (const doc of docs) t.doesNotThrow(() => { validateManifest(doc) }, `${String(doc.kind)} ${nameOf(doc)}`)
  t.same(kustomization?.resources, ['reporter.yaml'])
  t.equal(kustomization?.namespace, 'latchkey')
})

t.test('the projected token is for the gateway issuer, mounted where the pod reads it', async t => {
  t.equal(pod.serviceAccountName, nameOf(sa))
  t.equal(pod.automountServiceAccountToken, false, 'no Kubernetes API token in the pod')
  const volume = asArray(pod.volumes, 'volumes').map(v => asObj(v, 'volume')).find(v => v.projected !== undefined)
  const source = asObj(asObj(asArray(asObj(volume?.projected, 'projected').sources, 'sources')[0], 'source').serviceAccountToken, 'serviceAccountToken')
  const [common] = yamlDocs('k8s/base/configmap.yaml').filter(d => nameOf(d) === 'latchkey-common')
  const gateway = loadGatewayConfig({ ISSUER: String(asObj(common?.data, 'data').ISSUER) })
  t.equal(source.audience, gateway.issuer, 'audience = the ISSUER of k8s/base (the gateway accepts no other)')
  t.ok(Number(source.expirationSeconds) >= 600 && Number(source.expirationSeconds) <= 24 * 3600, 'within what the kubelet issues and the gateway accepts')
  const mount = asArray(container.volumeMounts, 'volumeMounts').map(m => asObj(m, 'mount')).find(m => m.name === volume?.name)
  t.equal(mount?.readOnly, true)
  t.equal(`${String(mount?.mountPath)}/${String(source.path)}`, env.LATCHKEY_FEDERATED_TOKEN_FILE)
  const tokenUrl = new URL(env.LATCHKEY_TOKEN_URL ?? '')
  t.equal(`${tokenUrl.hostname}:${tokenUrl.port}${tokenUrl.pathname}`, 'latchkey-gateway:8080/oauth/token', 'the gateway Service of k8s/base')
  const labels = asObj(asObj(asObj(asObj(deployment.spec, '').template, '').metadata, '').labels, 'labels')
  t.equal(labels['latchkey.dev/client'], 'true', 'admitted by the resource NetworkPolicy')
})

t.test('the example clients entry trusts exactly this service account', async t => {
  const clients = await readClientsFile(`${ROOT}/${DIR}/clients.example.json`)
  const entry = clients.find(c => c.id === env.LATCHKEY_CLIENT_ID)
  t.ok(entry, 'the pod\'s client id is in the example')
  t.equal(entry?.secret, undefined, 'no secret')
  t.equal(entry?.federated?.subject, `system:serviceaccount:${String(kustomization?.namespace)}:${nameOf(sa)}`)
  t.ok(entry?.audiences.includes(env.LATCHKEY_AUDIENCE ?? ''))
})

t.test('the pod passes the restricted Pod Security level of the latchkey namespace', async t => {
  const psc = asObj(pod.securityContext, 'pod securityContext')
  t.equal(psc.runAsNonRoot, true)
  t.same(psc.seccompProfile, { type: 'RuntimeDefault' })
  const sc = asObj(container.securityContext, 'container securityContext')
  t.equal(sc.allowPrivilegeEscalation, false)
  t.same(sc.capabilities, { drop: ['ALL'] })
  t.equal(sc.readOnlyRootFilesystem, true)
})
