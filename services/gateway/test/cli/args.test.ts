/**
 * The subcommands' argument parsing: a value starting with '-' (a base64url session id, 1 in
 * 64 of them) is the value of the option before it; a forgotten value is still refused.
 */
import t from 'tap'
import { parseCommandArgs } from '#gateway/cli/args.js'

const OPTIONS = { user: { type: 'string' }, session: { type: 'string' }, out: { type: 'string', short: 'o' }, json: { type: 'boolean' } } as const

t.test('a value that starts with a dash belongs to its option', async (t) => {
  const { values, positionals } = parseCommandArgs(['revoke', '--user', 'alice', '--session', '-ftMnVPT7YdVYFwPMD9fwR'], OPTIONS)
  t.same(positionals, ['revoke'])
  t.equal(values.session, '-ftMnVPT7YdVYFwPMD9fwR')
  t.equal(values.user, 'alice')
  t.equal(parseCommandArgs(['-o', '-file'], OPTIONS).values.out, '-file', 'short options too')
  t.equal(parseCommandArgs(['--session=-abc'], OPTIONS).values.session, '-abc', 'the = form as before')
  t.same(parseCommandArgs(['list', '--', '--session', '-x'], OPTIONS).positionals, ['list', '--session', '-x'], 'nothing after --')
})

t.test('a forgotten value is still refused, and unknown options too', async (t) => {
  t.throws(() => parseCommandArgs(['--session', '--json'], OPTIONS), /ambiguous/, 'an option is not a value')
  t.throws(() => parseCommandArgs(['--session', '--user=x'], OPTIONS), /ambiguous/)
  t.throws(() => parseCommandArgs(['--session'], OPTIONS), /argument missing/)
  t.throws(() => parseCommandArgs(['--nope'], OPTIONS), /Unknown option/)
})
