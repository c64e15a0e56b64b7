/**
 * The streams a CLI subcommand talks through. Injected (rather than reaching for
 * `process.stdin/stdout/stderr`) so subcommands are tested without spawning a process.
 */
export interface CliIo {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean }
  stdout: NodeJS.WritableStream
  stderr: NodeJS.WritableStream
}
