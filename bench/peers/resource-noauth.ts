/**
 * Peer: the resource's `GET /api/me` with verification off — the ceiling the verified
 * route is compared with. It answers a fixed caller of the same shape and size.
 */
import { buildShell } from './resource-shell.js'
import { host, port } from './env.js'

const caller = Object.freeze({
  sub: 'usr_AAAAAAAAAAAAAAAA',
  client_id: 'latchkey-browser',
  scope: 'notes:read notes:write',
  sid: 'AAAAAAAAAAAAAAAAAAAAAA',
  exp: 4102444800
})
const app = await buildShell({ caller: () => caller })
await app.listen({ port: port(), host: host() })
process.stdout.write(`listening on ${host()}:${port()}\n`)
process.once('SIGTERM', () => { void app.close().then(() => process.exit(0)) })
