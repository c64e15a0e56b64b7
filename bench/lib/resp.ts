/**
 * Bulk writes to Redis as raw RESP over one socket: for copying a million sessions, a
 * client library's per-command bookkeeping costs more than Redis' own work. Only for
 * commands whose replies are one line (+OK, :n, -ERR): replies are counted, not parsed.
 */
import { connect, type Socket } from 'node:net'

/** Replies outstanding before `send` waits: bounds the memory of queued commands. */
const MAX_IN_FLIGHT = 200_000

export function command (...parts: Array<string | Buffer>): Buffer[] {
  const out: Buffer[] = [Buffer.from(`*${parts.length}\r\n`)]
  for (const part of parts) {
    const bytes = typeof part === 'string' ? Buffer.from(part) : part
    out.push(Buffer.from(`$${bytes.length}\r\n`), bytes, CRLF)
  }
  return out
}

const CRLF = Buffer.from('\r\n')

export class RawPipe {
  readonly #socket: Socket
  #pending = 0
  #atLineStart = true
  #error: Error | undefined
  #waiters: Array<() => void> = []

  private constructor (socket: Socket) {
    this.#socket = socket
    socket.on('data', (chunk: Buffer) => { this.#read(chunk) })
    socket.on('error', (err) => { this.#error = err; this.#wake() })
  }

  static async open (host: string, port: number): Promise<RawPipe> {
    const socket = connect(port, host)
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
    socket.setNoDelay(true)
    return new RawPipe(socket)
  }

  #read (chunk: Buffer): void {
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i] as number
      if (this.#atLineStart && byte === 0x2d /* - */ && this.#error === undefined) {
        const end = chunk.indexOf(0x0d, i)
        this.#error = new Error(`Redis: ${chunk.subarray(i + 1, end < 0 ? chunk.length : end).toString()}`)
      }
      this.#atLineStart = byte === 0x0a
      if (byte === 0x0a) this.#pending--
    }
    this.#wake()
  }

  #wake (): void {
    const waiters = this.#waiters
    this.#waiters = []
    for (const w of waiters) w()
  }

  async #until (done: () => boolean): Promise<void> {
    while (!done()) {
      if (this.#error !== undefined) throw this.#error
      await new Promise<void>(resolve => { this.#waiters.push(resolve) })
    }
    if (this.#error !== undefined) throw this.#error
  }

  /** Queue commands expecting `replies` one-line replies; waits while too many are outstanding. */
  async send (buffers: Buffer[], replies: number): Promise<void> {
    await this.#until(() => this.#pending < MAX_IN_FLIGHT)
    this.#pending += replies
    this.#socket.write(Buffer.concat(buffers))
  }

  /** Wait for every reply; throws the first error reply. */
  async flush (): Promise<void> {
    await this.#until(() => this.#pending === 0)
  }

  close (): void {
    this.#socket.destroy()
  }
}
