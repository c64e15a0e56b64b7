/** In-memory CliIo for driving the `users`/`clients` subcommands without a process. */
import { PassThrough } from 'node:stream'
import type { CliIo } from '#gateway/cli/io.js'

export interface FakeIo {
  io: CliIo
  stdin: PassThrough & { isTTY?: boolean, setRawMode?: (mode: boolean) => unknown }
  out: () => string
  err: () => string
}

function collect (stream: PassThrough): () => string {
  let text = ''
  stream.on('data', (chunk: Buffer) => { text += chunk.toString('utf8') })
  return () => text
}

/** stdin piped (not a TTY) holding `input`, ended. */
export function pipedIo (input: string): FakeIo {
  const stdin = new PassThrough()
  stdin.end(input)
  return build(stdin)
}

/** stdin as a terminal: isTTY, a recording setRawMode; the test writes keystrokes. */
export function ttyIo (): FakeIo & { rawModes: boolean[] } {
  const stdin: FakeIo['stdin'] = new PassThrough()
  const rawModes: boolean[] = []
  stdin.isTTY = true
  stdin.setRawMode = (mode: boolean) => { rawModes.push(mode); return stdin }
  return { ...build(stdin), rawModes }
}

function build (stdin: FakeIo['stdin']): FakeIo {
  const stdout = new PassThrough()
  const stderr = new PassThrough()
  return { io: { stdin, stdout, stderr }, stdin, out: collect(stdout), err: collect(stderr) }
}
