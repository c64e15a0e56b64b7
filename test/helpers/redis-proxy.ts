/**
 * A TCP proxy in front of Redis that can black-hole the connections it carries: they stay
 * open but nothing crosses them any more, in either direction, and no FIN or RST is sent
 * (what a dead NAT entry, a dropped route or a frozen middlebox does). Connections made
 * afterwards are forwarded normally, so a client that notices and reconnects recovers.
 */
import { connect, createServer, type Socket } from 'node:net'

export interface BlackHoleProxy {
  readonly url: string
  /**
   * Stop forwarding on every connection open now (with `subscribersOnly`, only on those
   * that sent SUBSCRIBE); keep them open.
   */
  blackHole (options?: { subscribersOnly?: boolean }): void
  /** Connections accepted so far. */
  readonly accepted: number
}

interface Teardown { teardown (fn: () => unknown): void }

export async function blackHoleProxy (t: Teardown, target: { host: string, port: number }): Promise<BlackHoleProxy> {
  const pairs = new Set<{ client: Socket, upstream: Socket, holed: boolean, subscriber: boolean }>()
  let accepted = 0
  const server = createServer((client) => {
    accepted++
    const upstream = connect(target.port, target.host)
    const pair = { client, upstream, holed: false, subscriber: false }
    pairs.add(pair)
    client.on('data', (d: Buffer) => {
      if (/subscribe/i.test(d.toString('latin1'))) pair.subscriber = true
      if (!pair.holed) upstream.write(d)
    })
    upstream.on('data', (d) => { if (!pair.holed) client.write(d) })
    const close = (): void => { pairs.delete(pair); client.destroy(); upstream.destroy() }
    for (const s of [client, upstream]) { s.on('error', close); s.on('close', close) }
  })
  await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
  const address = server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  t.teardown(async () => {
    for (const p of pairs) { p.client.destroy(); p.upstream.destroy() }
    await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
  })
  return {
    url: `redis://127.0.0.1:${port}`,
    blackHole (options = {}) { for (const p of pairs) if (options.subscribersOnly !== true || p.subscriber) p.holed = true },
    get accepted () { return accepted }
  }
}
