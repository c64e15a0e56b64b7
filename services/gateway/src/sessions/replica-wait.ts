/**
 * REDIS_WAIT_REPLICAS: answer a login or a rotation only once that many replicas hold it.
 *
 * Redis replicates asynchronously, so a failover can promote a replica that never saw a
 * write the gateway already answered: the client then holds a token the new master does
 * not know, and its next refresh is refused — for a rotation, taken for reuse and the whole
 * session revoked. `WAIT n timeout` closes that window. Two properties of WAIT shape this file:
 *
 *  - It counts the writes made *on the connection it is sent on*, so it must follow the
 *    write on that same connection: the client's one connection to a standalone or
 *    Sentinel-chosen master, or, on a Cluster, the connection to the node that owns the
 *    key's slot (ioredis would send a keyless command to a random node).
 *  - It blocks that connection until it returns, and ioredis multiplexes every request
 *    over one connection per node: one WAIT per request would queue them end to end
 *    (measured: 5 concurrent WAITs with a replica missing took 2.6 s, every other command
 *    stuck behind them). So WAITs are group-committed: at most one is outstanding per
 *    connection, and it covers every write whose reply arrived before it was sent.
 */
import { Cluster, Command, type Redis } from 'ioredis'
import type { RedisClient } from './redis-connection.js'

/**
 * How long a WAIT may block. A replica on the same network acknowledges in about a
 * millisecond, so only a missing or lagging replica waits this long; with the write
 * before it, this stays inside the store's call deadline and so inside the contract.s 2 s.
 */
export const REDIS_WAIT_TIMEOUT_MS = 500

/** The WAITs of one connection, one at a time. */
class ConnectionWaits {
  readonly #connection: Redis
  readonly #replicas: number
  readonly #timeoutMs: number
  #inFlight: Promise<number> | undefined
  #next: Promise<number> | undefined

  constructor (connection: Redis, replicas: number, timeoutMs: number) {
    this.#connection = connection
    this.#replicas = replicas
    this.#timeoutMs = timeoutMs
  }

  /** Replicas holding every write this connection made before the call. */
  acknowledged (): Promise<number> {
    if (this.#inFlight === undefined) {
      this.#inFlight = this.#connection.wait(this.#replicas, this.#timeoutMs).finally(() => { this.#inFlight = undefined })
      return this.#inFlight
    }
    // The WAIT in flight may have been sent before the caller's write, so it proves
    // nothing for it: ride the next one, sent the moment this one returns.
    this.#next ??= this.#inFlight.then(noop, noop).then(() => {
      this.#next = undefined
      return this.acknowledged()
    })
    return this.#next
  }
}

function noop (): void {}

export class ReplicaWait {
  readonly #client: RedisClient
  readonly #replicas: number
  readonly #timeoutMs: number
  readonly #waits = new WeakMap<Redis, ConnectionWaits>()

  constructor (client: RedisClient, replicas: number, timeoutMs = REDIS_WAIT_TIMEOUT_MS) {
    if (!Number.isSafeInteger(replicas) || replicas < 1) throw new RangeError('replicas must be a positive integer')
    this.#client = client
    this.#replicas = replicas
    this.#timeoutMs = timeoutMs
  }

  /**
   * Call right after a write to `key` was answered. Resolves once the replicas hold it;
   * throws when fewer acknowledge within the timeout, or when the connection changed
   * since the write (a WAIT on a new socket, perhaps to a new master, proves nothing).
   */
  async after (key: string): Promise<void> {
    const connection = this.connectionFor(key)
    const socket = connection.stream
    let waits = this.#waits.get(connection)
    if (waits === undefined) {
      waits = new ConnectionWaits(connection, this.#replicas, this.#timeoutMs)
      this.#waits.set(connection, waits)
    }
    const acknowledged = await waits.acknowledged()
    if (connection.stream !== socket) throw new Error('the Redis connection changed before its replicas acknowledged the write')
    if (acknowledged < this.#replicas) {
      throw new Error(`${acknowledged} of ${this.#replicas} Redis replicas acknowledged the write within ${this.#timeoutMs} ms`)
    }
  }

  /** The connection that just ran a command on `key`. */
  connectionFor (key: string): Redis {
    const client = this.#client
    if (!(client instanceof Cluster)) return client
    // ioredis' own slot function, on the key as the client sends it (its prefix included).
    const slot = new Command('exists', [key], { keyPrefix: client.options.keyPrefix }).getSlot()
    // ioredis keeps this map current: a MOVED reply rewrites the slot's owner before the retry.
    const owner = client.slots[slot]?.[0]
    const node = owner === undefined ? undefined : client.nodes('master').find(n => `${n.options.host}:${n.options.port}` === owner)
    if (node === undefined) throw new Error(`no connection to the Redis Cluster node that owns slot ${slot}`)
    return node
  }
}
