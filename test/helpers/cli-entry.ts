// bin/latchkey.js for tests: the same entry, from source, so tests never run a stale build.
import { main } from '#gateway/cli/main.js'

const code = await main(process.argv.slice(2), { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr }, process.env)
if (code >= 0) process.exitCode = code
